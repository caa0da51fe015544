//! `as_completed` and `wait`, including the cancellation cases where Python hangs
//! (gh-92001, gh-109934): here every cancellation is seen at once.

mod common;

use std::time::Duration;

use common::{Gate, PATIENCE, Starts};
use concurrent_futures::{FutureHandle, ReturnWhen, ThreadPoolExecutor, as_completed, wait};

/// A pool of `n` workers, each held in a task until the returned gate opens.
fn busy_pool(n: usize) -> (ThreadPoolExecutor, Gate, Vec<FutureHandle<()>>) {
    let pool = common::pool(n);
    let gate = Gate::new();
    let starts = Starts::new();
    let blockers = (0..n)
        .map(|_| {
            let (wait, started) = (gate.waiter(), starts.sender());
            pool.submit(move || {
                started.send(String::new()).unwrap();
                wait.wait();
            })
            .unwrap()
        })
        .collect();
    starts.wait_for(n);
    (pool, gate, blockers)
}

#[test]
fn as_completed_yields_done_first_then_in_completion_order() {
    let pool = common::pool(3);
    let done = pool.submit(|| "done").unwrap();
    done.wait();
    let mut gate_a = Gate::new();
    let mut gate_b = Gate::new();
    let (wa, wb) = (gate_a.waiter(), gate_b.waiter());
    let a = pool.submit(move || {
        wa.wait();
        "a"
    });
    let b = pool.submit(move || {
        wb.wait();
        "b"
    });
    let mut it = as_completed([a.unwrap(), b.unwrap(), done], Some(PATIENCE));
    assert_eq!(it.next().unwrap().unwrap().result().unwrap(), "done");
    gate_b.open();
    assert_eq!(it.next().unwrap().unwrap().result().unwrap(), "b");
    gate_a.open();
    assert_eq!(it.next().unwrap().unwrap().result().unwrap(), "a");
    assert!(it.next().is_none());
}

#[test]
fn as_completed_yields_duplicates_once() {
    let pool = ThreadPoolExecutor::new();
    let a = pool.submit(|| 1).unwrap();
    let b = pool.submit(|| 2).unwrap();
    let yielded: Vec<_> = as_completed([&a, &b, &a, &a], None)
        .map(Result::unwrap)
        .collect();
    assert_eq!(yielded.len(), 2);
}

#[test]
fn as_completed_timeout_says_how_many_are_unfinished() {
    let (pool, mut gate, blockers) = busy_pool(2);
    let done1 = pool.submit(|| ());
    let done2 = pool.submit(|| ());
    // 2 blocked + 2 queued behind them; nothing finishes.
    let all: Vec<&FutureHandle<()>> = blockers.iter().collect();
    let mut it = as_completed(all, Some(Duration::from_millis(50)));
    let err = it.next().unwrap().unwrap_err();
    assert_eq!((err.unfinished, err.total), (2, 2));
    assert!(
        err.to_string().starts_with("2 (of 2) futures unfinished"),
        "{err}"
    );
    assert!(it.next().is_none(), "the iterator ends after a timeout");
    gate.open();
    done1.unwrap().result().unwrap();
    done2.unwrap().result().unwrap();
}

#[test]
fn as_completed_timeout_zero_still_yields_what_is_done() {
    let (pool, mut gate, blockers) = busy_pool(1);
    let done = pool.submit(|| ()).unwrap();
    let mut handles = vec![&blockers[0]];
    gate.open();
    done.wait();
    handles.push(&done);
    let mut it = as_completed(handles, Some(Duration::ZERO));
    let first = it.next().unwrap();
    assert!(first.is_ok());
}

#[test]
fn as_completed_into_pending_gives_handles_back() {
    let (_pool, mut gate, blockers) = busy_pool(2);
    let mut it = as_completed(blockers, Some(Duration::from_millis(20)));
    assert!(it.next().unwrap().is_err());
    let back = it.into_pending();
    assert_eq!(back.len(), 2);
    gate.open();
    for h in back {
        h.result().unwrap();
    }
}

#[test]
fn cancellation_by_shutdown_is_seen_by_as_completed_at_once() {
    // Python: gh-92001 — as_completed hangs (or times out) on futures cancelled by
    // shutdown(cancel_futures=True).
    let (pool, mut gate, blockers) = busy_pool(1);
    let queued: Vec<_> = (0..5).map(|i| pool.submit(move || i).unwrap()).collect();
    let mut it = as_completed(queued, Some(PATIENCE));
    pool.shutdown(false, true);
    for _ in 0..5 {
        let h = it.next().unwrap().expect("no timeout");
        assert!(h.is_cancelled());
    }
    assert!(it.next().is_none());
    gate.open();
    drop(blockers);
}

