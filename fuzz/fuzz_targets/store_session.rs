//! A merged session (logged in) fed arbitrary bytes from NEW and OLD, chunk by
//! chunk, interleaved with fixed client commands (LIST, SELECT Old/INBOX, FETCH,
//! UID COPY, IDLE/DONE, STATUS, ...), so response rewriting, tagged statuses and
//! the cross-store copy see hostile store output. No panic, no runaway loop,
//! OLD never receives a write command. Input format: `store_session` in
//! `tests/fuzz_support.rs`, which the stable replay test also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| {
    fuzz_support::store_session(data);
});
