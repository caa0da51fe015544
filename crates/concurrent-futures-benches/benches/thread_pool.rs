//! Thread pool benchmark of issue 2: our `ThreadPoolExecutor` side by side with rayon,
//! the `threadpool` crate, rusty_pool and tokio's blocking pool, in one run.
//!
//! ```text
//! cargo bench -p concurrent-futures-benches --bench thread_pool
//! ```
//!
//! A plain binary (`harness = false`) that prints tables: the ratios between libraries
//! are the point, and they read best side by side. Every figure is the median of
//! `BENCH_REPS` runs (default 5). Run without `--bench` (as `cargo test --benches`
//! does) it only smoke-tests each scenario with small sizes.
//!
//! Scenarios:
//! 1. tiny tasks (`i + 1`): submit all, then take every result through a per-task
//!    handle (ours, rusty_pool `evaluate`, tokio `spawn_blocking`) or a channel
//!    (rayon `spawn`, `threadpool`); at 2 workers and at our default worker count;
//! 2. ordered `map` of tiny items against rayon `par_iter().map().collect()`;
//! 3. 10,000 tasks that sleep 1 ms on 32 workers against the ideal;
//! 4. memory (VmRSS, VmHWM) of a `map` over the endless input `0..`;
//! 5. issue 12's mixed `map`: 1,000 instant items, then slow ones that sleep 50 ms
//!    (20 on 4 workers, 40 on 10), against the ideal (slow items / workers rounds of
//!    one real sleep each) and against `chunksize(1)`.

use std::hint::black_box;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use concurrent_futures::ThreadPoolExecutor;
use rayon::prelude::*;

/// The sizes of one run: full (`cargo bench`) or smoke (`cargo test --benches`).
#[derive(Debug, Clone, Copy)]
struct Sizes {
    tasks: u64,
    map_items: u64,
    sleep_tasks: u32,
    sleep_workers: usize,
    sleep_samples: u32,
    memory_marks: [u64; 3],
    reps: usize,
    /// Whether the targets are checked (not at smoke sizes).
    verdicts: bool,
}

const FULL: Sizes = Sizes {
    tasks: 1_000_000,
    map_items: 1_000_000,
    sleep_tasks: 10_000,
    sleep_workers: 32,
    sleep_samples: 500,
    memory_marks: [1_000_000, 5_000_000, 10_000_000],
    reps: 5,
    verdicts: true,
};

const SMOKE: Sizes = Sizes {
    tasks: 2_000,
    map_items: 2_000,
    sleep_tasks: 64,
    sleep_workers: 32,
    sleep_samples: 5,
    memory_marks: [1_000, 2_000, 3_000],
    reps: 1,
    verdicts: false,
};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mut sizes = if full { FULL } else { SMOKE };
    if let Some(reps) = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        sizes.reps = std::cmp::max(1, reps);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default_workers = ThreadPoolExecutor::new().max_workers();
    println!(
        "thread_pool bench: {cpus} CPUs, default max_workers = {default_workers}, \
         median of {} runs{}",
        sizes.reps,
        if full { "" } else { " (smoke run: sizes cut)" }
    );

    // `BENCH_ONLY=tiny|map|sleep|memory|mixed` runs one scenario (for profiling).
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut worker_counts = vec![2, default_workers];
    worker_counts.dedup();
    // Memory first, so that VmHWM is not the peak of the other scenarios.
    let memory = if wanted("memory") {
        map_memory(sizes)
    } else {
        Vec::new()
    };
    if wanted("tiny") {
        for &workers in &worker_counts {
            tiny_tasks(sizes, workers);
        }
    }
    if wanted("map") {
        for &workers in &worker_counts {
            ordered_map(sizes, workers);
        }
    }
    if wanted("sleep") {
        sleep_tasks(sizes);
    }
    if wanted("mixed") {
        for (workers, slow) in [(4, 20), (10, 40)] {
            mixed_map(sizes, workers, slow);
        }
    }
    for line in memory {
        println!("{line}");
    }
}

// ---------------------------------------------------------------------------------
// Measuring

/// One contender of a scenario: a name and a run that returns a checksum.
type Contender<'a> = (&'a str, Box<dyn FnMut() -> u64 + 'a>);

