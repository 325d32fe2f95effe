//! Modified UTF-7: strict decoding must be canonical, i.e. byte-exact round trips.
//!
//! For arbitrary bytes `w`: if `decode(w)` is `Some(s)`, `encode(&s)` must be
//! exactly `w`. If `w` is UTF-8, `decode(encode(w))` must give `w` back.
//! The assertions live in `ferry::mutf7::check_round_trips`, which the
//! stable-toolchain corpus replay test (`src/mutf7.rs`) also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry::mutf7::check_round_trips(data);
});
