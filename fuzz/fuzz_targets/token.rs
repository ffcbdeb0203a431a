#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxserve::fuzzing::token(data));
