//! Adversarial tests of issue 13's additions (branch attack13).
//!
//! Tests named `defect_*` reproduce a defect and FAIL on the code they were written
//! against; they are `#[ignore]`d with the defect named, so run them with
//! `cargo test -p concurrent-futures --test attack_13 -- --ignored`.
//! Every other test is an attack that held.
//!
//! No sleeps for synchronisation: channels and barriers; timeouts are hang guards only.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use concurrent_futures::{
    CancelToken, FutureError, FutureHandle, ShutdownOptions, ThreadPoolExecutor,
    as_completed_stream,
};
use futures_util::StreamExt;

const PATIENCE: Duration = Duration::from_secs(60);

fn pool(workers: usize) -> ThreadPoolExecutor {
    ThreadPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .unwrap()
}

/// Runs `f` on its own thread; fails (and leaks the thread) when it has not returned
/// within `limit`: a hang guard.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("HUNG: {what} did not finish within {limit:?}"),
    }
}

struct CountingWaker(AtomicUsize);
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------------ defects

/// A value whose `Drop` panics.
struct PanicOnDrop;
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("PanicOnDrop dropped");
        }
    }
}

/// DEFECT 1 (hang): a queued scoped task that a shutdown cancels is dropped by
/// `Job::cancel` inside `contain`; `Scoped::drop` drops the closure first, and when that
/// drop panics `Outstanding::done()` is never reached, so `scope` waits for ever.
#[test]
fn defect_scope_hangs_when_a_cancelled_scoped_task_panics_on_drop() {
    within(
        Duration::from_secs(20),
        "scope with a cancelled panicking-drop task",
        || {
            let pool = pool(1);
            let (started_tx, started_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            pool.scope(|s| {
                // Occupies the only worker.
                let busy = s
                    .submit(move || {
                        started_tx.send(()).unwrap();
                        let _ = release_rx.recv_timeout(PATIENCE);
                    })
                    .unwrap();
                started_rx.recv_timeout(PATIENCE).unwrap();
                let guard = PanicOnDrop;
                let queued = s
                    .submit(move || {
                        let _keep = &guard;
                    })
                    .unwrap();
                // Cancels `queued` while it is still in the queue: its closure is dropped
                // on this thread, and that drop panics (caught by the pool's `contain`).
                pool.shutdown(false, true);
                assert!(queued.is_done());
                release_tx.send(()).unwrap();
                busy.result().unwrap();
            });
        },
    );
}

/// DEFECT 2 (wrong report): after a shutdown whose deadline passed (threads detached),
/// a later `shutdown_timeout`/`shutdown_with` returns a default report that says
/// `finished()`, while the stuck task is still running.
#[test]
fn defect_shutdown_after_a_detached_shutdown_reports_finished_while_a_task_runs() {
    let pool = pool(1);
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let stuck = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            release_rx.recv_timeout(PATIENCE).is_ok()
        })
        .unwrap();
    started_rx.recv_timeout(PATIENCE).unwrap();
    let first = pool.shutdown_timeout(Duration::from_millis(20));
    assert!(first.timed_out() && first.still_running() == 1, "{first:?}");
    let second = pool.shutdown_timeout(Duration::from_millis(20));
    let stats = pool.stats();
    release_tx.send(()).unwrap();
    assert!(stuck.result().unwrap());
    assert_eq!(
        stats.running, 1,
        "the task still ran during the second shutdown"
    );
    assert!(
        !second.finished(),
        "second shutdown claims the pool stopped completely: {second:?} (stats {stats:?})"
    );
}

/// DEFECT 3 (wrong counts): a scoped task runs inside a wrapper that catches its panic
/// and completes the scoped future itself, so the pool's counters see the wrapper
/// return: a panicking scoped task counts as `completed`, never as `failed`; a
/// cancelled one counts as `completed` too.
#[test]
fn defect_stats_count_a_panicking_scoped_task_as_completed() {
    let pool = pool(1);
    pool.scope(|s| {
        let h = s.submit(|| -> u32 { panic!("scoped boom") }).unwrap();
        assert!(matches!(h.result(), Err(FutureError::Panicked(_))));
    });
    pool.shutdown(true, false);
    let stats = pool.stats();
    assert_eq!(
        (stats.completed, stats.failed),
        (0, 1),
        "a scoped panic should count as failed: {stats:?}"
    );
}

