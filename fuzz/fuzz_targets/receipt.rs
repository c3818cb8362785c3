//! Fuzz target: see `weft::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft::fuzzing::receipt_bytes(data);
});