#[test]
fn cancellation_while_waiting_wakes_wait() {
    let (pool, mut gate, _blockers) = busy_pool(1);
    let queued = pool.submit(|| ()).unwrap();
    let waiter = std::thread::scope(|s| {
        let waiting = s.spawn(|| wait([&queued], Some(PATIENCE), ReturnWhen::AllCompleted));
        // Cancel from this thread while the other waits; the cancellation notifies it.
        while !queued.cancel() {}
        waiting.join().unwrap().done.len()
    });
    assert_eq!(waiter, 1);
    gate.open();
}

#[test]
fn wait_first_completed() {
    let (pool, mut gate, blockers) = busy_pool(1);
    let quick = ThreadPoolExecutor::new().submit(|| ()).unwrap();
    let sets = wait(
        blockers.iter().chain([&quick]),
        Some(PATIENCE),
        ReturnWhen::FirstCompleted,
    );
    assert_eq!(sets.done, vec![&quick]);
    assert_eq!(sets.not_done.len(), 1);
    gate.open();
    drop(pool);
}

#[test]
fn wait_first_exception_returns_on_a_failure() {
    let (pool, mut gate, blockers) = busy_pool(1);
    let other = ThreadPoolExecutor::new();
    let failing = other.submit(|| -> () { panic!("fail") }).unwrap();
    let sets = wait(
        blockers.iter().chain([&failing]),
        Some(PATIENCE),
        ReturnWhen::FirstException,
    );
    assert_eq!(sets.done, vec![&failing]);
    assert_eq!(sets.not_done.len(), 1);
    gate.open();
    drop(pool);
}

#[test]
fn wait_first_exception_without_failures_waits_for_all() {
    let pool = ThreadPoolExecutor::new();
    let handles: Vec<_> = (0..10).map(|i| pool.submit(move || i).unwrap()).collect();
    let sets = wait(&handles, Some(PATIENCE), ReturnWhen::FirstException);
    assert_eq!((sets.done.len(), sets.not_done.len()), (10, 0));
}

#[test]
fn wait_timeout_returns_partial_sets() {
    let (pool, mut gate, blockers) = busy_pool(1);
    let done = pool.submit(|| ());
    let sets = wait(
        &blockers,
        Some(Duration::from_millis(20)),
        ReturnWhen::AllCompleted,
    );
    assert_eq!((sets.done.len(), sets.not_done.len()), (0, 1));
    gate.open();
    done.unwrap().result().unwrap();
}

#[test]
fn wait_on_nothing_returns_at_once() {
    let sets = wait(
        Vec::<FutureHandle<()>>::new(),
        None,
        ReturnWhen::AllCompleted,
    );
    assert!(sets.done.is_empty() && sets.not_done.is_empty());
}

#[test]
fn wait_deduplicates() {
    let pool = ThreadPoolExecutor::new();
    let a = pool.submit(|| 1).unwrap();
    let sets = wait([&a, &a], None, ReturnWhen::AllCompleted);
    assert_eq!(sets.done.len(), 1);
}

#[test]
fn handles_from_two_pools_mix() {
    let p1 = ThreadPoolExecutor::new();
    let p2 = ThreadPoolExecutor::new();
    let handles = vec![p1.submit(|| 1).unwrap(), p2.submit(|| 2).unwrap()];
    let total: i32 = as_completed(handles, None)
        .map(|h| h.unwrap().result().unwrap())
        .sum();
    assert_eq!(total, 3);
}

/// Issue 13, point 7: with `wait_fallible`, a task that returned `Err` is a failure for
/// `FirstException`; plain `wait` counts only panics and broken pools.
#[test]
fn first_exception_sees_a_returned_err_with_wait_fallible() {
    use concurrent_futures::wait_fallible;
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let slow = pool
        .submit(move || rx.recv().map_err(|e| e.to_string()))
        .unwrap();
    let failing = pool
        .submit(|| Err::<(), String>("no such file".to_owned()))
        .unwrap();
    failing.wait();
    let plain = wait(
        [&slow, &failing],
        Some(Duration::from_millis(50)),
        ReturnWhen::FirstException,
    );
    assert_eq!(
        plain.not_done,
        [&slow],
        "plain wait waits on: Err is a value"
    );
    let sets = wait_fallible([&slow, &failing], None, ReturnWhen::FirstException);
    assert_eq!(sets.done, [&failing]);
    assert_eq!(sets.not_done, [&slow]);
    tx.send(()).unwrap();
    let ok = pool.submit(|| Ok::<(), String>(())).unwrap();
    let all = wait_fallible([&slow, &ok], None, ReturnWhen::FirstException);
    assert_eq!(all.done.len(), 2, "no Err: it returns when all are done");
    assert_eq!(failing.result().unwrap(), Err("no such file".to_owned()));
}
