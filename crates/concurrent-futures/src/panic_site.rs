//! Where tasks panic: a panic hook that notes each panic's location in a thread-local,
//! for [`PanicError::new`](crate::PanicError) to pick up after `catch_unwind`.
//!
//! `catch_unwind` hands back only the payload; the location exists only while the panic
//! hook runs, on the panicking thread, just before unwinding starts. So the hook keeps the
//! last panic's location (and message) per thread, and the code that caught the panic
//! takes it. Two things keep a stale location off an unrelated panic:
//! - the thread pool calls [`forget`] before each task, so a panic that some earlier code
//!   on the worker caught itself is not blamed on the next task;
//! - [`take`] hands the location over only when the recorded message is the caught
//!   payload's message: a payload re-raised with `resume_unwind` runs no hook, and must
//!   not get the location of whatever panicked before it.
//!
//! The hook is installed once, when the first pool is built or a process starts serving
//! as a process-pool worker (not at crate load: a program that never builds a pool keeps
//! std's hook untouched), and it calls the hook it replaced, so panic messages are
//! printed as before.

use std::cell::Cell;
use std::panic::{self, PanicHookInfo};
use std::sync::Once;

use crate::error::PanicLocation;

/// The last panic seen on a thread.
struct Record {
    location: PanicLocation,
    /// The payload when it was a string (`PanicHookInfo::payload_as_str`).
    message: Option<String>,
}

thread_local! {
    /// Filled by the hook on each panic; emptied by [`take`] and [`forget`].
    static LAST: Cell<Option<Record>> = const { Cell::new(None) };
}

static INSTALL: Once = Once::new();

/// Installs the hook, once per process.
pub(crate) fn install() {
    // `take_hook`/`set_hook` panic on a panicking thread (a pool built in a `Drop` during
    // unwinding): skip, and let a later build install it.
    if std::thread::panicking() {
        return;
    }
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            record(info);
            previous(info);
        }));
    });
}

fn record(info: &PanicHookInfo<'_>) {
    let Some(at) = info.location() else {
        return;
    };
    let record = Record {
        location: PanicLocation::from(at),
        message: info.payload_as_str().map(str::to_owned),
    };
    // `try_with`: a panic in a thread-local's destructor may come after `LAST` is gone.
    let _ = LAST.try_with(|last| last.set(Some(record)));
}

/// Drops this thread's record, before running code whose panics we will report.
pub(crate) fn forget() {
    let _ = LAST.try_with(|last| last.set(None));
}

/// The location of the panic just caught on this thread, whose payload's string is
/// `message` (`None` for a payload that is not a string). Empties the record.
pub(crate) fn take(message: Option<&str>) -> Option<PanicLocation> {
    let record = LAST.try_with(Cell::take).ok().flatten()?;
    (record.message.as_deref() == message).then_some(record.location)
}
