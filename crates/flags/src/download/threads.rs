//! `--mode threads`: our `ThreadPoolExecutor` with one worker per connection, `submit` for every
//! code in order, `as_completed` for the results. Each worker thread has a blocking client of its
//! own (one keep-alive connection; the DNS answers are shared): with one agent shared by every
//! thread, the threads contended on its connection pool's lock.
//!
//! Ctrl-C shuts the pool down with `cancel_futures`: codes not started are cancelled at once,
//! downloads in flight finish (within `--timeout`), and `as_completed` ends when they have.

use std::cell::{Cell, OnceCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use concurrent_futures::{FutureError, FutureHandle, ThreadPoolExecutor, as_completed};

use super::{BlockingClient, Record, Target, block_on, get_flag};
use crate::error::Error;

thread_local! {
    /// This worker thread's lane in the run's records (the pool's threads serve one run).
    static LANE: Cell<Option<usize>> = const { Cell::new(None) };
    /// This worker thread's client (the pool's threads serve one run and end with it).
    static CLIENT: OnceCell<BlockingClient> = const { OnceCell::new() };
}

/// The calling worker's lane, numbered from 0 in the order workers first run a download.
fn lane(next: &AtomicUsize) -> usize {
    LANE.with(|lane| {
        *lane.get().get_or_insert_with(|| {
            let id = next.fetch_add(1, Ordering::Relaxed);
            lane.set(Some(id));
            id
        })
    })
}

/// Downloads `codes` on `workers` threads, each with a sibling of `client`.
///
/// # Errors
///
/// Failing to start the pool, or the pool refusing a task when not shut down by Ctrl-C.
pub(super) fn run(
    codes: &[String],
    workers: usize,
    client: Arc<BlockingClient>,
    target: Arc<Target>,
    sink: &mut dyn FnMut(Record),
) -> Result<(), Error> {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(workers)
        .thread_name_prefix("flags")
        .build()
        .map_err(Error::ThreadPool)?;
    let pool = Arc::new(pool);
    target.cancel.on_cancel({
        let pool = Arc::clone(&pool);
        move || pool.shutdown(false, true)
    });

    let lanes = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::with_capacity(codes.len());
    for code in codes {
        let (client, task_target, lanes, task_code) = (
            Arc::clone(&client),
            Arc::clone(&target),
            Arc::clone(&lanes),
            code.clone(),
        );
        // A task that a worker took before the pool was shut down still starts no download.
        let task = move || {
            let target = task_target;
            let cancelled = target.cancel.is_cancelled();
            (!cancelled).then(|| {
                CLIENT.with(|own| {
                    let own = own.get_or_init(|| client.sibling());
                    block_on(get_flag(own, &target, &task_code, lane(&lanes)))
                })
            })
        };
        match pool.submit(task) {
            Ok(handle) => handles.push((code.as_str(), handle)),
            // Shut down by Ctrl-C: schedule nothing more.
            Err(_) if target.cancel.is_cancelled() => break,
            Err(_) => return Err(Error::ThreadPoolRefused),
        }
    }

    collect(handles, sink);
    // Every task has finished, so the workers need not be joined: they close their connections
    // and exit on their own while the report is printed, and the process's exit does not wait
    // for them.
    pool.shutdown(false, false);
    Ok(())
}

/// Hands each task's record to `sink` in completion order. A task that failed (a panic in the
/// download path is a bug) is counted as an error of its own code rather than lost.
fn collect(handles: Vec<(&str, FutureHandle<Option<Record>>)>, sink: &mut dyn FnMut(Record)) {
    for done in as_completed(handles, None) {
        // Without a timeout, `as_completed` yields no errors.
        let Ok((code, handle)) = done else { continue };
        match handle.result() {
            Ok(Some(record)) => sink(record),
            Ok(None) | Err(FutureError::Cancelled) => {}
            Err(error) => sink(Record::failed_task(code, &error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::report::Outcome;

    /// Issue 14: a task that panicked was recorded under the code `"??"`.
    #[test]
    fn issue_14_a_failed_task_keeps_its_code() -> Result<(), Box<dyn std::error::Error>> {
        let pool = ThreadPoolExecutor::builder().max_workers(2).build()?;
        let saved = pool.submit(|| {
            let now = Instant::now();
            Some(Record {
                code: "CN".into(),
                lane: 0,
                start: now,
                end: now,
                attempts: 1,
                outcome: Outcome::Ok,
            })
        })?;
        let failed = pool.submit(|| -> Option<Record> { panic!("a bug in the download path") })?;
        let mut records = Vec::new();
        collect(vec![("CN", saved), ("BR", failed)], &mut |r| {
            records.push(r)
        });
        records.sort_by(|a, b| a.code.cmp(&b.code));
        let codes: Vec<&str> = records.iter().map(|r| r.code.as_str()).collect();
        assert_eq!(codes, ["BR", "CN"]);
        assert!(
            matches!(&records[0].outcome, Outcome::Error { message }
                if message.starts_with("download task failed") && message.contains("a bug")),
            "{:?}",
            records[0].outcome
        );
        assert_eq!(records[1].outcome, Outcome::Ok);
        Ok(())
    }
}
