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
//! Ctrl-C or SIGTERM (which reach only this process: workers run in process groups of their
//! own) calls the pool's `terminate_workers`: codes not handed to a worker are cancelled at
//! once, and every worker gets SIGTERM, which it takes as its own Ctrl-C (see [`watch`]): a
//! retry backoff ends at once, no new request starts, and the download in flight finishes
//! (within `--timeout`) and is counted, as in the threads mode. A second one exits this
//! process; each worker then gets its parent-death signal and exits at once, in a request or
//! not, naming no file after it noticed (an unnamed file vanishes with it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use concurrent_futures::{FutureError, ProcessPoolExecutor, SubmitError, as_completed};
use serde::{Deserialize, Serialize};

use super::{
    BlockingClient, Cancel, Record, Target, UrlOptions, UrlOutcome, block_on, get_flag, get_url,
    save,
};
use crate::error::Error;
use crate::plan::NameBy;
use crate::progress::Progress;
use crate::report::Outcome;

/// What every download of a run needs, sent to each worker once (the pool's initializer).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settings {
    base_url: String,
    dest: PathBuf,
    name_by: NameBy,
    retries: u32,
    timeout: Duration,
    run_start: Option<SystemTime>,
    /// The pid of this `flags` process: a worker whose parent is no longer this one stops.
    parent: u32,
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

/// The pool's initializer: watches for the parent's SIGTERM and death ([`watch`]) and builds
/// this worker's client (one connection: a worker runs one download at a time).
///
/// # Errors
///
/// The watch could not be set up: the worker would outlive its parent, so the pool must not
/// run.
fn init(settings: Settings) -> Result<(), String> {
    // Cancelled by the parent's SIGTERM (its Ctrl-C), never by the terminal's Ctrl-C.
    let cancel = Cancel::new();
    save::save_only_for(settings.parent);
    #[cfg(target_os = "linux")]
    watch::start(settings.parent, Arc::clone(&cancel))?;
    let client = BlockingClient::new(settings.timeout, 1, Arc::clone(&cancel));
    let target = Target {
        base_url: settings.base_url,
        dest: settings.dest,
        name_by: settings.name_by,
        retries: settings.retries,
        timeout: settings.timeout,
        cancel,
        run_start: settings.run_start,
    };
    // Runs once per worker process; a second call would find the same run's settings.
    let _ = WORKER.set(Worker { client, target });
    Ok(())
}

/// The task: downloads and saves the flag of `code` in this worker process; `None` when the
/// run was cancelled before it started (a task already in the worker's pipe).
fn fetch(code: String) -> Option<Done> {
    let pid = std::process::id();
    let Some(worker) = WORKER.get() else {
        return Some(Done {
            pid,
            started: SystemTime::now(),
            took: Duration::ZERO,
            attempts: 0,
            outcome: Outcome::Error {
                message: "the worker process has no settings (initializer not run)".into(),
            },
        });
    };
    if worker.target.cancel.is_cancelled() {
        return None;
    }
    let record = block_on(get_flag(&worker.client, &worker.target, &code, 0));
    // The start on the system clock: now, less the monotonic time since the start.
    let (now, wall) = (Instant::now(), SystemTime::now());
    let since_start = now.saturating_duration_since(record.start);
    Some(Done {
        pid,
        started: wall.checked_sub(since_start).unwrap_or(wall),
        took: record.end.saturating_duration_since(record.start),
        attempts: record.attempts,
        outcome: record.outcome,
    })
}

/// What `flags get`'s worker processes need, sent to each once.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GetSettings {
    dest: PathBuf,
    timeout: Duration,
    run_start: Option<SystemTime>,
    parent: u32,
    options: UrlOptions,
}

/// `flags get`'s options in a worker process, set by [`init_get`].
static GET_OPTIONS: OnceLock<UrlOptions> = OnceLock::new();

