//! Mailbox-name mapping: client -> store -> client and store -> client -> store
//! give the name back whenever both directions succeed (never a mis-mapping),
//! for prefixes and delimiters the configuration accepts and several store
//! layouts; `namespace::matches` agrees with an independent matcher and never
//! panics. Input format: `namespace` in `tests/fuzz_support.rs`, which the
//! stable replay test also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| {
    fuzz_support::namespace(data);
});
