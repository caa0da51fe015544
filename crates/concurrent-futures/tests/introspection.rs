//! Stats, results by reference, async `as_completed` and cancel-on-drop awaits (issue 13,
//! points 6, 7 and 8).

use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use concurrent_futures::{FutureError, FutureHandle, ThreadPoolExecutor, as_completed_stream};
use futures_util::StreamExt;

const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn issue_13_stats_count_queued_running_and_finished_tasks() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    assert_eq!(pool.stats().done(), 0);
    let gate = Arc::new(Barrier::new(3));
    let running: Vec<_> = (0..2)
        .map(|_| {
            let gate = Arc::clone(&gate);
            pool.submit(move || {
                gate.wait();
                gate.wait();
            })
            .unwrap()
        })
        .collect();
    gate.wait(); // both run now
    let queued: Vec<_> = (0..3).map(|i| pool.submit(move || i).unwrap()).collect();
    let panicking = pool.submit(|| panic!("counted as failed")).unwrap();
    let stats = pool.stats();
    assert_eq!(
        (stats.running, stats.queued, stats.workers),
        (2, 4, 2),
        "{stats:?}"
    );
    assert!(queued[0].cancel());
    gate.wait();
    for h in running {
        h.result().unwrap();
    }
    for h in queued.into_iter().skip(1) {
        h.result().unwrap();
    }
    assert!(panicking.result().is_err());
    pool.shutdown(true, false);
    let stats = pool.stats();
    assert_eq!(
        (
            stats.completed,
            stats.failed,
            stats.cancelled,
            stats.running,
            stats.queued
        ),
        (4, 1, 1, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.done(), 6);
    assert_eq!(stats.workers, 0, "every thread exited");
}

#[test]
fn issue_13_results_are_lent_without_consuming_the_handle() {
    let pool = ThreadPoolExecutor::new();
    let handle = pool.submit(|| vec![1, 2, 3]).unwrap();
    assert_eq!(handle.with_result(|r| r.map(Vec::len).ok()), Some(3));
    assert!(handle.exception().is_none());
    assert_eq!(handle.result().unwrap(), [1, 2, 3]);

    let failed = pool.submit(|| -> u32 { panic!("boom") }).unwrap();
    let message = failed.with_result(|r| r.err().map(ToString::to_string));
    assert!(message.unwrap().contains("boom"));
    assert!(
        matches!(failed.result(), Err(FutureError::Panicked(_))),
        "still there"
    );
}

#[test]
fn issue_13_a_thread_can_wait_by_reference_while_another_cancels() {
    let (completer, handle) = FutureHandle::<u32>::pending();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| handle.wait_timeout(PATIENCE));
        let canceller = s.spawn(|| handle.cancel());
        assert!(canceller.join().unwrap());
        assert!(waiter.join().unwrap());
    });
    assert!(completer.is_cancelled());
    assert_eq!(handle.try_with_result(|r| r.is_err()), Some(true));
}

#[test]
fn issue_13_every_done_callback_sees_the_value_even_when_the_owner_takes_it_at_once() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    for round in 0..200 {
        let (tx, rx) = mpsc::channel();
        let handle = pool.submit(move || format!("value {round}")).unwrap();
        handle.add_done_callback(move |h| {
            tx.send(h.try_with_result(|r| r.ok().cloned()).flatten())
                .unwrap();
        });
        let value = handle.result().unwrap();
        assert_eq!(rx.recv_timeout(PATIENCE).unwrap().as_deref(), Some(&*value));
    }
}

#[test]
fn issue_13_as_completed_stream_yields_in_completion_order() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(3)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel::<()>();
    let slow = pool.submit(move || rx.recv().is_ok()).unwrap();
    let quick: Vec<_> = (0..4)
        .map(|i| pool.submit(move || i > 10).unwrap())
        .collect();
    let all: Vec<_> = std::iter::once(slow).chain(quick).collect();
    runtime.block_on(async {
        let mut done = as_completed_stream(all);
        for _ in 0..4 {
            let handle = tokio::time::timeout(PATIENCE, done.next())
                .await
                .unwrap()
                .unwrap();
            assert!(!handle.result().unwrap(), "the four quick ones first");
        }
        tx.send(()).unwrap();
        let last = tokio::time::timeout(PATIENCE, done.next())
            .await
            .unwrap()
            .unwrap();
        assert!(last.await.unwrap());
        assert!(done.next().await.is_none());
    });
}

#[test]
fn issue_13_a_dropped_cancel_on_drop_await_cancels_a_task_that_has_not_started() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel();
    let running = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            rx.recv().is_ok()
        })
        .unwrap();
    started.recv_timeout(PATIENCE).unwrap();
    let queued = pool.submit(|| 5).unwrap();
    let (witness_tx, witness) = mpsc::channel();
    queued.add_done_callback(move |h| witness_tx.send(h.is_cancelled()).unwrap());
    runtime.block_on(async {
        let timed = tokio::time::timeout(Duration::from_millis(5), queued.cancel_on_drop());
        assert!(timed.await.is_err());
        // The running task is left alone by a given-up await.
        let timed = tokio::time::timeout(Duration::from_millis(5), running.cancel_on_drop());
        assert!(timed.await.is_err());
    });
    assert!(
        witness.recv_timeout(PATIENCE).unwrap(),
        "the queued task was cancelled"
    );
    tx.send(()).unwrap();
    pool.shutdown(true, false);
    assert_eq!(pool.stats().completed, 1, "the running one ran to its end");
}

#[test]
fn issue_13_a_completed_cancel_on_drop_await_returns_the_value() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pool = ThreadPoolExecutor::new();
    let handle = pool.submit(|| 6 * 7).unwrap();
    assert_eq!(runtime.block_on(handle.cancel_on_drop()).unwrap(), 42);
}