/// Runs every contender `reps` times, round-robin (so that a burst of load on the
/// shared machine hits all of them alike), and returns each one's median duration.
/// Each run's checksum must equal `expected`, so no contender can skip work.
fn medians(reps: usize, expected: u64, contenders: &mut [Contender<'_>]) -> Vec<Duration> {
    let mut times = vec![Vec::with_capacity(reps); contenders.len()];
    for _ in 0..reps {
        for ((name, run), times) in contenders.iter_mut().zip(&mut times) {
            // Let the previous contender's threads go to sleep first: rayon's idle
            // workers spin and yield for a while after a job, which would steal the
            // CPU from whoever runs next on two cores.
            std::thread::sleep(Duration::from_millis(20));
            let start = Instant::now();
            let sum = run();
            let elapsed = start.elapsed();
            assert_eq!(sum, expected, "{name}: wrong checksum");
            times.push(elapsed);
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_unstable();
            t[t.len() / 2]
        })
        .collect()
}

/// A target's verdict: "met" or "MISSED", or no verdict at smoke sizes.
fn verdict(sizes: Sizes, met: bool) -> &'static str {
    match (sizes.verdicts, met) {
        (false, _) => "n/a at smoke sizes",
        (true, true) => "met",
        (true, false) => "MISSED",
    }
}

/// Sum of `i + 1` for `i` in `0..n`.
fn checksum(n: u64) -> u64 {
    n * (n + 1) / 2
}

fn per_second(items: u64, time: Duration) -> f64 {
    items as f64 / time.as_secs_f64()
}

fn millions(rate: f64) -> String {
    format!("{:.2} M/s", rate / 1e6)
}

// ---------------------------------------------------------------------------------
// 1. Tiny tasks

fn ours_tiny(pool: &ThreadPoolExecutor, n: u64) -> u64 {
    let handles: Vec<_> = (0..n)
        .map(|i| pool.submit(move || i + 1).expect("pool is open"))
        .collect();
    handles
        .into_iter()
        .map(|h| h.result().expect("task succeeds"))
        .sum()
}

fn rayon_tiny(pool: &rayon::ThreadPool, n: u64) -> u64 {
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        pool.spawn(move || {
            let _ = tx.send(i + 1);
        });
    }
    drop(tx);
    rx.iter().sum()
}

fn threadpool_tiny(pool: &threadpool::ThreadPool, n: u64) -> u64 {
    let (tx, rx) = mpsc::channel();
    for i in 0..n {
        let tx = tx.clone();
        pool.execute(move || {
            let _ = tx.send(i + 1);
        });
    }
    drop(tx);
    rx.iter().sum()
}

fn rusty_tiny(pool: &rusty_pool::ThreadPool, n: u64) -> u64 {
    let handles: Vec<_> = (0..n).map(|i| pool.evaluate(move || i + 1)).collect();
    handles.into_iter().map(|h| h.await_complete()).sum()
}

fn tokio_tiny(rt: &tokio::runtime::Runtime, n: u64) -> u64 {
    let handles: Vec<_> = (0..n).map(|i| rt.spawn_blocking(move || i + 1)).collect();
    rt.block_on(async {
        let mut sum = 0;
        for h in handles {
            sum += h.await.expect("task succeeds");
        }
        sum
    })
}