/// DEFECT 4, decided and documented (`PoolStats`): a queued task cancelled through its
/// handle stays in `queued` until a worker takes it off the queue (or a shutdown drains
/// it), then counts as `cancelled`. Counting it at the `cancel()` would cost every task
/// a pointer to its pool's counters.
#[test]
fn defect_4_a_cancelled_queued_task_is_counted_once_a_worker_reaches_it() {
    let pool = pool(1);
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let busy = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(PATIENCE);
        })
        .unwrap();
    started_rx.recv_timeout(PATIENCE).unwrap();
    let queued = pool.submit(|| 1).unwrap();
    assert!(queued.cancel());
    assert!(matches!(queued.result(), Err(FutureError::Cancelled)));
    assert_eq!(pool.stats().queued, 1, "still in the queue");
    release_tx.send(()).unwrap();
    busy.result().unwrap();
    pool.shutdown(true, false);
    let stats = pool.stats();
    assert_eq!(
        (stats.queued, stats.cancelled, stats.done()),
        (0, 1, 2),
        "{stats:?}"
    );
}

/// DEFECT 5 (semantics race): `cancel()` that sees the task still pending, then loses the
/// race to the worker's `set_running_with`, falls through to the non-cooperative
/// `IfRunning::Stop` path of `try_cancel`: the future is marked `Cancelled` at once
/// while the cancellable task is still running (the docs promise it "stays running
/// until the task returns"). A hammer; the loom model
/// `loom_cooperative_cancel_racing_start_keeps_the_future_running` shows it always.
#[test]
fn defect_cooperative_cancel_racing_start_completes_the_future_while_the_task_runs() {
    within(
        Duration::from_secs(300),
        "cooperative cancel hammer",
        || {
            let pool = pool(1);
            let mut hits = 0;
            let rounds = 50_000;
            for _ in 0..rounds {
                let (release_tx, release_rx) = mpsc::channel::<()>();
                let started = Arc::new(AtomicBool::new(false));
                let returned = Arc::new(AtomicBool::new(false));
                let (s, r) = (Arc::clone(&started), Arc::clone(&returned));
                let handle = pool
                    .submit_cancellable(move |_token: &CancelToken| {
                        s.store(true, Ordering::SeqCst);
                        // Ignores the token: stays running until released.
                        let _ = release_rx.recv_timeout(PATIENCE);
                        r.store(true, Ordering::SeqCst);
                        5
                    })
                    .unwrap();
                while !handle.cancel() {}
                let done_now = handle.is_done();
                let returned_now = returned.load(Ordering::SeqCst);
                drop(release_tx);
                assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
                // A sentinel behind it on the only worker: this round's task ran or was skipped.
                pool.submit(|| ()).unwrap().result().unwrap();
                if started.load(Ordering::SeqCst) && done_now && !returned_now {
                    hits += 1;
                }
            }
            assert_eq!(
                hits, 0,
                "{hits} of {rounds} rounds: the future ended Cancelled while its task still ran"
            );
        },
    );
}

/// DEFECT 6 (leak): `CancelToken::cancelled()` stores the polling task's waker in the
/// token and never removes it when the `Cancelled` future is dropped, so a long-lived
/// token polled by many short-lived tasks (a server's shutdown token in each
/// connection's `select!`) grows without bound and keeps every waker (and what it owns)
/// alive until the token is cancelled.
#[test]
fn defect_dropped_cancelled_futures_leave_their_wakers_in_the_token() {
    let token = CancelToken::new();
    let wakers: Vec<Arc<CountingWaker>> = (0..1000)
        .map(|_| Arc::new(CountingWaker(AtomicUsize::new(0))))
        .collect();
    for w in &wakers {
        let waker = Waker::from(Arc::clone(w));
        let mut cx = Context::from_waker(&waker);
        let mut fut = token.cancelled();
        assert!(std::pin::Pin::new(&mut fut).poll(&mut cx).is_pending());
        drop(fut); // the select! took another branch
    }
    let kept = wakers.iter().filter(|w| Arc::strong_count(w) > 1).count();
    assert_eq!(
        kept, 0,
        "{kept} wakers of dropped Cancelled futures are still held by the token"
    );
}

