//! End-to-end tests of the `flags` binary (downloads, `flags bench` and `flags serve`) against
//! servers running in this process on loopback: the built-in `slow-server` (seeded where counts
//! depend on it) and the raw fault servers of `util`. One test binary, one module per topic.

mod bench;
mod cluster;
mod examples;
mod faults;
mod get;
mod interrupt;
mod memory;
mod modes;
mod reports;
mod serve;
mod usage;
mod util;
