#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kt_fuzz::absence_response(data));