// ------------------------------------------------------------- attacks that held

/// cancel() racing the task's return: a true cancel() never yields a value.
#[test]
fn cooperative_cancel_racing_completion_never_yields_a_value_after_true() {
    within(Duration::from_secs(120), "cancel vs completion", || {
        let pool = pool(2);
        let mut trues = 0;
        for _ in 0..5_000 {
            let barrier = Arc::new(Barrier::new(2));
            let b = Arc::clone(&barrier);
            let handle = pool
                .submit_cancellable(move |_t: &CancelToken| {
                    b.wait();
                    7u32
                })
                .unwrap();
            barrier.wait();
            let cancelled = handle.cancel();
            trues += usize::from(cancelled);
            match handle.result() {
                Ok(7) => assert!(!cancelled, "a value after cancel() returned true"),
                Err(FutureError::Cancelled) => assert!(cancelled, "cancelled without cancel()"),
                other => panic!("unexpected {other:?}"),
            }
        }
        let _ = trues;
        pool.shutdown(true, false);
        let stats = pool.stats();
        assert_eq!(stats.done(), 5_000, "{stats:?}");
    });
}

/// A cancellable task that panics after cancel() ends Cancelled; one that panics without
/// cancel() ends Panicked.
#[test]
fn cancellable_task_panicking_after_cancel_ends_cancelled() {
    let pool = pool(1);
    let (started_tx, started_rx) = mpsc::channel();
    let h = pool
        .submit_cancellable(move |t: &CancelToken| -> u32 {
            started_tx.send(()).unwrap();
            t.wait_timeout(PATIENCE);
            panic!("after cancel");
        })
        .unwrap();
    started_rx.recv_timeout(PATIENCE).unwrap();
    assert!(h.cancel());
    assert!(h.cancel(), "idempotent");
    assert!(matches!(h.result(), Err(FutureError::Cancelled)));
    let h = pool
        .submit_cancellable(|_t: &CancelToken| -> u32 { panic!("plain") })
        .unwrap();
    assert!(matches!(h.result(), Err(FutureError::Panicked(_))));
}

/// done() equals the number submitted once every result was taken, with panics, values
/// and cooperative cancellations mixed, many workers.
#[test]
fn stats_done_equals_submitted_after_all_results() {
    let pool = pool(4);
    let n = 2_000;
    let handles: Vec<_> = (0..n)
        .map(|i| {
            if i % 7 == 0 {
                pool.submit_cancellable(move |t: &CancelToken| {
                    t.cancel();
                    i
                })
                .unwrap()
            } else {
                pool.submit(move || {
                    assert!(i % 11 != 0, "eleven");
                    i
                })
                .unwrap()
            }
        })
        .collect();
    for h in handles {
        let _ = h.result();
    }
    let stats = pool.stats();
    assert_eq!(stats.done(), n, "{stats:?}");
    assert_eq!((stats.queued, stats.running), (0, 0), "{stats:?}");
    assert!(stats.cancelled > 0 && stats.failed > 0, "{stats:?}");
}

