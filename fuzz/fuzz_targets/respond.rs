#![no_main]
//! `cargo fuzz run respond`: see fuzz/README.md; the check is `fedns::fuzz::respond_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedns::fuzz::respond_check(data));