fn tiny_tasks(sizes: Sizes, workers: usize) {
    let n = sizes.tasks;
    let expected = checksum(n);
    println!();
    println!(
        "1. {n} tiny tasks (i + 1), submit all then collect, {workers} workers, median of {}",
        sizes.reps
    );

    let ours_pool = ThreadPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("valid worker count");
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .expect("rayon pool");
    let threadpool_pool = threadpool::ThreadPool::new(workers);
    let rusty_pool = rusty_pool::ThreadPool::new(workers, workers, Duration::from_secs(60));
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(workers)
        .build()
        .expect("tokio runtime");
    let mut contenders: Vec<Contender<'_>> = vec![
        (
            "concurrent-futures submit + result",
            Box::new(|| ours_tiny(&ours_pool, n)),
        ),
        (
            "rusty_pool evaluate + await_complete",
            Box::new(|| rusty_tiny(&rusty_pool, n)),
        ),
        (
            "tokio spawn_blocking + await JoinHandle",
            Box::new(|| tokio_tiny(&tokio_rt, n)),
        ),
        (
            "rayon ThreadPool::spawn + channel",
            Box::new(|| rayon_tiny(&rayon_pool, n)),
        ),
        (
            "threadpool execute + channel",
            Box::new(|| threadpool_tiny(&threadpool_pool, n)),
        ),
    ];
    // Warm up: start every pool's threads before timing.
    medians(
        1,
        checksum(1000),
        &mut [
            ("ours", Box::new(|| ours_tiny(&ours_pool, 1000))),
            ("rusty", Box::new(|| rusty_tiny(&rusty_pool, 1000))),
            ("tokio", Box::new(|| tokio_tiny(&tokio_rt, 1000))),
            ("rayon", Box::new(|| rayon_tiny(&rayon_pool, 1000))),
            (
                "threadpool",
                Box::new(|| threadpool_tiny(&threadpool_pool, 1000)),
            ),
        ],
    );
    let times = medians(sizes.reps, expected, &mut contenders);
    let ours = times[0];
    let rusty = times[1];
    let ours_rate = per_second(n, ours);
    println!(
        "   {:<44} {:>10} {:>10} {:>11}",
        "contender", "time", "tasks/s", "ours/them"
    );
    for ((name, _), &time) in contenders.iter().zip(&times) {
        let rate = per_second(n, time);
        println!(
            "   {name:<44} {:>8.0}ms {:>10} {:>10.2}x",
            time.as_secs_f64() * 1e3,
            millions(rate),
            ours_rate / rate
        );
    }
    drop(contenders);
    rusty_pool.shutdown_join();
    let rusty_rate = per_second(n, rusty);
    println!(
        "   target: >= rusty_pool evaluate ({}) and >= 2 M/s: {}",
        verdict(sizes, ours_rate >= rusty_rate),
        verdict(sizes, ours_rate >= 2e6)
    );
}

// ---------------------------------------------------------------------------------
// 2. Ordered map

fn ordered_map(sizes: Sizes, workers: usize) {
    let n = sizes.map_items;
    let expected = checksum(n);
    let input: Vec<u64> = (0..n).collect();
    println!();
    println!(
        "2. ordered map over {n} items (i + 1) into a Vec, {workers} workers, median of {}",
        sizes.reps * 4
    );

    let ours_pool = ThreadPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("valid worker count");
    let rayon_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .expect("rayon pool");
    let mut contenders: Vec<Contender<'_>> = vec![
        (
            "concurrent-futures map (ordered)",
            Box::new(|| {
                let out: Vec<u64> = ours_pool
                    .map(|i: u64| i + 1, input.iter().copied())
                    .expect("pool is open")
                    .collect::<Result<_, _>>()
                    .expect("items succeed");
                black_box(&out);
                out.iter().sum()
            }),
        ),
        (
            "concurrent-futures map(..).try_collect_vec()",
            Box::new(|| {
                let out: Vec<u64> = ours_pool
                    .map(|i: u64| i + 1, input.iter().copied())
                    .expect("pool is open")
                    .try_collect_vec()
                    .expect("items succeed");
                black_box(&out);
                out.iter().sum()
            }),
        ),
        (
            "rayon par_iter().map().collect()",
            Box::new(|| {
                let out: Vec<u64> =
                    rayon_pool.install(|| input.par_iter().map(|&i| i + 1).collect());
                black_box(&out);
                out.iter().sum()
            }),
        ),
        (
            "sequential iter().map().collect()",
            Box::new(|| {
                let out: Vec<u64> = black_box(&input).iter().map(|&i| i + 1).collect();
                black_box(&out);
                out.iter().sum()
            }),
        ),
    ];
    // A map run is short: take more samples than for the tiny tasks.
    let times = medians(sizes.reps * 4, expected, &mut contenders);
    let (ours, batched, rayon) = (times[0], times[1], times[2]);
    println!(
        "   {:<44} {:>10} {:>10} {:>11}",
        "contender", "time", "items/s", "ours/them"
    );
    for ((name, _), &time) in contenders.iter().zip(&times) {
        println!(
            "   {name:<44} {:>8.1}ms {:>10} {:>10.2}x",
            time.as_secs_f64() * 1e3,
            millions(per_second(n, time)),
            time.as_secs_f64() / ours.as_secs_f64()
        );
    }
    let slowdown = ours.as_secs_f64() / rayon.as_secs_f64();
    let batched_slowdown = batched.as_secs_f64() / rayon.as_secs_f64();
    println!(
        "   collect::<Result<Vec<_>, _>>() (one next() per item) takes {slowdown:.2}x rayon's time"
    );
    println!(
        "   try_collect_vec() (a chunk at a time) takes {batched_slowdown:.2}x rayon's time; \
         target within 3x: {}",
        verdict(sizes, batched_slowdown <= 3.0)
    );
}

