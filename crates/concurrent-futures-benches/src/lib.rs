//! Nothing here: the benchmarks are in `benches/`, their figures in
//! `crates/concurrent-futures/BENCHMARKS.md`.
