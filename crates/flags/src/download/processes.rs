//! `--mode processes`: our `ProcessPoolExecutor` with one worker process per connection,
//! `submit` for every code in order, `as_completed` for the results, as `threads.rs` does with
//! threads. Worker processes are forks of `flags` started once more as the pool's fork
//! server (`main` calls `concurrent_futures::process_worker_main()` first).
//!
//! Each worker holds its own blocking client (one keep-alive connection), built once by the
//! pool's initializer from the run's [`Settings`], which cross to each worker once rather than
//! with every code. A task is only the code; its answer, [`Done`], carries what a [`Record`]
//! needs. `Instant`s do not cross processes, so a worker reports its start as a `SystemTime` and
//! its length as a monotonic `Duration`, and the parent places them on its own clock (`Anchor`).
//! Lanes are the workers' pids numbered in the order their first result arrives.
//!
//! Ctrl-C (which reaches only this process: workers run in process groups of their own) shuts
//! the pool down with `cancel_futures`: codes not handed to a worker are cancelled at once, and
//! the downloads workers have already taken finish (within `--timeout`) and are counted.
//! A second Ctrl-C exits this process at once; a worker then ends the download it runs and exits
//! (its pipe is closed), so it still leaves no partial file.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use concurrent_futures::{FutureError, ProcessPoolExecutor, SubmitError, as_completed};
use serde::{Deserialize, Serialize};

use super::{BlockingClient, Cancel, Record, Target, block_on, get_flag};
use crate::error::Error;
use crate::plan::NameBy;
use crate::report::Outcome;

/// What every download of a run needs, sent to each worker once (the pool's initializer).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settings {
    base_url: String,
    dest: PathBuf,
    name_by: NameBy,
    retries: u32,
    timeout: Duration,
}

/// A worker process's state: its client and the run's target.
#[derive(Debug)]
struct Worker {
    client: BlockingClient,
    target: Target,
}

/// Set by [`init`] in each worker process, before its first task.
static WORKER: OnceLock<Worker> = OnceLock::new();

/// One finished download, as a worker sends it back.
#[derive(Debug, Serialize, Deserialize)]
struct Done {
    /// The worker's process id, which the parent maps to a lane.
    pid: u32,
    /// When the download started, on the system clock.
    started: SystemTime,
    /// How long it took, on the worker's monotonic clock.
    took: Duration,
    attempts: u32,
    outcome: Outcome,
}

/// The pool's initializer: builds this worker's client (one connection: a worker runs one
/// download at a time).
fn init(settings: Settings) -> Result<(), Infallible> {
    // A worker never sees Ctrl-C: the parent decides what stops, so this token stays unset.
    let cancel = Cancel::new();
    let client = BlockingClient::new(settings.timeout, 1, Arc::clone(&cancel));
    let target = Target {
        base_url: settings.base_url,
        dest: settings.dest,
        name_by: settings.name_by,
        retries: settings.retries,
        timeout: settings.timeout,
        cancel,
    };
    // Runs once per worker process; a second call would find the same run's settings.
    let _ = WORKER.set(Worker { client, target });
    Ok(())
}

/// The task: downloads and saves the flag of `code` in this worker process.
fn fetch(code: String) -> Done {
    let pid = std::process::id();
    let Some(worker) = WORKER.get() else {
        return Done {
            pid,
            started: SystemTime::now(),
            took: Duration::ZERO,
            attempts: 0,
            outcome: Outcome::Error {
                message: "the worker process has no settings (initializer not run)".into(),
            },
        };
    };
    let record = block_on(get_flag(&worker.client, &worker.target, &code, 0));
    // The start on the system clock: now, less the monotonic time since the start.
    let (now, wall) = (Instant::now(), SystemTime::now());
    let since_start = now.saturating_duration_since(record.start);
    Done {
        pid,
        started: wall.checked_sub(since_start).unwrap_or(wall),
        took: record.end.saturating_duration_since(record.start),
        attempts: record.attempts,
        outcome: record.outcome,
    }
}

/// A moment read on both clocks in the parent: turns a worker's `SystemTime` into an `Instant`.
struct Anchor {
    instant: Instant,
    wall: SystemTime,
}

impl Anchor {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn instant(&self, wall: SystemTime) -> Instant {
        match wall.duration_since(self.wall) {
            Ok(after) => self.instant.checked_add(after),
            Err(before) => self.instant.checked_sub(before.duration()),
        }
        .unwrap_or(self.instant)
    }
}

/// Downloads `codes` on `workers` worker processes.
///
/// # Errors
///
/// Failing to build the pool, or the pool refusing a task when not shut down by Ctrl-C (a
/// broken pool: the workers could not start).
pub(super) fn run(
    codes: &[String],
    workers: usize,
    target: Arc<Target>,
    sink: &mut dyn FnMut(Record),
) -> Result<(), Error> {
    let settings = Settings {
        base_url: target.base_url.clone(),
        dest: target.dest.clone(),
        name_by: target.name_by,
        retries: target.retries,
        timeout: target.timeout,
    };
    let pool = ProcessPoolExecutor::builder()
        .max_workers(workers)
        .initializer(init, settings)
        .build()
        .map_err(Error::ProcessPool)?;
    let pool = Arc::new(pool);
    target.cancel.on_cancel({
        let pool = Arc::clone(&pool);
        move || pool.shutdown(false, true)
    });

    let anchor = Anchor::now();
    let mut handles = Vec::with_capacity(codes.len());
    for code in codes {
        match pool.submit(fetch, code.clone()) {
            Ok(handle) => handles.push((code, handle)),
            // Shut down by Ctrl-C: schedule nothing more.
            Err(SubmitError::ShutDown(_)) if target.cancel.is_cancelled() => break,
            Err(SubmitError::Broken(_, reason)) => return Err(Error::ProcessPoolBroken(reason)),
            Err(_) => return Err(Error::ProcessPoolRefused),
        }
    }

    let mut lanes: HashMap<u32, usize> = HashMap::with_capacity(workers);
    for done in as_completed(handles, None) {
        // Without a timeout, `as_completed` yields no errors.
        let Ok((code, handle)) = done else { continue };
        match handle.result() {
            Ok(done) => {
                let next = lanes.len();
                let lane = *lanes.entry(done.pid).or_insert(next);
                let start = anchor.instant(done.started);
                sink(Record {
                    code: code.clone(),
                    lane,
                    start,
                    end: start + done.took,
                    attempts: done.attempts,
                    outcome: done.outcome,
                });
            }
            Err(FutureError::Cancelled) => {}
            // A worker that died or panicked, or a broken pool: that code failed.
            Err(error) => sink(Record::failed_task(code, &error)),
        }
    }
    pool.shutdown(true, false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_places_wall_times_on_the_monotonic_clock() {
        let anchor = Anchor::now();
        let later = anchor.wall + Duration::from_millis(250);
        assert_eq!(
            anchor.instant(later) - anchor.instant,
            Duration::from_millis(250)
        );
        let earlier = anchor.wall - Duration::from_millis(40);
        assert_eq!(
            anchor.instant - anchor.instant(earlier),
            Duration::from_millis(40)
        );
    }

    #[test]
    fn fetch_without_settings_is_an_error_not_a_panic() {
        // Unit tests never run the initializer, so `WORKER` is unset here.
        let done = fetch("BR".into());
        assert_eq!(done.attempts, 0);
        assert!(matches!(done.outcome, Outcome::Error { .. }));
    }
}
