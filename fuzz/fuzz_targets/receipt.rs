//! Fuzz target: see `weft_server::fuzzing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weft_server::fuzzing::receipt_bytes(data);
});
