//! ThreadPoolExecutor: building, lazy workers, initializers, panics, callbacks,
//! shutdown. Several cases follow CPython's `Lib/test/test_concurrent_futures/`
//! (test_thread_pool.py, test_shutdown.py, test_future.py), rewritten for Rust.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use common::{Gate, PATIENCE, Starts, thread_name};
use concurrent_futures::{BrokenPoolKind, FutureError, MapError, SubmitError, ThreadPoolExecutor};

#[test]
fn zero_workers_is_a_clear_error() {
    let err = ThreadPoolExecutor::builder()
        .max_workers(0)
        .build()
        .expect_err("zero workers must be refused");
    assert_eq!(err.to_string(), "max_workers must be greater than 0");
}

#[test]
fn default_max_workers_is_pythons() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(ThreadPoolExecutor::new().max_workers(), (cpus + 4).min(32));
}

#[test]
fn sequential_submits_reuse_one_idle_thread() {
    // CPython: test_idle_thread_reuse.
    let pool = ThreadPoolExecutor::builder()
        .max_workers(8)
        .thread_name_prefix("reuse")
        .build()
        .unwrap();
    let names: HashSet<String> = (0..3)
        .map(|_| pool.submit(thread_name).unwrap().result().unwrap())
        .collect();
    assert_eq!(names, HashSet::from(["reuse_0".to_owned()]));
}

#[test]
fn saturation_creates_exactly_max_workers_threads() {
    // CPython: test_saturation (60 blocked tasks on a 4-worker pool).
    let pool = ThreadPoolExecutor::builder()
        .max_workers(4)
        .thread_name_prefix("sat")
        .build()
        .unwrap();
    let mut gate = Gate::new();
    let starts = Starts::new();
    let handles: Vec<_> = (0..60)
        .map(|_| {
            let (wait, started) = (gate.waiter(), starts.sender());
            pool.submit(move || {
                started.send(thread_name()).unwrap();
                wait.wait();
            })
            .unwrap()
        })
        .collect();
    let first_four = starts.wait_for(4);
    gate.open();
    let rest = starts.wait_for(56);
    let all: HashSet<String> = first_four.union(&rest).cloned().collect();
    let expected: HashSet<String> = (0..4).map(|i| format!("sat_{i}")).collect();
    assert_eq!(all, expected);
    for h in handles {
        h.result().unwrap();
    }
}

#[test]
fn default_thread_names_use_a_pool_counter() {
    let pool = ThreadPoolExecutor::new();
    let name = pool.submit(thread_name).unwrap().result().unwrap();
    let (prefix, index) = name.rsplit_once('_').unwrap();
    assert!(prefix.starts_with("ThreadPoolExecutor-"), "{name}");
    assert_eq!(index, "0");
}

#[test]
fn initializer_runs_once_per_worker_thread() {
    let inits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&inits);
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .initializer(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<(), String>(())
        })
        .build()
        .unwrap();
    let mut gate = Gate::new();
    let starts = Starts::new();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (wait, started) = (gate.waiter(), starts.sender());
            pool.submit(move || {
                started.send(thread_name()).unwrap();
                wait.wait();
            })
            .unwrap()
        })
        .collect();
    assert_eq!(starts.wait_for(2).len(), 2);
    gate.open();
    for h in handles {
        h.result().unwrap();
    }
    for _ in 0..10 {
        pool.submit(|| ()).unwrap().result().unwrap();
    }
    pool.shutdown(true, false);
    assert_eq!(inits.load(Ordering::SeqCst), 2);
}

