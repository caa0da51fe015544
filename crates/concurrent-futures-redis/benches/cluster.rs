//! The cluster executor's figures (issue 16, point 8), in one run against one private
//! `redis-server` (on a Unix socket, as the tests start it):
//!
//! - no-op tasks through `submit` and through `map`, 1 client and 2 worker processes
//!   (each with 1 child): tasks per second end to end, fenced commits included;
//! - single-task round trip: p50 and p99;
//! - redelivery latency after a child SIGKILL, and after a worker SIGKILL (lease 1 s);
//! - broker memory per queued task;
//! - client RSS over a `map` of 1,000,000 items.
//!
//! `cargo bench -p concurrent-futures-redis --bench cluster` (`-- --quick` for a short
//! run). Workers are this binary started again. With `CF_REDIS_BENCH_PYTHON` naming a
//! python that has Celery, RQ and Dramatiq (`bench/python.sh` makes that virtual
//! environment and runs this), each of them then does the same no-op load against the
//! same server (`bench/competitors.py`), and the ratios are printed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Holds, Redis, WorkerProc};
use concurrent_futures_redis::{ClusterExecutor, Task, Worker};

fn noop(x: u64) -> u64 {
    x
}

/// First delivery: notes the time and kills its own process (SIGKILL); the next one
/// returns how long ago that was, in microseconds.
fn kill_once(dir: String) -> u64 {
    let mark = std::path::Path::new(&dir).join("killed-at");
    match std::fs::read_to_string(&mark) {
        Ok(at) => now_micros().saturating_sub(at.trim().parse().unwrap_or(0)),
        Err(_) => {
            std::fs::write(&mark, now_micros().to_string()).expect("mark");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            0
        }
    }
}

