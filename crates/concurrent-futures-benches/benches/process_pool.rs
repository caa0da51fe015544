//! ProcessPoolExecutor throughput, against Python's ProcessPoolExecutor on the same
//! workload (run as a subprocess when `python3` is present) and, for the `primes`
//! workload, against the thread pool and a sequential loop; and how fast a pool starts many
//! workers with each start method.
//!
//! ```text
//! cargo bench -p concurrent-futures-benches --bench process_pool            # everything
//! cargo bench -p concurrent-futures-benches --bench process_pool -- --quick # no primes, no Python
//! BENCH_ONLY=chunk1000 cargo bench -p concurrent-futures-benches --bench process_pool  # profiling
//! BENCH_ONLY=startup cargo bench -p concurrent-futures-benches --bench process_pool    # start methods
//! BENCH_ONLY=mixed cargo bench -p concurrent-futures-benches --bench process_pool      # issue 12
//! ```
//!
//! A `harness = false` binary: worker processes are this executable started again, so
//! `main` hands over to `process_worker_main` first. Rates are the median of 5 runs.
//! Figures go to stdout; the latest are recorded in `crates/concurrent-futures/BENCHMARKS.md`.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use concurrent_futures::{MapOptions, ProcessPoolExecutor, StartMethod, ThreadPoolExecutor};

const WORKERS: usize = 2;

/// The tiny task: as cheap as a call can be.
fn tiny(x: u64) -> u64 {
    x * 2
}

/// Issue 12's mixed workload: items from 1000 on are slow.
fn fetch(i: u64) -> u64 {
    if i >= 1000 {
        std::thread::sleep(Duration::from_millis(50));
    }
    i
}

/// `map(fetch, 0..1020)` on 4 workers (20 slow items): adaptive chunks and `chunksize(1)`,
/// the median of `runs` each, against the ideal of 5 rounds of one 50 ms sleep.
fn mixed(runs: usize) {
    const MIXED_WORKERS: usize = 4;
    let pool = ProcessPoolExecutor::builder()
        .max_workers(MIXED_WORKERS)
        .build()
        .expect("build the pool");
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let ideal = start.elapsed().as_secs_f64() * 5.0;
    println!(
        "mixed map (issue 12): 0..1020, items >= 1000 sleep 50 ms, {MIXED_WORKERS} workers; \
         ideal 5 x one real sleep = {:.1} ms",
        ideal * 1e3
    );
    // Warm up: start the workers.
    let _ = pool.map(tiny, 0..100u64).map(Iterator::count);
    for (name, options) in [
        ("adaptive chunks", MapOptions::new()),
        ("chunksize(1)", MapOptions::new().chunksize(1)),
    ] {
        let times: Vec<f64> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let sum: u64 = pool
                    .map_with(fetch, 0..1020u64, options.clone())
                    .map_or(0, |results| results.map(|r| r.unwrap_or(0)).sum());
                assert_eq!(sum, 1019 * 1020 / 2, "every item came back");
                start.elapsed().as_secs_f64()
            })
            .collect();
        let time = median(times);
        println!(
            "  {name:<16} {:>7.1} ms ({:.2}x ideal)",
            time * 1e3,
            time / ideal
        );
    }
}

/// The workload of the `primes` example (the numbers of the book's `primes.py`).
#[path = "../../concurrent-futures/examples/common/primes.rs"]
mod primes;

use primes::is_prime;

/// The numbers, largest first as `proc_pool.py` takes them.
fn primes_largest_first() -> impl Iterator<Item = u64> {
    primes::NUMBERS.into_iter().rev()
}

fn pool() -> ProcessPoolExecutor {
    match ProcessPoolExecutor::builder().max_workers(WORKERS).build() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("cannot build the process pool: {e}");
            std::process::exit(2);
        }
    }
}

/// The median of some rates.
fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

