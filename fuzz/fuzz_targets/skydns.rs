#![no_main]
//! `cargo fuzz run skydns`: see fuzz/README.md; the check is `fedns::fuzz::skydns_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedns::fuzz::skydns_check(data));
