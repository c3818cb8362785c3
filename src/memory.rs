//! Process-wide memory policy: weft runs on small (4 KiB) pages, without transparent huge pages.
//!
//! mimalloc asks the kernel for transparent huge pages on its arenas. Whether a 2 MiB page is
//! cheap to fault in depends on the machine's state: on the 2-core virtual machines weft is
//! measured on, a huge page the kernel has to compact memory for, or the hypervisor has to back
//! anew, cost up to 2 ms per MiB (a C program touching 1 GiB: 0.04 to 2.1 ms/MiB with huge pages,
//! a steady 0.3 ms/MiB with small pages). A bulk load or a view's first build touches hundreds of
//! megabytes of fresh memory, so with huge pages identical benchmark runs differed by 2x.
//! Measured without them (`cargo bench --bench incremental` and `--bench wasm_calls`, runs
//! alternated): loads 0.85M rows/s in every run (0.49M to 0.81M with), memo hits 1.8 to 2.0M/s
//! (1.26 to 1.49M/s with) at 1M calls and 1.55M/s (1.03M/s) at 10M; uncached calls at 10M were
//! 0.43M/s without and 0.53M/s with, the one figure that preferred huge pages.

/// Turns transparent huge pages off for this process (Linux; elsewhere nothing happens).
/// Call it first thing in `main`: it applies to memory already mapped too.
pub fn use_small_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
