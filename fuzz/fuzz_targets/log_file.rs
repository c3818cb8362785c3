//! Fuzz target: see `weft::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft::fuzzing::log_file(data);
    weft::fuzzing::log_record(data);
});
