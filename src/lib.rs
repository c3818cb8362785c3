//! The `weft` command line's process policy, shared with the benchmarks: the memory policy
//! ([`memory`]). The database is `weft-core`, the servers `weft-server`.

pub mod memory;
