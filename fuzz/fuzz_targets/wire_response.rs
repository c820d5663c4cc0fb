#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| metamesh_fuzz::wire_response(data));