/// with_result from a done-callback, from another thread (a scoped thread that borrows
/// the handle), and result() afterwards: no deadlock, the value stays.
#[test]
fn with_result_from_callbacks_and_other_threads_then_result() {
    within(Duration::from_secs(60), "with_result", || {
        let pool = pool(2);
        for _ in 0..500 {
            let (tx, rx) = mpsc::channel::<()>();
            let h = pool
                .submit(move || {
                    let _ = rx.recv_timeout(PATIENCE);
                    String::from("value")
                })
                .unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s = Arc::clone(&seen);
            h.add_done_callback(move |h| {
                let len = h.try_with_result(|r| {
                    // Nested lending, Debug and exception() inside the callback.
                    let _ = format!("{h:?}");
                    assert!(h.exception().is_none());
                    h.with_result(|again| again.map(String::len).unwrap_or(0))
                        + r.map(String::len).unwrap_or(0)
                });
                s.lock().unwrap().push(len);
            });
            std::thread::scope(|scope| {
                let readers: Vec<_> = (0..3)
                    .map(|_| scope.spawn(|| h.with_result(|r| r.map(String::len).ok())))
                    .collect();
                tx.send(()).unwrap();
                for r in readers {
                    assert_eq!(r.join().unwrap(), Some(5));
                }
                assert_eq!(h.result_cloned().unwrap(), "value");
            });
            assert_eq!(h.result().unwrap(), "value");
            assert_eq!(*seen.lock().unwrap(), vec![Some(10)]);
        }
    });
}

/// The stream: polled again after it ended, dropped midway (its waiters removed, the
/// remaining futures still complete and can be awaited).
#[test]
fn as_completed_stream_after_end_and_dropped_midway() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let pool = pool(4);
    rt.block_on(async {
        let handles: Vec<_> = (0..4).map(|i| pool.submit(move || i).unwrap()).collect();
        let mut s = as_completed_stream(handles);
        let mut got = 0;
        while let Some(h) = s.next().await {
            got += h.await.unwrap();
        }
        assert_eq!(got, 6);
        assert!(s.next().await.is_none());
        assert!(s.next().await.is_none(), "fused");

        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        let slow: Vec<_> = (0..3)
            .map(|_| {
                let rx = rx.clone();
                pool.submit(move || rx.recv_timeout(PATIENCE).is_ok())
                    .unwrap()
            })
            .collect();
        let quick = pool.submit(|| true).unwrap();
        let refs: Vec<&FutureHandle<bool>> = slow.iter().chain([&quick]).collect();
        let mut s = as_completed_stream(refs);
        let first = tokio::time::timeout(PATIENCE, s.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, &quick);
        drop(s);
        drop(tx);
        for h in slow {
            assert!(!h.await.unwrap());
        }
    });
}

/// Scopes: panicking tasks, tasks that submit more scoped tasks, a scope from inside a
/// pool task, a value that borrows the environment read after the scope.
#[test]
fn scopes_under_stress() {
    within(Duration::from_secs(60), "scopes", || {
        let pool = pool(4);
        let words: Vec<String> = (0..50).map(|i| format!("w{i}")).collect();
        let count = AtomicUsize::new(0);
        // Tasks that submit tasks (two levels), some panicking.
        let handle_out = pool.scope(|s| {
            for (i, w) in words.iter().enumerate() {
                let count = &count;
                s.submit(move || {
                    let inner = s
                        .submit(move || {
                            count.fetch_add(w.len(), Ordering::SeqCst);
                            assert!(i % 10 != 3, "scoped panic {i}");
                        })
                        .unwrap();
                    drop(inner); // leaked handle: still joined
                })
                .unwrap();
            }
            // A value borrowing the environment, taken after the scope.
            s.submit(|| words[7].as_str()).unwrap()
        });
        let total: usize = words.iter().map(String::len).sum();
        assert_eq!(
            count.load(Ordering::SeqCst),
            total,
            "every nested task joined"
        );
        assert_eq!(handle_out.result().unwrap(), "w7");

        // A panic in the scope's closure is resumed after the tasks ended.
        let ran = AtomicBool::new(false);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.scope(|s| {
                s.submit(|| ran.store(true, Ordering::SeqCst)).unwrap();
                panic!("closure panics");
            })
        }));
        assert!(caught.is_err() && ran.load(Ordering::SeqCst));

        // A scope from inside a pool task, with free workers.
        let inner_pool = pool.clone();
        let h = pool
            .submit(move || {
                let local = [1, 2, 3];
                inner_pool.scope(|s| {
                    let hs: Vec<_> = local
                        .iter()
                        .map(|x| s.submit(move || x * 2).unwrap())
                        .collect();
                    hs.into_iter().map(|h| h.result().unwrap()).sum::<i32>()
                })
            })
            .unwrap();
        assert_eq!(h.result().unwrap(), 12);
    });
}

