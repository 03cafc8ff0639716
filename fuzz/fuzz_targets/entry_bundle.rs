#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kt_fuzz::entry_bundle(data));
