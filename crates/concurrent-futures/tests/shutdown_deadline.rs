//! Shutdown with a deadline, shutdown options, pool clones and the drop (issue 13,
//! points 2 and 10).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use concurrent_futures::{CancelToken, FutureError, ShutdownOptions, ThreadPoolExecutor};

const PATIENCE: Duration = Duration::from_secs(60);

/// A task that blocks until `release` sends (or is dropped); says when it started.
fn stuck(pool: &ThreadPoolExecutor) -> (concurrent_futures::FutureHandle<bool>, mpsc::Sender<()>) {
    let (release, rx) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel();
    let handle = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            rx.recv().is_ok()
        })
        .unwrap();
    started.recv_timeout(PATIENCE).unwrap();
    (handle, release)
}

#[test]
fn issue_13_shutdown_timeout_returns_at_the_deadline_and_reports_what_is_left() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let (stuck, release) = stuck(&pool);
    let queued = pool.submit(|| 1).unwrap();
    let cancellable_queued = pool.submit_cancellable(|_: &CancelToken| 2).unwrap();
    let report = pool.shutdown_timeout(Duration::from_millis(20));
    assert!(report.timed_out() && !report.finished());
    assert_eq!(report.still_running(), 1);
    assert_eq!(report.cancelled(), 2, "what was still queued is cancelled");
    assert!(queued.is_cancelled() && cancellable_queued.is_cancelled());
    // Neither a second shutdown nor the drop waits for the detached thread again.
    let start = Instant::now();
    let again = pool.shutdown_with(ShutdownOptions::new());
    assert!(!again.finished(), "the detached task still runs: {again:?}");
    assert_eq!(again.still_running(), 1);
    drop(pool);
    assert!(start.elapsed() < PATIENCE);
    release.send(()).unwrap();
    assert!(
        stuck.result().unwrap(),
        "the detached task still completes its future"
    );
}

#[test]
fn issue_13_shutdown_timeout_asks_running_cancellable_tasks_to_stop() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = pool
        .submit_cancellable(move |token: &CancelToken| {
            tx.send(()).unwrap();
            token.wait();
        })
        .unwrap();
    rx.recv_timeout(PATIENCE).unwrap();
    let report = pool.shutdown_timeout(Duration::from_millis(10));
    assert!(report.timed_out());
    assert!(handle.wait_timeout(PATIENCE));
    assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
}

#[test]
fn issue_13_a_shutdown_within_the_deadline_finishes_everything() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..20).map(|i| pool.submit(move || i).unwrap()).collect();
    let report = pool.shutdown_timeout(PATIENCE);
    assert!(report.finished());
    assert_eq!(report.cancelled(), 0);
    let total: i32 = handles.into_iter().map(|h| h.result().unwrap()).sum();
    assert_eq!(total, 190);
}

#[test]
fn issue_13_drop_timeout_bounds_the_drop_of_a_pool_with_a_stuck_task() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .drop_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let (stuck, release) = stuck(&pool);
    let start = Instant::now();
    drop(pool);
    assert!(start.elapsed() < PATIENCE);
    assert!(!stuck.is_done());
    drop(release);
    assert!(!stuck.result().unwrap());
}

#[test]
fn issue_13_shutdown_without_wait_returns_at_once() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let (stuck, release) = stuck(&pool);
    let report = pool.shutdown_with(ShutdownOptions::new().wait(false));
    assert!(report.finished(), "nothing cancelled, nothing waited for");
    assert!(pool.submit(|| 0).is_err());
    release.send(()).unwrap();
    assert!(stuck.result().unwrap());
}

#[test]
fn issue_13_clones_share_one_pool_and_the_last_one_shuts_it_down() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let clone = pool.clone();
    let from_thread = std::thread::spawn(move || clone.submit(|| 21).unwrap().result().unwrap());
    assert_eq!(
        from_thread.join().unwrap(),
        21,
        "the clone's drop did not shut down"
    );
    assert_eq!(pool.submit(|| 2).unwrap().result().unwrap(), 2);
    let other = pool.clone();
    other.shutdown(true, false);
    assert!(
        pool.submit(|| 3).is_err(),
        "shutdown through any clone stops the pool"
    );
}

#[test]
fn issue_13_initializers_take_plain_functions_and_closures_without_annotations() {
    fn plain() {}
    fn checked() -> std::io::Result<()> {
        Ok(())
    }
    fn refusing() -> Result<(), String> {
        Err("no database".into())
    }
    for pool in [
        ThreadPoolExecutor::builder().initializer(plain).build(),
        ThreadPoolExecutor::builder().initializer(checked).build(),
        ThreadPoolExecutor::builder().initializer(|| ()).build(),
        ThreadPoolExecutor::builder()
            .initializer(|| std::fs::metadata("/").map(drop))
            .build(),
    ] {
        assert_eq!(pool.unwrap().submit(|| 1).unwrap().result().unwrap(), 1);
    }
    let broken = ThreadPoolExecutor::builder()
        .initializer(refusing)
        .build()
        .unwrap();
    match broken.submit(|| 1).unwrap().result() {
        Err(FutureError::BrokenPool(e)) => assert!(e.to_string().contains("no database")),
        other => panic!("{other:?}"),
    }
}
