//! End-to-end tests of the `flags` binary (downloads and `flags bench`) against servers running in this process on
//! loopback: the built-in `slow-server` (seeded where counts depend on it) and the raw fault
//! servers of `util`.

mod bench;
mod faults;
mod interrupt;
mod modes;
mod reports;
mod usage;
mod util;
