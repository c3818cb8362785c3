//! Fuzz target: see `weft_server::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft_server::fuzzing::log_file(data);
    weft_server::fuzzing::log_record(data);
});
