#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| metamesh_fuzz::pattern_body(data));
