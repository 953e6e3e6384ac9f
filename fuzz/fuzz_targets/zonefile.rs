#![no_main]
//! `cargo fuzz run zonefile`: see fuzz/README.md; the check is `fedns::fuzz::zonefile_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| fedns::fuzz::zonefile_check(data));
