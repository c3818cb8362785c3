//! Fuzz target: see `weft_server::fuzzing::pg_messages`. A panic inside pgwire's decoder is contained
//! by the server to the client's connection (and by the harness), so it is not a finding here:
//! libfuzzer-sys's hook would abort on it before the harness could catch it, so this target's
//! hook stays quiet for panics raised in pgwire or `bytes` and aborts (as libfuzzer-sys does)
//! on any other.
#![no_main]

static QUIET_HOOK: std::sync::Once = std::sync::Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    QUIET_HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let file = info.location().map(|location| location.file()).unwrap_or_default();
            if !(file.contains("/pgwire-") || file.contains("/bytes-")) {
                eprintln!("{info}");
                std::process::abort();
            }
        }));
    });
    weft_server::fuzzing::pg_messages(data);
});