/// Clones: a shutdown through one clone refuses submits through the others; the last
/// clone dropped on one of the pool's own workers does not deadlock.
#[test]
fn clones_shutdown_and_last_drop_on_a_worker() {
    within(Duration::from_secs(60), "clones", || {
        let a = pool(2);
        let b = a.clone();
        let h = b.submit(|| 1).unwrap();
        a.shutdown(true, false);
        assert!(b.submit(|| 2).is_err());
        assert_eq!(h.result().unwrap(), 1);

        let pool = pool(2);
        let (tx, rx) = mpsc::channel::<()>();
        let mine = pool.clone();
        let h = pool
            .submit(move || {
                let _ = rx.recv_timeout(PATIENCE);
                drop(mine); // the last clone: shuts the pool down from its own worker
                3
            })
            .unwrap();
        drop(pool);
        tx.send(()).unwrap();
        assert_eq!(h.result().unwrap(), 3);
    });
}

/// drop_timeout bounds a drop with a stuck task; the task's future still completes.
#[test]
fn drop_timeout_bounds_the_drop() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .drop_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (started_tx, started_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel::<()>();
    let h = pool
        .submit(move || {
            started_tx.send(()).unwrap();
            rx.recv_timeout(PATIENCE).is_ok()
        })
        .unwrap();
    started_rx.recv_timeout(PATIENCE).unwrap();
    let t0 = Instant::now();
    drop(pool);
    assert!(t0.elapsed() < Duration::from_secs(20));
    tx.send(()).unwrap();
    assert!(h.result().unwrap());
}

/// shutdown_timeout racing the workers' exit: quick tasks, tiny deadlines. Every future
/// ends; a report that did not time out left nothing running.
#[test]
fn shutdown_timeout_racing_worker_exit() {
    within(Duration::from_secs(120), "shutdown race", || {
        for round in 0..300 {
            let pool = pool(3);
            let handles: Vec<_> = (0..10).map(|i| pool.submit(move || i).unwrap()).collect();
            let report = pool.shutdown_timeout(Duration::from_micros(round % 50));
            if !report.timed_out() {
                assert_eq!(report.still_running(), 0, "{report:?}");
            }
            for h in handles {
                match h.result() {
                    Ok(_) | Err(FutureError::Cancelled) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            let stats = pool.stats();
            assert!(stats.done() <= 10, "{stats:?}");
        }
    });
}

/// Shutdown with cancel_futures sets the token of running cancellable tasks, also of a
/// task taken off the queue but not started yet.
#[test]
fn shutdown_cancel_futures_reaches_running_cancellable_tasks() {
    within(Duration::from_secs(60), "cancel_futures", || {
        for _ in 0..200 {
            let pool = pool(2);
            let hs: Vec<_> = (0..6)
                .map(|_| {
                    pool.submit_cancellable(|t: &CancelToken| {
                        t.wait();
                        1
                    })
                    .unwrap()
                })
                .collect();
            pool.shutdown_with(ShutdownOptions::new().cancel_futures(true));
            for h in hs {
                assert!(matches!(h.result(), Err(FutureError::Cancelled)));
            }
        }
    });
}

/// Token odds and ends: wait_timeout(Duration::MAX) wakes on cancel; children of a
/// cancelled parent are born cancelled; the Cancelled future wakes every task once.
#[test]
fn token_edges() {
    let token = CancelToken::new();
    let t = token.clone();
    let sleeper = std::thread::spawn(move || t.wait_timeout(Duration::MAX));
    let child = token.child_token();
    let w = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&w));
    let mut cx = Context::from_waker(&waker);
    let mut fut = child.cancelled();
    assert!(std::pin::Pin::new(&mut fut).poll(&mut cx).is_pending());
    token.cancel();
    assert!(sleeper.join().unwrap());
    assert_eq!(w.0.load(Ordering::SeqCst), 1);
    assert!(matches!(
        std::pin::Pin::new(&mut fut).poll(&mut cx),
        Poll::Ready(())
    ));
    assert!(token.child_token().is_cancelled());
}