// ---------------------------------------------------------------------------------
// 3. Sleep tasks

fn sleep_tasks(sizes: Sizes) {
    let n = sizes.sleep_tasks;
    let workers = sizes.sleep_workers;
    let nap = Duration::from_millis(1);
    println!();
    println!(
        "3. {n} tasks that sleep 1 ms on {workers} workers, median of {}",
        sizes.reps
    );

    // The real length of one `sleep(1ms)` here (timer slack, scheduler): the median of
    // many, measured on this thread before the pool exists.
    let mut samples: Vec<Duration> = (0..sizes.sleep_samples)
        .map(|_| {
            let start = Instant::now();
            std::thread::sleep(nap);
            start.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let real_sleep = samples[samples.len() / 2];
    let rounds = f64::from(n) / workers as f64;
    let ideal = real_sleep.mul_f64(rounds);

    let pool = ThreadPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("valid worker count");
    // Start all 32 threads before timing.
    let warm: Vec<_> = (0..workers)
        .map(|_| pool.submit(move || std::thread::sleep(nap)).expect("open"))
        .collect();
    warm.into_iter().for_each(|h| h.result().expect("ok"));
    let expected = u64::from(n);
    let reference = threadpool::ThreadPool::new(workers);
    let mut contenders: Vec<Contender<'_>> = vec![
        (
            "concurrent-futures submit + result",
            Box::new(|| {
                let handles: Vec<_> = (0..n)
                    .map(|_| {
                        pool.submit(move || {
                            std::thread::sleep(nap);
                            1
                        })
                        .expect("pool is open")
                    })
                    .collect();
                handles.into_iter().map(|h| h.result().expect("ok")).sum()
            }),
        ),
        (
            "threadpool execute + channel",
            Box::new(|| {
                let (tx, rx) = mpsc::channel();
                for _ in 0..n {
                    let tx = tx.clone();
                    reference.execute(move || {
                        std::thread::sleep(nap);
                        let _ = tx.send(1);
                    });
                }
                drop(tx);
                rx.iter().sum()
            }),
        ),
        (
            "plain threads, no pool (n / workers sleeps each)",
            Box::new(|| {
                std::thread::scope(|scope| {
                    let threads: Vec<_> = (0..workers)
                        .map(|t| {
                            let share =
                                n as usize / workers + usize::from(t < n as usize % workers);
                            scope.spawn(move || {
                                for _ in 0..share {
                                    std::thread::sleep(nap);
                                }
                                share as u64
                            })
                        })
                        .collect();
                    threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
                })
            }),
        ),
    ];
    let times = medians(sizes.reps, expected, &mut contenders);
    let ours = times[0];
    let over = ours.as_secs_f64() / ideal.as_secs_f64();
    println!(
        "   real sleep(1ms) here: {:.3} ms (median of {} on one thread)",
        real_sleep.as_secs_f64() * 1e3,
        sizes.sleep_samples
    );
    println!(
        "   ideal = {n} x {:.3} ms / {workers} = {:.1} ms",
        real_sleep.as_secs_f64() * 1e3,
        ideal.as_secs_f64() * 1e3
    );
    println!("   {:<50} {:>8} {:>10}", "contender", "time", "vs ideal");
    for ((name, _), &time) in contenders.iter().zip(&times) {
        println!(
            "   {name:<50} {:>6.1}ms {:>9.3}x",
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() / ideal.as_secs_f64()
        );
    }
    println!(
        "   target: ours within 3% of ideal (<= 1.030x): {}",
        verdict(sizes, over <= 1.03)
    );
}

// ---------------------------------------------------------------------------------
// 5. Mixed map (issue 12): slow items after many instant ones

fn mixed_map(sizes: Sizes, workers: usize, slow: u64) {
    let fast = 1000;
    let nap = if sizes.verdicts {
        Duration::from_millis(50)
    } else {
        Duration::from_millis(1)
    };
    println!();
    println!(
        "5. map over {} items, the last {slow} sleep {} ms, {workers} workers, median of {}",
        fast + slow,
        nap.as_millis(),
        sizes.reps
    );
    let start = Instant::now();
    std::thread::sleep(nap);
    let real_sleep = start.elapsed();
    let rounds = slow.div_ceil(workers as u64);
    let ideal = real_sleep.mul_f64(rounds as f64);
    let pool = ThreadPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("valid worker count");
    let fetch = move |i: u64| {
        if i >= fast {
            std::thread::sleep(nap);
        }
        i + 1
    };
    let n = fast + slow;
    let mut contenders: Vec<Contender<'_>> = vec![
        (
            "concurrent-futures map (adaptive chunks)",
            Box::new(|| {
                pool.map(fetch, 0..n)
                    .expect("pool is open")
                    .try_collect_vec()
                    .expect("items succeed")
                    .iter()
                    .sum()
            }),
        ),
        (
            "concurrent-futures map_with(chunksize(1))",
            Box::new(|| {
                pool.map_with(
                    fetch,
                    0..n,
                    concurrent_futures::MapOptions::new().chunksize(1),
                )
                .expect("pool is open")
                .try_collect_vec()
                .expect("items succeed")
                .iter()
                .sum()
            }),
        ),
    ];
    let times = medians(sizes.reps, checksum(n), &mut contenders);
    println!(
        "   ideal = {rounds} rounds x {:.1} ms (one real sleep) = {:.1} ms",
        real_sleep.as_secs_f64() * 1e3,
        ideal.as_secs_f64() * 1e3
    );
    println!("   {:<50} {:>8} {:>10}", "contender", "time", "vs ideal");
    for ((name, _), &time) in contenders.iter().zip(&times) {
        println!(
            "   {name:<50} {:>6.1}ms {:>9.2}x",
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() / ideal.as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------------------------
// 4. Memory of a map over an endless input

/// VmRSS and VmHWM in KiB from /proc/self/status (Linux); `None` elsewhere.
fn memory_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Runs the memory scenario and returns its report lines (printed last).
fn map_memory(sizes: Sizes) -> Vec<String> {
    let mut out = vec![
        String::new(),
        "4. memory of an ordered map over the endless input 0.. (default pool), run first"
            .to_owned(),
    ];
    let Some(before) = memory_kib() else {
        out.push("   /proc/self/status unavailable: skipped".to_owned());
        return out;
    };
    let pool = ThreadPoolExecutor::new();
    let mut results = pool.map(|i: u64| i + 1, 0..).expect("pool is open");
    out.push(format!(
        "   {:>12} {:>12} {:>12}",
        "items", "VmRSS", "VmHWM"
    ));
    out.push(format!(
        "   {:>12} {:>8} KiB {:>8} KiB   (before map)",
        0, before.0, before.1
    ));
    let mut taken: u64 = 0;
    let mut readings = Vec::new();
    for mark in sizes.memory_marks {
        while taken < mark {
            let value = results.next().expect("endless").expect("items succeed");
            assert_eq!(value, taken + 1);
            taken += 1;
        }
        let (rss, hwm) = memory_kib().unwrap_or(before);
        readings.push(hwm);
        out.push(format!("   {taken:>12} {rss:>8} KiB {hwm:>8} KiB"));
    }
    drop(results);
    let first = readings.first().copied().unwrap_or(0);
    let last = readings.last().copied().unwrap_or(0);
    let growth = last.saturating_sub(first);
    out.push(format!(
        "   VmHWM growth from the first to the last mark: {growth} KiB; \
         target flat (< 1 MiB): {}",
        verdict(sizes, growth < 1024)
    ));
    out
}
