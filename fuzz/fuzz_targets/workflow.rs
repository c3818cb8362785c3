//! Fuzz target: see `weft_server::fuzzing::workflow_text`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        weft_server::fuzzing::workflow_text(text);
    }
});