fn hold(path: String) -> String {
    common::hold_task(&path)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

const NOOP: Task<u64, u64> = Task::new("noop", noop);
const KILL_ONCE: Task<String, u64> = Task::new("kill_once", kill_once);
const HOLD: Task<String, String> = Task::new("hold", hold);

fn worker_main() -> ExitCode {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let worker = Worker::builder()
        .broker(var(common::BROKER))
        .queue(var(common::QUEUE))
        .procs(var(common::PROCS).parse().unwrap_or(1))
        .prefetch(var(common::PREFETCH).parse().unwrap_or(256))
        .register(NOOP)
        .register(KILL_ONCE)
        .register(HOLD)
        .build()
        .expect("worker");
    eprintln!("ready {}", worker.consumer());
    match worker.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn used_memory(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(con).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs each Python queue on the same server and prints its rate and our ratio to it.
fn competitors(python: &str, redis: &Redis, n: u64, ours: f64) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/competitors.py");
    for name in ["celery", "rq", "dramatiq"] {
        let output = std::process::Command::new(python)
            .arg(script)
            .arg(name)
            .arg(redis.socket())
            .arg(n.to_string())
            .output();
        let line = match output {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
            Ok(out) => {
                println!(
                    "{name}: failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                continue;
            }
            Err(e) => {
                println!("{name}: cannot run {python}: {e}");
                continue;
            }
        };
        let rate: f64 = line
            .rsplit(" = ")
            .next()
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or(0.0);
        println!(
            "{line} (2 worker processes); ours is {:.0}x",
            ours / rate.max(1e-9)
        );
    }
}

fn main() -> ExitCode {
    concurrent_futures::process_worker_main();
    if std::env::var(common::ROLE).as_deref() == Ok("worker") {
        return worker_main();
    }
    if std::env::args().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let tasks: u64 = if quick { 20_000 } else { 200_000 };
    let map_items: u64 = if quick { 100_000 } else { 1_000_000 };

    let redis = Redis::start();
    println!(
        "concurrent-futures-redis bench: 1 client, 2 worker processes (1 child each), redis-server on a Unix socket"
    );

    // Throughput.
    {
        let _a = WorkerProc::start_with(&redis, "bench", "A", 1, 512);
        let _b = WorkerProc::start_with(&redis, "bench", "B", 1, 512);
        let cluster = ClusterExecutor::builder()
            .broker(redis.url())
            .queue("bench")
            .window(8192)
            .build()
            .expect("client");
        // Warm up: both workers' pools started.
        for n in 0..200 {
            cluster
                .submit(NOOP, n)
                .expect("submit")
                .result()
                .expect("warm-up");
        }
        let mut con = redis.con();
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut con)
            .expect("RESETSTAT");
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|n| cluster.submit(NOOP, n).expect("submit"))
            .collect();
        for handle in handles {
            handle.result().expect("no-op");
        }
        let elapsed = start.elapsed();
        let submit_elapsed = elapsed;
        println!(
            "submit: {tasks} no-op tasks in {:.2} s = {:.0} tasks/s (fenced commits)",
            elapsed.as_secs_f64(),
            tasks as f64 / elapsed.as_secs_f64()
        );
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut con)
            .expect("INFO");
        let mut calls: Vec<String> = stats
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let n: f64 = rest
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                let usec: f64 = rest
                    .split(',')
                    .find_map(|f| f.strip_prefix("usec="))?
                    .parse()
                    .ok()?;
                (n >= 10.0).then(|| {
                    format!(
                        "{name} {:.3}/task {:.2} us/task",
                        n / tasks as f64,
                        usec / tasks as f64
                    )
                })
            })
            .collect();
        calls.sort();
        println!("  broker commands: {}", calls.join("; "));
        let start = Instant::now();
        let sum: u64 = cluster
            .map(NOOP, 0..tasks, 100)
            .map(|r| r.expect("no-op"))
            .sum();
        assert_eq!(sum, tasks * (tasks - 1) / 2);
        let elapsed = start.elapsed();
        println!(
            "map (100 items a message): {tasks} no-op items in {:.2} s = {:.0} items/s",
            elapsed.as_secs_f64(),
            tasks as f64 / elapsed.as_secs_f64()
        );
        // Latency, one task at a time.
        let mut times: Vec<Duration> = (0..2000)
            .map(|n| {
                let start = Instant::now();
                cluster
                    .submit(NOOP, n)
                    .expect("submit")
                    .result()
                    .expect("no-op");
                start.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "round trip of one task: p50 {:.0} us, p99 {:.0} us",
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6
        );
        // Redelivery after a child SIGKILL.
        let mut waits = Vec::new();
        for _ in 0..(if quick { 5 } else { 20 }) {
            let dir = common::TempDir::new("bench-kill");
            let micros = cluster
                .submit(KILL_ONCE, dir.path().display().to_string())
                .expect("submit")
                .result()
                .expect("second delivery");
            waits.push(Duration::from_micros(micros));
        }
        waits.sort();
        println!(
            "redelivery after a child SIGKILL (kill to the next delivery running): p50 {:.1} ms, max {:.1} ms",
            percentile(&waits, 0.5).as_secs_f64() * 1e3,
            waits.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
        cluster.shutdown(true, false);
        let mut con = redis.con();
        let leftover: Vec<String> = redis::cmd("KEYS")
            .arg("{bench}:[rc]:*")
            .query(&mut con)
            .expect("KEYS");
        assert!(leftover.is_empty(), "{leftover:?}");
        if let Ok(python) = std::env::var("CF_REDIS_BENCH_PYTHON") {
            let ours = tasks as f64 / submit_elapsed.as_secs_f64();
            competitors(&python, &redis, if quick { 500 } else { 2000 }, ours);
        }
    }

    // Redelivery after a worker SIGKILL, lease 1 s.
    {
        let holds = Holds::new();
        let mut a = WorkerProc::start_with(&redis, "vanish", "A", 1, 1);
        let cluster = ClusterExecutor::builder()
            .broker(redis.url())
            .queue("vanish")
            .lease(Duration::from_secs(1))
            .build()
            .expect("client");
        let _b;
        let handle = cluster.submit(HOLD, holds.path()).expect("submit");
        let first = holds.next();
        _b = WorkerProc::start_with(&redis, "vanish", "B", 1, 1);
        let killed = Instant::now();
        a.kill();
        common::signal_pid(first.pid, nix::sys::signal::Signal::SIGKILL);
        let second = holds.next();
        let waited = killed.elapsed();
        second.release();
        assert_eq!(handle.result().expect("claimed"), "B");
        println!(
            "redelivery after a worker SIGKILL (lease 1 s): {:.0} ms from the kill to the task running on another worker",
            waited.as_secs_f64() * 1e3
        );
    }

    // Broker memory per queued task (no workers).
    {
        let mut con = redis.con();
        let queued: u64 = if quick { 10_000 } else { 100_000 };
        let cluster = ClusterExecutor::builder()
            .broker(redis.url())
            .queue("memory")
            .window(usize::try_from(queued).unwrap_or(usize::MAX) + 1)
            .build()
            .expect("client");
        let before = used_memory(&mut con);
        let handles: Vec<_> = (0..queued)
            .map(|n| cluster.submit(NOOP, n).expect("submit"))
            .collect();
        let mut seen = 0;
        while seen < queued {
            // The writer's pipelines are asynchronous: wait until the stream has them all.
            let len: u64 = redis::cmd("XLEN")
                .arg("{memory}:tasks")
                .query(&mut con)
                .expect("XLEN");
            seen = len;
        }
        let after = used_memory(&mut con);
        println!(
            "broker memory per queued no-op task: {:.0} bytes ({queued} tasks, {} bytes)",
            (after.saturating_sub(before)) as f64 / queued as f64,
            after.saturating_sub(before)
        );
        drop(handles);
        cluster.shutdown(true, true);
    }

    // Client memory over a long map.
    {
        let _a = WorkerProc::start_with(&redis, "map", "A", 1, 64);
        let _b = WorkerProc::start_with(&redis, "map", "B", 1, 64);
        let cluster = ClusterExecutor::builder()
            .broker(redis.url())
            .queue("map")
            .window(16)
            .build()
            .expect("client");
        let before = common::rss_kb();
        let mut peak = before;
        let start = Instant::now();
        let mut count = 0u64;
        for (i, r) in cluster.map(NOOP, 0..map_items, 1000).enumerate() {
            r.expect("no-op");
            count += 1;
            if i % 50_000 == 0 {
                peak = peak.max(common::rss_kb());
            }
        }
        assert_eq!(count, map_items);
        println!(
            "map over {map_items} items (1000 a message, window 16): {:.2} s, client RSS {} kB before, {} kB at most (+{} kB), at most {} messages in flight",
            start.elapsed().as_secs_f64(),
            before,
            peak,
            peak - before,
            cluster.stats().max_in_flight
        );
    }
    ExitCode::SUCCESS
}
