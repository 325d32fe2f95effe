//! The sans-IO session fed arbitrary client bytes, in chunks the input chooses,
//! with scripted stores that log in and answer every command with a tagged OK.
//! No panic; every line Ferry writes to the client is CRLF-terminated with no
//! CR, LF or NUL inside; OLD never receives a write command in the merged
//! phase. Input format and checks: `client_session` in `tests/fuzz_support.rs`,
//! which the stable replay test (`tests/fuzz_replay.rs`) also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| {
    fuzz_support::client_session(data);
});
