#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| capgate::fuzzing::policy_file(data));
