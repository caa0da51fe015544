//! `--mode cluster`: the downloads go to `flags worker` processes, on this host or others,
//! through a Redis broker (`concurrent-futures-redis`): `submit` for every code, `as_completed`
//! for the results, as the threads and processes modes do with their pools.
//!
//! A task is [`DOWNLOAD`]: the code and what every download of the run needs (the server,
//! `--dest`, naming, retries, timeout), so any worker can take any code. A worker saves
//! into the `--dest` the client names (a path the worker's host can reach: shared storage,
//! or the same directory on one host) unless it was started with a `--dest` of its own.
//! Downloads are I/O-bound: a worker runs them on its threads, one blocking client each.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use concurrent_futures::{FutureError, as_completed};
use concurrent_futures_redis::{ClusterExecutor, SubmitError, Task, Worker};
use serde::{Deserialize, Serialize};

use super::processes::Anchor;
use super::{BlockingClient, Cancel, Record, Target, block_on, get_flag};
use crate::error::Error;
use crate::plan::{Cluster, NameBy};
use crate::report::Outcome;

/// The task every worker registers and every client submits. The name carries a version:
/// a worker of another build refuses a task whose types differ (the fingerprint) anyway.
pub(crate) const DOWNLOAD: Task<Job, Done> = Task::new("flags/download-1", download);

/// One code to download, with the run's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Job {
    code: String,
    base_url: String,
    dest: PathBuf,
    name_by: NameBy,
    retries: u32,
    timeout: Duration,
    run_start: Option<SystemTime>,
}

/// One finished download, as a worker sends it back.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Done {
    /// Which worker thread ran it (`host:pid:thread`), mapped to a lane by the client.
    runner: String,
    started: SystemTime,
    took: Duration,
    attempts: u32,
    outcome: Outcome,
}

/// The `--dest` a worker was started with, which overrides the client's.
static WORKER_DEST: OnceLock<PathBuf> = OnceLock::new();

thread_local! {
    /// This worker thread's client (one keep-alive connection), for the timeout it was
    /// built with.
    static CLIENT: RefCell<Option<(Duration, BlockingClient)>> = const { RefCell::new(None) };
}

/// The task, on a worker's thread.
fn download(job: Job) -> Done {
    let cancel = Cancel::new();
    let target = Target {
        base_url: job.base_url,
        dest: WORKER_DEST.get().cloned().unwrap_or(job.dest),
        name_by: job.name_by,
        retries: job.retries,
        timeout: job.timeout,
        cancel: Arc::clone(&cancel),
        run_start: job.run_start,
    };
    let record = CLIENT.with_borrow_mut(|slot| {
        if slot
            .as_ref()
            .is_none_or(|(timeout, _)| *timeout != job.timeout)
        {
            *slot = Some((job.timeout, BlockingClient::new(job.timeout, 1, cancel)));
        }
        let (_, client) = slot.as_ref().expect("set just above");
        block_on(get_flag(client, &target, &job.code, 0))
    });
    let (now, wall) = (Instant::now(), SystemTime::now());
    let since_start = now.saturating_duration_since(record.start);
    Done {
        runner: format!("{}:{:?}", std::process::id(), std::thread::current().id()),
        started: wall.checked_sub(since_start).unwrap_or(wall),
        took: record.end.saturating_duration_since(record.start),
        attempts: record.attempts,
        outcome: record.outcome,
    }
}

/// Downloads `codes` through the cluster's broker.
///
/// # Errors
///
/// The broker cannot be reached (or its URL is not a broker's), or the executor broke.
pub(super) fn run(
    codes: &[String],
    window: usize,
    cluster: &Cluster,
    target: Arc<Target>,
    sink: &mut dyn FnMut(Record),
) -> Result<(), Error> {
    let executor = ClusterExecutor::builder()
        .broker(cluster.broker.clone())
        .queue(cluster.queue.clone())
        .window(window.max(1))
        .build()
        .map_err(Error::Cluster)?;
    let executor = Arc::new(executor);
    target.cancel.on_cancel({
        let executor = Arc::clone(&executor);
        move || executor.shutdown(false, true)
    });
    let anchor = Anchor::now();
    let mut handles = Vec::with_capacity(codes.len());
    for code in codes {
        let job = Job {
            code: code.clone(),
            base_url: target.base_url.clone(),
            dest: target.dest.clone(),
            name_by: target.name_by,
            retries: target.retries,
            timeout: target.timeout,
            run_start: target.run_start,
        };
        match executor.submit(DOWNLOAD, job) {
            Ok(handle) => handles.push((code, handle)),
            Err(SubmitError::ShutDown(_)) if target.cancel.is_cancelled() => break,
            Err(SubmitError::Broken(_, reason)) => {
                return Err(Error::ClusterBroken(reason.to_string()));
            }
            Err(other) => return Err(Error::ClusterBroken(other.to_string())),
        }
    }
    let mut lanes = std::collections::HashMap::new();
    for done in as_completed(handles, None) {
        let Ok((code, handle)) = done else { continue };
        match handle.result() {
            Ok(done) => {
                let next = lanes.len();
                let lane = *lanes.entry(done.runner).or_insert(next);
                let timing = (done.started, done.took);
                sink(anchor.record(code, lane, timing, done.attempts, done.outcome));
            }
            Err(FutureError::Cancelled) => {}
            Err(error) => sink(Record::failed_task(code, &error)),
        }
    }
    executor.shutdown(true, false);
    Ok(())
}

/// What `flags worker` is asked to do.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// The broker's URL: `redis://host:port/db` or `redis+unix:///path`.
    pub broker: String,
    /// The queue (key prefix) shared with the clients.
    pub queue: String,
    /// How many downloads run at once on this worker.
    pub threads: usize,
    /// Where to save, instead of the `--dest` each client names.
    pub dest: Option<PathBuf>,
}

/// Serves downloads from the broker until `stop` is set (Ctrl-C, SIGTERM) or the broker
/// stays away past the worker's reconnect budget.
///
/// # Errors
///
/// The broker cannot be reached or refuses the worker, or the worker stopped on an error.
pub fn serve_worker(plan: &WorkerPlan, stop: &Arc<Cancel>) -> Result<(), Error> {
    if let Some(dest) = &plan.dest {
        let _ = WORKER_DEST.set(dest.clone());
    }
    let worker = Worker::builder()
        .broker(plan.broker.clone())
        .queue(plan.queue.clone())
        .threads(plan.threads.max(1))
        .register_io(DOWNLOAD)
        .build()
        .map_err(Error::Cluster)?;
    let handle = worker.stop_handle();
    stop.on_cancel(move || handle.stop());
    worker
        .run()
        .map_err(|e| Error::ClusterBroken(e.to_string()))
}
