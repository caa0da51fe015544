//! Ctrl-C and SIGTERM: the first cancels the run (the engine stops scheduling, lets or makes
//! the downloads in flight end and prints the partial report: exit status 130 or 143), a
//! second exits at once, between two saves.
//!
//! On Unix both signals are blocked in every thread (this runs on the main thread before any
//! other starts, and threads inherit the mask) and taken by one thread with `sigwait`, which
//! knows which signal came: the `ctrlc` crate's handler does not say, and the exit status
//! depends on it. No signal handler runs, so no `unsafe` is needed. Child processes do not
//! inherit the mask: `std::process::Command` clears it in the child (the process pool's
//! workers and fork server are started that way).

use std::sync::Arc;

use flags_engine::{Cancel, Stop, exit_between_saves};

/// Routes Ctrl-C (SIGINT) and SIGTERM to `cancel` for the rest of the process's life.
///
/// # Errors
///
/// The signals could not be blocked or the thread could not start.
#[cfg(unix)]
pub(crate) fn install(cancel: &Arc<Cancel>) -> std::io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};

    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    let cancel = Arc::clone(cancel);
    std::thread::Builder::new()
        .name("flags-signals".into())
        .spawn(move || {
            loop {
                match signals.wait() {
                    Ok(Signal::SIGINT) => stop(&cancel, Stop::Interrupt),
                    Ok(Signal::SIGTERM) => stop(&cancel, Stop::Terminate),
                    _ => {}
                }
            }
        })?;
    Ok(())
}

/// Routes Ctrl-C to `cancel` (systems without SIGTERM).
///
/// # Errors
///
/// The handler could not be installed.
#[cfg(not(unix))]
pub(crate) fn install(cancel: &Arc<Cancel>) -> std::io::Result<()> {
    let cancel = Arc::clone(cancel);
    ctrlc::set_handler(move || stop(&cancel, Stop::Interrupt)).map_err(std::io::Error::other)
}

/// The first signal cancels the run; a second exits now.
fn stop(cancel: &Cancel, signal: Stop) {
    if cancel.is_cancelled() {
        // A second one does not wait for the requests in flight; it only waits for a file
        // being named, so no temporary file is left behind.
        diag!("*** Interrupted again: exiting now");
        exit_between_saves(signal.exit_status().into());
    }
    cancel.cancel(signal);
}
