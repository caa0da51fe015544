//! Panics on the pools' own threads: what must never unwind out of them.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::panic_message;

/// Runs `f`, user code that a pool's own thread runs outside a task (a cancelled task's
/// `Drop`, a result's `Drop` or `Deserialize`), and keeps a panic in it from killing that
/// thread: a dead worker thread or process-pool reader would leave the tasks it owns
/// pending for ever. The panic is reported on stderr, as Python reports an exception in
/// a done-callback, and the thread goes on. Done-callbacks are contained where they run.
pub(crate) fn contain(what: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        eprintln!(
            "concurrent_futures: a panic while {what}, on a pool thread: {}",
            panic_message(&*payload)
        );
    }
}