/// Items per second of `map(tiny, 0..n)` with `chunksize`, the median of `runs`.
fn rust_map(chunksize: usize, n: u64, runs: usize) -> f64 {
    let pool = pool();
    // Warm up: start the workers and let the pipelining settle.
    let _ = pool
        .map_with(tiny, 0..10_000u64, MapOptions::new().chunksize(chunksize))
        .map(|it| it.count());
    let mut rates = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let options = MapOptions::new().chunksize(chunksize).window(1024);
        let sum: u64 = match pool.map_with(tiny, 0..n, options) {
            Ok(results) => results.map(|r| r.unwrap_or(0)).sum(),
            Err(e) => {
                eprintln!("map failed: {e}");
                std::process::exit(2);
            }
        };
        let rate = n as f64 / start.elapsed().as_secs_f64();
        assert_eq!(sum, n * (n - 1), "every item came back");
        rates.push(rate);
    }
    median(rates)
}

/// Tasks per second of `n` separate `submit(tiny, i)` calls, then collecting them (the
/// median of `runs`).
fn rust_submit(n: u64, runs: usize) -> f64 {
    let pool = pool();
    let mut rates = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let handles: Vec<_> = (0..n).filter_map(|i| pool.submit(tiny, i).ok()).collect();
        let sum: u64 = handles.into_iter().map(|h| h.result().unwrap_or(0)).sum();
        let rate = n as f64 / start.elapsed().as_secs_f64();
        assert_eq!(sum, n * (n - 1), "every task came back");
        rates.push(rate);
    }
    median(rates)
}