/// `flags get`'s initializer: the flags initializer's watch and client, and the options.
fn init_get(settings: GetSettings) -> Result<(), String> {
    let _ = GET_OPTIONS.set(settings.options);
    init(Settings {
        base_url: String::new(),
        dest: settings.dest,
        name_by: NameBy::Code,
        retries: 0,
        timeout: settings.timeout,
        run_start: settings.run_start,
        parent: settings.parent,
    })
}

/// `flags get`'s task: downloads `url` into `name` (journal key `key`) in this worker
/// process; `None` when the run was cancelled before it started. With the worker's pid.
fn fetch_url((url, name, key): (String, String, u64)) -> (u32, Option<UrlOutcome>) {
    let pid = std::process::id();
    let (Some(worker), Some(options)) = (WORKER.get(), GET_OPTIONS.get()) else {
        let message = "the worker process has no settings (initializer not run)";
        return (pid, Some(UrlOutcome::Error(message.into())));
    };
    if worker.target.cancel.is_cancelled() {
        return (pid, None);
    }
    let outcome = block_on(get_url(
        &worker.client,
        &worker.target,
        &url,
        &name,
        key,
        *options,
    ));
    (pid, Some(outcome))
}

/// `flags get --mode processes`: a pool of `workers` worker processes, each with its own
/// client; Ctrl-C terminates the workers as in `flags --mode processes`.
#[derive(Debug, Clone)]
pub(crate) struct UrlPool {
    pool: Arc<ProcessPoolExecutor>,
}

impl UrlPool {
    /// Starts the pool for a run into `target.dest`.
    ///
    /// # Errors
    ///
    /// The pool cannot start.
    pub(crate) fn new(workers: usize, target: &Target, options: UrlOptions) -> Result<Self, Error> {
        let settings = GetSettings {
            dest: target.dest.clone(),
            timeout: target.timeout,
            run_start: target.run_start,
            parent: std::process::id(),
            options,
        };
        let pool = ProcessPoolExecutor::builder()
            .max_workers(workers)
            .initializer(init_get, settings)
            .build()
            .map_err(Error::ProcessPool)?;
        let pool = Arc::new(pool);
        target.cancel.on_cancel({
            let pool = Arc::clone(&pool);
            move || pool.terminate_workers()
        });
        Ok(Self { pool })
    }

    /// Downloads `url` into `name` in a worker; `done` gets the worker's pid and the outcome
    /// (`None`: cancelled before it started), on a thread of the pool.
    ///
    /// # Errors
    ///
    /// The pool is broken or refuses the task.
    pub(crate) fn submit(
        &self,
        url: String,
        name: String,
        key: u64,
        done: impl FnOnce(u32, Option<UrlOutcome>) + Send + 'static,
    ) -> Result<(), Error> {
        let handle = match self.pool.submit(fetch_url, (url, name, key)) {
            Ok(handle) => handle,
            Err(SubmitError::Broken(_, reason)) => return Err(Error::ProcessPoolBroken(reason)),
            Err(_) => return Err(Error::ProcessPoolRefused),
        };
        handle.add_done_callback(move |handle| match handle.result_cloned() {
            Ok((pid, outcome)) => done(pid, outcome),
            Err(FutureError::Cancelled) => done(0, None),
            Err(error) => done(
                0,
                Some(UrlOutcome::Error(format!("download task failed: {error}"))),
            ),
        });
        Ok(())
    }

    /// Waits for the workers to exit.
    pub(crate) fn shutdown(&self) {
        self.pool.shutdown(true, false);
    }
}

/// A worker's watch: SIGTERM from the pool (the parent's Ctrl-C) and the death of the parent.
///
/// Both signals are blocked in every thread of the worker (the initializer runs on its only
/// thread, before any other starts) and taken by one thread with `sigwait`, so no handler
/// (and no `unsafe`) is needed:
/// - SIGTERM, sent by `terminate_workers`, cancels the worker's token, as Ctrl-C does in the
///   other modes: a backoff ends at once and no request starts, the one in flight finishes;
/// - SIGHUP is the parent-death signal (`PR_SET_PDEATHSIG`). The kernel sends it when the
///   *thread* that started the worker ends, which is not always the end of the process (with
///   `StartMethod::Spawn` a pool thread starts replacements), so the watch acts only if the
///   parent pid changed: then `flags` is gone, and the worker exits at once, in a request or
///   not, once no file is being named.
#[cfg(target_os = "linux")]
mod watch {
    use std::os::unix::process::parent_id;
    use std::sync::Arc;

