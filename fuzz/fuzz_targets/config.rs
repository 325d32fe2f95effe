//! Configuration parsing: arbitrary UTF-8 must yield `Ok` or `Err`, never a panic.
//! The body (`config_text` in `tests/fuzz_support.rs`) is shared with the
//! stable replay test `tests/fuzz_replay.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| {
    fuzz_support::config_text(data);
});
