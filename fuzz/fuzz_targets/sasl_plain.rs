//! SASL PLAIN: parsing arbitrary bytes never panics, and an accepted message
//! re-joins (`authzid NUL authcid NUL password`) to exactly the input.
//! The assertions live in `ferry::sasl::check_parse`, which the
//! stable-toolchain corpus replay test (`src/sasl.rs`) also runs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ferry::sasl::check_parse(data);
});