#[test]
fn failing_initializer_breaks_the_pool() {
    // CPython: FailingInitializerMixin.test_initializer.
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .initializer(|| Err::<(), _>("no database"))
        .build()
        .unwrap();
    let handles: Vec<_> = (0..5).map(|i| pool.submit(move || i).unwrap()).collect();
    for h in handles {
        match h.result() {
            Err(FutureError::BrokenPool(why)) => {
                assert_eq!(why.kind(), BrokenPoolKind::InitializerFailed);
                assert_eq!(why.pid(), None, "no process is involved");
                assert!(why.message().contains("initializer failed"), "{why}");
                assert!(why.message().ends_with("no database"), "{why}");
            }
            other => panic!("expected a broken pool, got {other:?}"),
        }
    }
    match pool.submit(|| 1) {
        Err(SubmitError::Broken(task, why)) => {
            assert!(why.is_initializer_failed(), "{why:?}");
            assert!(why.message().contains("no database"));
            assert_eq!(task.into_inner()(), 1, "the refused task is given back");
        }
        other => panic!("expected Broken, got {:?}", other.map(|_| ())),
    }
    match pool.map(|x: u32| x, [1, 2]) {
        Err(MapError::Broken(why)) => assert!(why.is_initializer_failed(), "{why:?}"),
        other => panic!("expected Broken, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn panicking_initializer_breaks_the_pool_too() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .initializer(|| -> Result<(), String> { panic!("init exploded") })
        .build()
        .unwrap();
    let h = pool.submit(|| 1).unwrap();
    match h.result() {
        Err(FutureError::BrokenPool(why)) => {
            assert_eq!(why.kind(), BrokenPoolKind::InitializerFailed);
            assert!(why.message().contains("init exploded"), "{why}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_panicking_task_reports_and_the_worker_survives() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("p")
        .build()
        .unwrap();
    let n = std::hint::black_box(7); // a runtime value: the payload is a formatted String
    let h = pool
        .submit(move || -> u8 { panic!("task {n} failed") })
        .unwrap();
    match h.result() {
        Err(FutureError::Panicked(p)) => {
            assert_eq!(p.message(), "task 7 failed");
            let payload = p.into_panic();
            assert_eq!(
                payload.downcast_ref::<String>().map(String::as_str),
                Some("task 7 failed")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(pool.submit(thread_name).unwrap().result().unwrap(), "p_0");
}

#[test]
fn a_task_error_is_the_tasks_value_not_wrapped() {
    let pool = ThreadPoolExecutor::new();
    let h = pool.submit(|| "x".parse::<u8>()).unwrap();
    assert!(h.result().unwrap().is_err());
}

#[test]
fn cancel_succeeds_only_while_pending() {
    let pool = common::pool(1);
    let mut gate = Gate::new();
    let starts = Starts::new();
    let (wait, started) = (gate.waiter(), starts.sender());
    let running = pool
        .submit(move || {
            started.send(String::new()).unwrap();
            wait.wait();
            5
        })
        .unwrap();
    starts.wait_for(1);
    let queued = pool.submit(|| 6).unwrap();
    assert!(running.is_running());
    assert!(
        !running.cancel(),
        "a running thread task cannot be cancelled"
    );
    assert!(queued.cancel());
    assert!(queued.is_cancelled() && queued.is_done() && !queued.is_running());
    gate.open();
    assert_eq!(running.result().unwrap(), 5);
    assert!(matches!(queued.result(), Err(FutureError::Cancelled)));
    let finished = pool.submit(|| 1).unwrap();
    finished.wait();
    assert!(!finished.cancel(), "a finished future cannot be cancelled");
}

#[test]
fn callbacks_run_once_done_even_when_one_panics() {
    let pool = common::pool(1);
    let mut gate = Gate::new();
    let wait = gate.waiter();
    let h = pool
        .submit(move || {
            wait.wait();
            3
        })
        .unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..3 {
        let tx = tx.clone();
        h.add_done_callback(move |f| {
            tx.send((i, f.is_done())).unwrap();
            assert_ne!(i, 1, "this callback panics on purpose");
        });
    }
    gate.open();
    let got: Vec<_> = (0..3).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    assert_eq!(got, vec![(0, true), (1, true), (2, true)]);
    // The worker survived the panicking callback.
    assert_eq!(pool.submit(|| 4).unwrap().result().unwrap(), 4);
    // Already done: runs at once, in this thread.
    let here = std::thread::current().id();
    h.add_done_callback(move |_| tx.send((9, std::thread::current().id() == here)).unwrap());
    assert_eq!(rx.try_recv().unwrap(), (9, true));
    assert_eq!(h.result().unwrap(), 3);
}

#[test]
fn cancel_runs_callbacks_in_the_cancelling_thread() {
    let pool = common::pool(1);
    let mut gate = Gate::new();
    let starts = Starts::new();
    let (wait, started) = (gate.waiter(), starts.sender());
    let _busy = pool
        .submit(move || {
            started.send(String::new()).unwrap();
            wait.wait();
        })
        .unwrap();
    starts.wait_for(1);
    let queued = pool.submit(|| ()).unwrap();
    let (tx, rx) = mpsc::channel();
    queued.add_done_callback(move |f| tx.send(f.is_cancelled()).unwrap());
    assert!(queued.cancel());
    assert_eq!(rx.try_recv(), Ok(true));
    assert!(queued.cancel(), "cancelling twice is fine");
    assert!(rx.try_recv().is_err(), "callbacks do not run twice");
    gate.open();
}

#[test]
fn submit_after_shutdown_is_refused_and_shutdown_is_idempotent() {
    let pool = ThreadPoolExecutor::new();
    pool.submit(|| ()).unwrap().result().unwrap();
    pool.shutdown(false, false);
    pool.shutdown(true, false);
    pool.shutdown(true, true);
    match pool.submit(|| 2) {
        Err(e @ SubmitError::ShutDown(_)) => {
            assert_eq!(e.to_string(), "cannot schedule new futures after shutdown");
            assert_eq!(e.into_inner()(), 2);
        }
        other => panic!("unexpected {:?}", other.map(|_| ())),
    }
    drop(pool); // and Drop after an explicit shutdown
}

#[test]
fn shutdown_without_cancel_runs_the_queue() {
    let pool = common::pool(1);
    let mut gate = Gate::new();
    let wait = gate.waiter();
    let first = pool.submit(move || wait.wait()).unwrap();
    let queued: Vec<_> = (0..10).map(|i| pool.submit(move || i).unwrap()).collect();
    gate.open();
    pool.shutdown(true, false);
    first.result().unwrap();
    let values: Vec<i32> = queued.into_iter().map(|h| h.result().unwrap()).collect();
    assert_eq!(values, (0..10).collect::<Vec<_>>());
}

#[test]
fn shutdown_with_cancel_futures_cancels_the_queue_at_once() {
    let pool = common::pool(1);
    let mut gate = Gate::new();
    let starts = Starts::new();
    let (wait, started) = (gate.waiter(), starts.sender());
    let running = pool
        .submit(move || {
            started.send(String::new()).unwrap();
            wait.wait();
            "done"
        })
        .unwrap();
    starts.wait_for(1);
    let queued: Vec<_> = (0..20).map(|i| pool.submit(move || i).unwrap()).collect();
    pool.shutdown(false, true);
    for h in &queued {
        assert!(h.is_cancelled(), "cancelled by shutdown, visible at once");
    }
    gate.open();
    assert_eq!(running.result().unwrap(), "done");
}

#[test]
fn dropping_the_pool_waits_for_queued_work() {
    let counter = Arc::new(AtomicUsize::new(0));
    {
        let pool = common::pool(2);
        for _ in 0..100 {
            let counter = Arc::clone(&counter);
            pool.submit(move || counter.fetch_add(1, Ordering::SeqCst))
                .unwrap();
        }
    }
    assert_eq!(counter.load(Ordering::SeqCst), 100);
}

#[test]
fn shutdown_from_inside_a_task_does_not_deadlock() {
    let pool = Arc::new(common::pool(2));
    let inner = Arc::clone(&pool);
    let h = pool
        .submit(move || {
            inner.shutdown(true, false);
            "still here"
        })
        .unwrap();
    assert_eq!(h.result().unwrap(), "still here");
    // The last Arc may now be dropped inside or outside the pool; neither may hang.
    drop(pool);
}

#[test]
fn the_handle_is_a_std_future() {
    let pool = ThreadPoolExecutor::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let value = runtime.block_on(async {
        let a = pool.submit(|| 20).unwrap();
        let b = pool.submit(|| 22).unwrap();
        a.await.unwrap() + b.await.unwrap()
    });
    assert_eq!(value, 42);
}

#[test]
#[allow(
    clippy::mutable_key_type,
    reason = "handles hash by identity, never by their changing state"
)]
fn handles_compare_and_hash_by_identity() {
    let pool = ThreadPoolExecutor::new();
    let a = pool.submit(|| 1).unwrap();
    let b = pool.submit(|| 1).unwrap();
    assert_eq!(a, a);
    assert_ne!(a, b);
    let set: HashSet<_> = [&a, &b, &a].into_iter().collect();
    assert_eq!(set.len(), 2);
}

#[test]
fn debug_shows_the_state_like_pythons_repr() {
    let pool = common::pool(1);
    let h = pool.submit(|| 5u32).unwrap();
    h.wait();
    let repr = format!("{h:?}");
    assert!(repr.starts_with("<FutureHandle at 0x"), "{repr}");
    assert!(repr.ends_with(" state=finished returned u32>"), "{repr}");
    let p = pool.submit(|| -> u32 { panic!("x") }).unwrap();
    p.wait();
    assert!(format!("{p:?}").ends_with(" state=finished raised Panicked>"));
    assert!(format!("{pool:?}").contains("max_workers: 1"));
}

#[test]
fn exception_peeks_at_a_failure_without_consuming() {
    let pool = ThreadPoolExecutor::new();
    let ok = pool.submit(|| 1).unwrap();
    assert!(ok.exception().is_none());
    assert_eq!(ok.result().unwrap(), 1);
    let bad = pool.submit(|| -> i32 { panic!("bad") }).unwrap();
    assert!(bad.exception().is_some_and(|e| e.is_panic()));
    assert!(bad.result().is_err());
}

fn double(x: u64) -> u64 {
    x * 2
}

/// Issue 13, point 3: code written against `Executor` runs on the thread pool, and a
/// refused submit gives the argument back (not a closure around it).
#[test]
fn the_executor_trait_runs_on_the_thread_pool() {
    use concurrent_futures::Executor;
    fn total(pool: &impl Executor) -> u64 {
        let one = pool.submit(double, 21).unwrap().result().unwrap();
        let many: u64 = pool
            .map(double, 0..100u64)
            .unwrap()
            .map(Result::unwrap)
            .sum();
        one + many
    }
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    assert_eq!(total(&pool), 42 + 9900);
    assert_eq!(Executor::max_workers(&pool), 2);
    Executor::shutdown(&pool, true, false);
    let refused = Executor::submit(&pool, double, 7u64).unwrap_err();
    assert!(refused.is_shutdown());
    assert_eq!(refused.into_inner(), 7);
}
