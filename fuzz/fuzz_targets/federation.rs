#![no_main]
//! `cargo fuzz run federation`: see fuzz/README.md; the check is `fedns::fuzz::federation_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedns::fuzz::federation_check(data));
