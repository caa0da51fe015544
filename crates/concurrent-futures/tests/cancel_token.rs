//! Cooperative cancellation of running thread-pool tasks (issue 13, point 1).

use std::sync::mpsc;
use std::time::Duration;

use concurrent_futures::{
    CancelToken, FutureError, ReturnWhen, ShutdownOptions, ThreadPoolExecutor, wait,
};

/// Long enough that no healthy run gets near it; only a hang would.
const PATIENCE: Duration = Duration::from_secs(60);

/// Submits a task that says it started, then waits for its token and returns `value`.
fn started_waiter(pool: &ThreadPoolExecutor, value: u32) -> concurrent_futures::FutureHandle<u32> {
    let (tx, rx) = mpsc::channel();
    let handle = pool
        .submit_cancellable(move |token: &CancelToken| {
            tx.send(()).unwrap();
            token.wait();
            value
        })
        .unwrap();
    rx.recv_timeout(PATIENCE).expect("the task started");
    handle
}

#[test]
fn issue_13_cancel_of_a_running_cancellable_task_sets_its_token_and_ends_cancelled() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let handle = started_waiter(&pool, 7);
    assert!(handle.is_running());
    assert!(handle.cancel(), "cancel() of a running cancellable task");
    assert!(handle.cancel(), "and again");
    assert!(
        handle.wait_timeout(PATIENCE),
        "the task saw its token and returned"
    );
    assert!(handle.is_cancelled());
    assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
    assert_eq!(pool.stats().cancelled, 1);
}

#[test]
fn issue_13_a_plain_running_task_still_refuses_cancel() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel();
    let handle = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            rx.recv().is_ok()
        })
        .unwrap();
    started.recv_timeout(PATIENCE).unwrap();
    assert!(!handle.cancel());
    tx.send(()).unwrap();
    assert!(handle.result().unwrap());
}

#[test]
fn issue_13_a_task_that_ignores_its_token_still_ends_cancelled_once_cancel_returned_true() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let (go_tx, go) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel();
    let handle = pool
        .submit_cancellable(move |_token: &CancelToken| {
            started_tx.send(()).unwrap();
            go.recv().unwrap();
            String::from("ignored the token")
        })
        .unwrap();
    started.recv_timeout(PATIENCE).unwrap();
    assert!(handle.cancel());
    assert!(!handle.is_done(), "stays running until the task returns");
    go_tx.send(()).unwrap();
    assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
}

#[test]
fn issue_13_cancel_before_start_never_runs_the_task() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let blocker = started_waiter(&pool, 1);
    let queued = pool
        .submit_cancellable(|_: &CancelToken| panic!("never runs"))
        .unwrap();
    assert!(queued.cancel());
    assert!(queued.is_cancelled(), "a pending task is cancelled at once");
    assert!(blocker.cancel());
    assert!(matches!(blocker.result(), Err(FutureError::Cancelled)));
}

#[test]
fn issue_13_an_uncancelled_task_returns_its_value() {
    let pool = ThreadPoolExecutor::new();
    let handle = pool
        .submit_cancellable(|token: &CancelToken| !token.is_cancelled())
        .unwrap();
    assert!(handle.result().unwrap());
}

#[test]
fn issue_13_shutdown_with_cancel_futures_sets_every_running_token() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(3)
        .build()
        .unwrap();
    let running: Vec<_> = (0..3).map(|i| started_waiter(&pool, i)).collect();
    let queued = pool.submit(|| 99).unwrap();
    // Without the tokens this would wait for ever: the three tasks only end when told.
    let report = pool.shutdown_with(ShutdownOptions::new().cancel_futures(true));
    assert!(report.finished());
    assert_eq!(report.cancelled(), 1);
    assert!(queued.is_cancelled());
    for handle in running {
        assert!(handle.is_cancelled());
    }
}

#[test]
fn issue_13_the_token_can_be_awaited() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = pool
        .submit_cancellable(move |token: &CancelToken| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            tx.send(()).unwrap();
            runtime.block_on(async {
                tokio::select! {
                    () = token.cancelled() => "cancelled",
                    () = tokio::time::sleep(PATIENCE) => "slept",
                }
            })
        })
        .unwrap();
    rx.recv_timeout(PATIENCE).unwrap();
    assert!(handle.cancel());
    let done = wait([&handle], Some(PATIENCE), ReturnWhen::AllCompleted);
    assert_eq!(done.done.len(), 1);
    assert!(handle.is_cancelled());
}

#[test]
fn issue_13_cancel_racing_the_return_never_finishes_a_future_whose_cancel_returned_true() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    for round in 0..2_000u32 {
        let handle = pool
            .submit_cancellable(move |token: &CancelToken| {
                // Return at once, or after a short poll: both races with `cancel()`.
                if round % 2 == 0 {
                    token.wait_timeout(Duration::from_micros(50));
                }
                round
            })
            .unwrap();
        while !handle.is_running() && !handle.is_done() {
            std::hint::spin_loop();
        }
        let cancelled = handle.cancel();
        match handle.result() {
            Err(FutureError::Cancelled) => assert!(cancelled, "round {round}"),
            Ok(v) => {
                assert!(
                    !cancelled,
                    "round {round}: cancel() said true but the value came"
                );
                assert_eq!(v, round);
            }
            Err(e) => panic!("round {round}: {e}"),
        }
    }
}