/// Items per second of Python's `ProcessPoolExecutor(2).map(tiny, range(n),
/// chunksize=c)`, or `None` without `python3`.
fn python_map(chunksize: usize, n: u64) -> Option<f64> {
    let script = format!(
        r#"
import time
from concurrent.futures import ProcessPoolExecutor

def tiny(x):
    return x * 2

if __name__ == "__main__":
    with ProcessPoolExecutor({WORKERS}) as ex:
        list(ex.map(tiny, range(1000), chunksize={chunksize}))
        t0 = time.perf_counter()
        total = sum(ex.map(tiny, range({n}), chunksize={chunksize}))
        elapsed = time.perf_counter() - t0
    assert total == {n} * ({n} - 1)
    print({n} / elapsed)
"#
    );
    let dir = std::env::temp_dir().join(format!("cf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join("tiny.py");
    std::fs::write(&path, script).ok()?;
    let output = Command::new("python3").arg(&path).output().ok();
    let _ = std::fs::remove_dir_all(&dir);
    let output = output?;
    if !output.status.success() {
        eprintln!(
            "python3 failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// Times `count` (which counts the primes among the 20 numbers) and checks its answer.
fn time_primes(count: impl FnOnce() -> usize) -> Duration {
    let start = Instant::now();
    let primes = count();
    let elapsed = start.elapsed();
    assert_eq!(primes, 9);
    elapsed
}

/// How many of a map's results are `Ok(true)`.
fn count_true<E>(results: impl Iterator<Item = Result<bool, E>>) -> usize {
    results.filter(|r| matches!(r, Ok(true))).count()
}

fn primes_process() -> Duration {
    let pool = pool();
    time_primes(|| {
        pool.map_with(
            is_prime,
            primes_largest_first(),
            MapOptions::new().chunksize(1),
        )
        .map_or(0, count_true)
    })
}

fn primes_threads() -> Duration {
    let pool = match ThreadPoolExecutor::builder().max_workers(WORKERS).build() {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("cannot build the thread pool: {e}");
            std::process::exit(2);
        }
    };
    time_primes(|| {
        pool.map_with(
            is_prime,
            primes_largest_first(),
            MapOptions::new().chunksize(1),
        )
        .map_or(0, count_true)
    })
}

fn primes_sequential() -> Duration {
    time_primes(|| {
        primes_largest_first()
            .filter(|&n| is_prime(std::hint::black_box(n)))
            .count()
    })
}

/// A task that reports when it started (wall clock, which both processes share) and then
/// keeps its worker busy, so that every task needs a worker of its own.
fn started_at(hold: Duration) -> SystemTime {
    let now = SystemTime::now();
    std::thread::sleep(hold);
    now
}

/// `workers` tasks submitted at once to a pool of `workers`: the time from the first submit
/// until the last worker ran its task (the last worker's start-up).
fn last_worker_start(method: StartMethod, workers: usize) -> Duration {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(workers)
        .start_method(method)
        .build()
        .expect("build the pool");
    let begin = SystemTime::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            pool.submit(started_at, Duration::from_millis(300))
                .expect("submit")
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.result().expect("a start time"))
        .map(|at| at.duration_since(begin).unwrap_or_default())
        .max()
        .unwrap_or_default()
}

/// Start-up of 194 workers (one per flag of `flags -a -m 194 --mode processes`), both start
/// methods taking turns, 5 rounds; medians.
fn startup() {
    const WORKERS: usize = 194;
    println!(
        "start-up: {WORKERS} tasks submitted at once to {WORKERS} workers, until the last one runs"
    );
    let (mut fork, mut spawn) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        fork.push(last_worker_start(StartMethod::ForkServer, WORKERS).as_secs_f64());
        spawn.push(last_worker_start(StartMethod::Spawn, WORKERS).as_secs_f64());
    }
    let (fork, spawn) = (median(fork), median(spawn));
    println!(
        "  ForkServer {:>6.1} ms   Spawn {:>6.1} ms   ({:.1}x faster, {:.2} against {:.2} ms a worker)",
        fork * 1e3,
        spawn * 1e3,
        spawn / fork,
        fork * 1e3 / WORKERS as f64,
        spawn * 1e3 / WORKERS as f64
    );
}

fn main() {
    concurrent_futures::process_worker_main();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing of ours and
    // only wants the binary to run briefly.
    let full = args.iter().any(|a| a == "--bench") || quick;
    let (n1, n1000, runs) = if full {
        (300_000, 30_000_000, 5)
    } else {
        (2_000, 100_000, 1)
    };

    if std::env::var("BENCH_ONLY").as_deref() == Ok("startup") {
        startup();
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("mixed") {
        mixed(runs);
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("chunk1000") {
        // For profiling: one scenario only.
        let rate = rust_map(1000, n1000, runs);
        println!("map chunksize 1000: {rate:.0} items/s");
        return;
    }
    println!("process pool, {WORKERS} workers, tiny task (x * 2)");
    let one = rust_map(1, n1, runs);
    println!("  map chunksize 1:      {:>14.0} items/s", one);
    let submit = rust_submit(n1, runs);
    println!("  submit + result:      {:>14.0} tasks/s", submit);
    let thousand = rust_map(1000, n1000, runs);
    println!("  map chunksize 1000:   {:>14.0} items/s", thousand);
    if !full {
        // A smoke run (`cargo test --benches`, debug build): no verdicts.
        return;
    }
    println!(
        "  targets: chunksize 1 >= 150000/s: {}; chunksize 1000 >= 30000000/s: {}",
        if one >= 150_000.0 { "met" } else { "MISSED" },
        if thousand >= 30_000_000.0 {
            "met"
        } else {
            "MISSED"
        },
    );

    if !quick {
        // Python and ours take turns (3 rounds), so that a burst of load on the shared
        // machine hits both alike; the ratio is of the medians.
        println!("python3 ProcessPoolExecutor({WORKERS}), same task, runs alternating with ours");
        for (chunksize, n_py, n_rust) in [(1, 20_000, n1), (1000, 2_000_000, n1000)] {
            let (mut py, mut ours) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                ours.push(rust_map(chunksize, n_rust, 1));
                match python_map(chunksize, n_py) {
                    Some(rate) => py.push(rate),
                    None => break,
                }
            }
            if py.is_empty() {
                println!("  python3 not available: no comparison");
                break;
            }
            let (py, ours) = (median(py), median(ours));
            println!(
                "  map chunksize {chunksize:<5}  python {py:>12.0} items/s   ours {ours:>12.0} items/s   \
                 ours/python = {:.1}x ({})",
                ours / py,
                if ours / py >= 25.0 {
                    "target >= 25x met"
                } else {
                    "target >= 25x MISSED"
                }
            );
        }
        println!("primes (20 numbers of primes.py, {WORKERS} workers)");
        let sequential = primes_sequential();
        println!("  sequential loop:      {:>8.3}s", sequential.as_secs_f64());
        let threads = primes_threads();
        println!("  thread pool:          {:>8.3}s", threads.as_secs_f64());
        let processes = primes_process();
        println!("  process pool:         {:>8.3}s", processes.as_secs_f64());
        startup();
        mixed(runs);
    }
}
