#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxserve::fuzzing::text_request(data));