    use nix::sys::signal::{SigSet, Signal};

    use super::Cancel;
    use super::save::exit_between_saves;
    use crate::report::Stop;

    /// Exit status of a worker whose parent died: as if the hangup had killed it.
    const EXIT_ORPHANED: i32 = 128 + Signal::SIGHUP as i32;

    /// Starts the watch for the worker of the `flags` process `parent`, which cancels
    /// `cancel` on SIGTERM.
    ///
    /// # Errors
    ///
    /// Blocking the signals, setting the parent-death signal or starting the thread failed.
    pub(super) fn start(parent: u32, cancel: Arc<Cancel>) -> Result<(), String> {
        let mut signals = SigSet::empty();
        signals.add(Signal::SIGTERM);
        signals.add(Signal::SIGHUP);
        signals
            .thread_block()
            .map_err(|e| format!("cannot block SIGTERM and SIGHUP: {e}"))?;
        nix::sys::prctl::set_pdeathsig(Signal::SIGHUP)
            .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
        // The parent may have died before the signal was asked for.
        if parent_id() != parent {
            exit_between_saves(EXIT_ORPHANED);
        }
        std::thread::Builder::new()
            .name("flags-watch".into())
            .spawn(move || {
                loop {
                    match signals.wait() {
                        Ok(Signal::SIGTERM) => cancel.cancel(Stop::Terminate),
                        Ok(Signal::SIGHUP) if parent_id() != parent => {
                            exit_between_saves(EXIT_ORPHANED)
                        }
                        _ => {}
                    }
                }
            })
            .map(drop)
            .map_err(|e| format!("cannot start the watch thread: {e}"))
    }
}

/// A moment read on both clocks in the parent: turns a worker's `SystemTime` into an `Instant`.
pub(super) struct Anchor {
    instant: Instant,
    wall: SystemTime,
}

impl Anchor {
    pub(super) fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// The record of a download another process ran: started at `started` on its system
    /// clock and `took` long on its monotonic one, placed on this process's clock.
    pub(super) fn record(
        &self,
        code: &str,
        lane: usize,
        (started, took): (SystemTime, Duration),
        attempts: u32,
        outcome: Outcome,
    ) -> Record {
        let start = self.instant(started);
        Record {
            code: code.to_owned(),
            lane,
            start,
            end: start + took,
            attempts,
            outcome,
        }
    }

    pub(super) fn instant(&self, wall: SystemTime) -> Instant {
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
    progress: &Progress,
    sink: &mut dyn FnMut(Record),
) -> Result<(), Error> {
    let settings = Settings {
        base_url: target.base_url.clone(),
        dest: target.dest.clone(),
        name_by: target.name_by,
        retries: target.retries,
        timeout: target.timeout,
        run_start: target.run_start,
        parent: std::process::id(),
    };
    let pool = ProcessPoolExecutor::builder()
        .max_workers(workers)
        .initializer(init, settings)
        .build()
        .map_err(Error::ProcessPool)?;
    let _watch = progress.watch_pool({
        let pool = pool.clone();
        move || pool.stats()
    });
    let pool = Arc::new(pool);
    // Cancels what no worker has taken, and tells every worker (see `watch`).
    target.cancel.on_cancel({
        let pool = Arc::clone(&pool);
        move || pool.terminate_workers()
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
            Ok(None) => {}
            Ok(Some(done)) => {
                let next = lanes.len();
                let lane = *lanes.entry(done.pid).or_insert(next);
                let timing = (done.started, done.took);
                sink(anchor.record(code, lane, timing, done.attempts, done.outcome));
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
        assert!(
            matches!(&done, Some(done) if done.attempts == 0 && matches!(done.outcome, Outcome::Error { .. })),
            "{done:?}"
        );
    }
}
