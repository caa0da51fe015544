//! `map` and `map_unordered`: order, laziness over endless input, per-item failures,
//! timeouts, cancellation on drop and bad options.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::Gate;
use concurrent_futures::{FutureError, MapError, MapItemError, MapOptions, ThreadPoolExecutor};

#[test]
fn map_keeps_input_order() {
    let pool = common::pool(4);
    let out: Vec<u64> = pool
        .map(|x: u64| x * 2, 0..10_000)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, (0..10_000).map(|x| x * 2).collect::<Vec<_>>());
}

#[test]
fn map_with_fixed_chunks_keeps_order() {
    let pool = common::pool(3);
    for chunk in [1, 2, 7, 1000] {
        let out: Vec<i32> = pool
            .map_with(|x: i32| x - 1, 0..500, MapOptions::new().chunksize(chunk))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(out, (-1..499).collect::<Vec<_>>(), "chunksize {chunk}");
    }
}

#[test]
fn map_over_an_endless_iterator_is_lazy_and_bounded() {
    let pool = common::pool(2);
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let endless = (0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let options = MapOptions::new().window(3).chunksize(2);
    let mut it = pool.map_with(|x| x + 1, endless, options).unwrap();
    assert!(
        pulled.load(Ordering::SeqCst) <= 6,
        "only the window is submitted"
    );
    let firsts: Vec<u64> = it.by_ref().take(100).map(Result::unwrap).collect();
    assert_eq!(firsts, (1..=100).collect::<Vec<_>>());
    let pulled_now = pulled.load(Ordering::SeqCst);
    assert!(
        pulled_now <= 100 + 3 * 2,
        "pulled {pulled_now} items for 100 results"
    );
}

#[test]
fn a_failing_item_surfaces_in_place_and_the_map_goes_on() {
    let pool = common::pool(2);
    for chunk in [1, 3, 100] {
        let results: Vec<_> = pool
            .map_with(
                |x: i32| {
                    assert!(x != 2 && x != 5, "item {x} fails");
                    x * 10
                },
                0..8,
                MapOptions::new().chunksize(chunk),
            )
            .unwrap()
            .collect();
        assert_eq!(results.len(), 8);
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(v, i as i32 * 10),
                Err(MapItemError::Failed(FutureError::Panicked(p))) => {
                    assert!(i == 2 || i == 5, "item {i} failed unexpectedly");
                    assert_eq!(p.message(), format!("item {i} fails"));
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
}

#[test]
fn try_collect_vec_and_internal_iteration_match_collect() {
    let pool = common::pool(3);
    let expected: Vec<u64> = (0..20_000).map(|x| x * 3).collect();
    for options in [
        MapOptions::new(),
        MapOptions::new().chunksize(1),
        MapOptions::new().chunksize(7).window(2),
    ] {
        let fast = pool
            .map_with(|x: u64| x * 3, 0..20_000, options.clone())
            .unwrap()
            .try_collect_vec()
            .unwrap();
        assert_eq!(fast, expected);
        // `fold` (behind `for_each`, `sum`, ...) takes whole chunks; same values, same order.
        let mut folded = Vec::new();
        pool.map_with(|x: u64| x * 3, 0..20_000, options)
            .unwrap()
            .for_each(|r| folded.push(r.unwrap()));
        assert_eq!(folded, expected);
    }
}

#[test]
fn try_collect_vec_survives_an_absurd_size_hint() {
    // `0..u64::MAX` says it has more items than memory could hold: no capacity panic, and a
    // failure partway ends the collection.
    let pool = common::pool(2);
    let error = pool
        .map(
            |x: u64| {
                assert!(x < 5000, "item {x} fails");
                x
            },
            0..u64::MAX,
        )
        .unwrap()
        .try_collect_vec()
        .unwrap_err();
    assert!(matches!(
        error,
        MapItemError::Failed(FutureError::Panicked(_))
    ));
}

#[test]
fn try_collect_vec_stops_at_the_first_failure_in_input_order() {
    let pool = common::pool(2);
    for chunk in [1, 3, 100] {
        let error = pool
            .map_with(
                |x: i32| {
                    assert!(x != 5 && x != 2, "item {x} fails");
                    x
                },
                0..8,
                MapOptions::new().chunksize(chunk),
            )
            .unwrap()
            .try_collect_vec()
            .unwrap_err();
        match error {
            MapItemError::Failed(FutureError::Panicked(p)) => {
                assert_eq!(p.message(), "item 2 fails", "chunksize {chunk}");
            }
            e => panic!("unexpected {e}"),
        }
    }
    // Folding sees the failures in place, like `next`.
    let failures = pool
        .map_with(
            |x: i32| {
                assert!(x % 4 != 1, "item {x} fails");
                x
            },
            0..100,
            MapOptions::new().chunksize(10),
        )
        .unwrap()
        .fold(Vec::new(), |mut at, r| {
            if let Err(MapItemError::Failed(FutureError::Panicked(p))) = r {
                at.push(p.message().to_owned());
            }
            at
        });
    let expected: Vec<String> = (0..100)
        .filter(|x| x % 4 == 1)
        .map(|x| format!("item {x} fails"))
        .collect();
    assert_eq!(failures, expected);
}

#[test]
fn map_timeout_is_measured_from_the_call_and_ends_the_map() {
    let pool = common::pool(1);
    let mut gate = Gate::new();
    let wait = gate.waiter();
    let options = MapOptions::new()
        .chunksize(1)
        .timeout(Duration::from_millis(30));
    let mut it = pool
        .map_with(
            move |x: i32| {
                if x == 1 {
                    wait.wait();
                }
                x
            },
            0..5,
            options,
        )
        .unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    match it.next() {
        Some(Err(MapItemError::Timeout(d))) => assert_eq!(d, Duration::from_millis(30)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(it.next().is_none(), "a timeout ends the map");
    gate.open();
}

#[test]
fn dropping_the_iterator_cancels_unstarted_work() {
    let pool = common::pool(1);
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&ran);
    let mut gate = Gate::new();
    let wait = gate.waiter();
    let it = pool
        .map_with(
            move |x: i32| {
                counter.fetch_add(1, Ordering::SeqCst);
                if x == 0 {
                    wait.wait();
                }
            },
            0..1000,
            MapOptions::new().window(10).chunksize(1),
        )
        .unwrap();
    drop(it);
    gate.open();
    pool.shutdown(true, false);
    let ran = ran.load(Ordering::SeqCst);
    assert!(ran <= 1, "{ran} items ran after the iterator was dropped");
}

#[test]
fn zero_window_and_zero_chunksize_are_clear_errors() {
    let pool = ThreadPoolExecutor::new();
    let err = pool
        .map_with(|x: i32| x, 0..3, MapOptions::new().window(0))
        .unwrap_err();
    assert_eq!(err, MapError::InvalidOption("window must be at least 1"));
    let err = pool
        .map_with(|x: i32| x, 0..3, MapOptions::new().chunksize(0))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid map option: chunksize must be at least 1"
    );
}

#[test]
fn an_absurd_timeout_means_no_deadline() {
    let pool = ThreadPoolExecutor::new();
    let out: Vec<i32> = pool
        .map_with(|x: i32| x, 0..3, MapOptions::new().timeout(Duration::MAX))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(out, vec![0, 1, 2]);
}

#[test]
fn map_after_shutdown_is_refused() {
    let pool = ThreadPoolExecutor::new();
    pool.shutdown(true, false);
    assert_eq!(pool.map(|x: i32| x, 0..3).unwrap_err(), MapError::ShutDown);
}

#[test]
fn map_unordered_yields_every_result_once() {
    let pool = common::pool(4);
    let mut out: Vec<u32> = pool
        .map_unordered(|x: u32| x + 1, 0..5000, MapOptions::new())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    out.sort_unstable();
    assert_eq!(out, (1..=5000).collect::<Vec<_>>());
}

#[test]
fn map_unordered_yields_in_completion_order() {
    let pool = common::pool(2);
    let mut gate = Gate::new();
    let wait = gate.waiter();
    let mut it = pool
        .map_unordered(
            move |x: i32| {
                if x == 0 {
                    wait.wait();
                }
                x
            },
            0..2,
            MapOptions::new().chunksize(1),
        )
        .unwrap();
    assert_eq!(
        it.next().unwrap().unwrap(),
        1,
        "the unblocked item comes first"
    );
    gate.open();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    assert!(it.next().is_none());
}

/// Where slow items meet: each slow item waits until `want` of them run at once (or
/// gives up after [`TOGETHER`]), and the high-water mark says how many ever ran together.
struct Rendezvous {
    want: usize,
    state: std::sync::Mutex<RendezvousState>,
    met: std::sync::Condvar,
}

#[derive(Default)]
struct RendezvousState {
    running: usize,
    most: usize,
    gave_up: bool,
}

/// How long a slow item waits for the others; only reached when they cannot all run at
/// once (the bug), so that a failing run ends instead of hanging.
const TOGETHER: Duration = Duration::from_secs(20);

impl Rendezvous {
    fn new(want: usize) -> Arc<Self> {
        Arc::new(Self {
            want,
            state: std::sync::Mutex::new(RendezvousState::default()),
            met: std::sync::Condvar::new(),
        })
    }

    fn arrive(&self) {
        let mut state = self.state.lock().unwrap();
        state.running += 1;
        state.most = state.most.max(state.running);
        self.met.notify_all();
        let (mut state, waited) = self
            .met
            .wait_timeout_while(state, TOGETHER, |s| s.most < self.want && !s.gave_up)
            .unwrap();
        if waited.timed_out() {
            // The others are stuck behind this item: stop waiting for them.
            state.gave_up = true;
            self.met.notify_all();
        }
        state.running -= 1;
    }

    fn most_at_once(&self) -> usize {
        self.state.lock().unwrap().most
    }
}

/// Issue 12, point 8: with adaptive chunking, the slow items at the end of a long run of
/// fast ones used to land in one chunk and run one after another on one worker while
/// the other workers idled. All four slow items must run at once on four workers, in
/// `map` and in `map_unordered`.
#[test]
fn issue_12_slow_items_after_fast_ones_run_on_every_worker() {
    let pool = common::pool(4);
    for unordered in [false, true] {
        let meeting = Rendezvous::new(4);
        let slow = Arc::clone(&meeting);
        let fetch = move |i: u64| {
            if i >= 1000 {
                slow.arrive();
            }
            i
        };
        let mut out: Vec<u64> = if unordered {
            pool.map_unordered(fetch, 0..1004, MapOptions::new())
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        } else {
            pool.map(fetch, 0..1004).unwrap().try_collect_vec().unwrap()
        };
        out.sort_unstable();
        assert_eq!(out, (0..1004).collect::<Vec<_>>());
        assert_eq!(
            meeting.most_at_once(),
            4,
            "slow items running at once (unordered: {unordered})"
        );
    }
}

/// Issue 12, point 9: a lazy map whose inputs and results are `Send` is `Send`: it can
/// be handed to another thread or held across an `.await` in a spawned task.
#[test]
fn issue_12_lazy_maps_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let pool = common::pool(2);
    let ordered = pool.map(|x: u64| x + 1, 0..10).unwrap();
    let unordered = pool
        .map_unordered(|x: u64| x + 1, 0..10, MapOptions::new())
        .unwrap();
    assert_send(&ordered);
    assert_send(&unordered);
    let (sum, count) = std::thread::scope(|scope| {
        let sum = scope.spawn(move || ordered.map(Result::unwrap).sum::<u64>());
        let count = scope.spawn(move || unordered.count());
        (sum.join().unwrap(), count.join().unwrap())
    });
    assert_eq!((sum, count), (55, 10));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let total = runtime
        .block_on(runtime.spawn(async {
            let pool = common::pool(2);
            let mut results = pool.map(|x: u64| x * 2, 0..100).unwrap();
            let first = results.next().unwrap().unwrap();
            // The map is held across an await, so the spawned future must be Send.
            tokio::task::yield_now().await;
            first + results.map(Result::unwrap).sum::<u64>()
        }))
        .unwrap();
    assert_eq!(total, 9900);
}

/// An input whose `size_hint` claims it has ended loses no items (the shared chunks of
/// issue 12 are cut by that hint).
#[test]
fn a_wrong_size_hint_loses_no_items() {
    struct Liar(std::ops::Range<u64>);
    impl Iterator for Liar {
        type Item = u64;
        fn next(&mut self) -> Option<u64> {
            self.0.next()
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (0, Some(0))
        }
    }
    let pool = common::pool(3);
    let out = pool
        .map(|x: u64| x + 1, Liar(0..50_000))
        .unwrap()
        .try_collect_vec()
        .unwrap();
    assert_eq!(out, (1..=50_000).collect::<Vec<_>>());
}
