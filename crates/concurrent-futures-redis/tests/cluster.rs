//! ClusterExecutor tests (issue 16, point 4). A `harness = false` binary: workers are
//! this executable started again (`CF_REDIS_TEST_ROLE=worker`), whose own pool children
//! are forks of it too, so `main` must hand over to `process_worker_main` first, which
//! libtest's generated `main` cannot do. Each test starts its own `redis-server` on a
//! Unix socket in a temporary directory and stops it. Tasks are held in known states
//! through a Unix socket ([`common::Holds`]); worker progress is read from their stderr
//! (a pipe); nothing sleeps, and the only deadlines guard against hangs.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use common::{HANG, Holds, Redis, TempDir, WorkerProc};
use concurrent_futures::{FutureError, ReturnWhen, ThreadPoolExecutor, as_completed, wait};
use concurrent_futures_redis::{ClusterExecutor, OnDataLoss, SubmitError, Task, TaskError, Worker};
use libtest_mimic::{Arguments, Failed, Trial};
use nix::sys::signal::Signal;

// ---------------------------------------------------------------- tasks

fn square(x: u64) -> u64 {
    x * x
}

fn square32(x: u32) -> u32 {
    x * x
}

fn fallible(x: i64) -> Result<i64, String> {
    if x < 0 {
        Err(format!("{x} is negative"))
    } else {
        Ok(x)
    }
}

/// The line of `boom`'s panic, for the location check.
const BOOM_LINE: u32 = line!() + 6;

/// Leaves a mark in `dir` (so the test can count runs), then panics.
fn boom(dir: String) -> u32 {
    let mark = std::path::Path::new(&dir).join(format!("run-{}", std::process::id()));
    std::fs::write(mark, b"").expect("mark");
    panic!("boom in {}", std::process::id());
}

/// Aborts on the first delivery of `n` (the mark in `dir` says it happened), returns
/// `n` on the next.
fn crash_once((dir, n): (String, u64)) -> u64 {
    let mark = std::path::Path::new(&dir).join(n.to_string());
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(mark)
        .is_ok()
    {
        std::process::abort();
    }
    n
}

/// The fault run's task: about one call in 64 (chosen by a hash of `n`) aborts its
/// process on its first delivery.
fn fault_task((dir, n): (String, u64)) -> u64 {
    if n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58 == 0 {
        return crash_once((dir, n));
    }
    n
}

fn always_abort(_: u32) -> u32 {
    std::process::abort()
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn hold(path: String) -> String {
    common::hold_task(&path)
}

const SQUARE: Task<u64, u64> = Task::new("square", square);
const FALLIBLE: Task<i64, Result<i64, String>> = Task::new("fallible", fallible);
const BOOM: Task<String, u32> = Task::new("boom", boom);
const CRASH_ONCE: Task<(String, u64), u64> = Task::new("crash_once", crash_once);
const ALWAYS_ABORT: Task<u32, u32> = Task::new("always_abort", always_abort);
const HOLD: Task<String, String> = Task::new("hold", hold);
const FAULT: Task<(String, u64), u64> = Task::new("fault", fault_task);
/// The pid of the process that runs it: registered for the process pool...
const PID: Task<(), u32> = Task::new("pid", pid);
/// ... and as I/O bound, on the worker's threads.
const PID_IO: Task<(), u32> = Task::new("pid_io", pid);
/// Not registered by the workers.
const UNREGISTERED: Task<u64, u64> = Task::new("not_registered", square);
/// "square" with other types: what a client of another build would send.
const SQUARE_OTHER_BUILD: Task<u32, u32> = Task::new("square", square32);

// ---------------------------------------------------------------- roles

/// This binary as a worker: serves the queue until killed.
fn worker_main() -> ExitCode {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let worker = Worker::builder()
        .broker(var(common::BROKER))
        .queue(var(common::QUEUE))
        .procs(var(common::PROCS).parse().unwrap_or(2))
        .prefetch(var(common::PREFETCH).parse().unwrap_or(256))
        .register(SQUARE)
        .register(FALLIBLE)
        .register(BOOM)
        .register(CRASH_ONCE)
        .register(ALWAYS_ABORT)
        .register(HOLD)
        .register(FAULT)
        .register(PID)
        .register_io(PID_IO)
        .build();
    let worker = match worker {
        Ok(worker) => worker,
        Err(e) => {
            eprintln!("worker build failed: {e}");
            return ExitCode::from(3);
        }
    };
    eprintln!("ready {}", worker.consumer());
    match worker.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker failed: {e}");
            ExitCode::from(4)
        }
    }
}

/// This binary as a client that submits five tasks, says its id and waits to be killed.
fn client_main() -> ExitCode {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let cluster = ClusterExecutor::builder()
        .broker(var(common::BROKER))
        .queue(var(common::QUEUE))
        .client_ttl(Duration::from_millis(500))
        .build()
        .expect("client");
    let handles: Vec<_> = (0..5)
        .map(|n| cluster.submit(SQUARE, n).expect("submit"))
        .collect();
    println!("{:016x}", cluster.client_id());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line); // killed while waiting here
    drop(handles);
    ExitCode::SUCCESS
}

// ---------------------------------------------------------------- helpers

fn client(redis: &Redis, queue: &str) -> ClusterExecutor {
    ClusterExecutor::builder()
        .broker(redis.url())
        .queue(queue)
        .build()
        .expect("build the client")
}

fn xlen(con: &mut redis::Connection, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query(con).expect("XLEN")
}

/// Blocks until the stream `key` has had `n` entries added (read through the broker).
fn wait_entries(con: &mut redis::Connection, key: &str, n: usize) {
    let mut last = String::from("0");
    let mut seen = 0;
    while seen < n {
        let reply: redis::Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(HANG.as_millis() as u64)
            .arg("STREAMS")
            .arg(key)
            .arg(&last)
            .query(con)
            .expect("XREAD");
        assert!(
            !matches!(reply, redis::Value::Nil),
            "no entries in {key} in time"
        );
        // [[key, [[id, fields], ...]]]
        let mut ids = Vec::new();
        if let redis::Value::Array(streams) = reply {
            for stream in streams {
                let redis::Value::Array(mut pair) = stream else {
                    continue;
                };
                let Some(redis::Value::Array(entries)) = pair.pop() else {
                    continue;
                };
                for entry in entries {
                    let redis::Value::Array(parts) = entry else {
                        continue;
                    };
                    if let Some(redis::Value::BulkString(id)) = parts.into_iter().next() {
                        ids.push(String::from_utf8_lossy(&id).into_owned());
                    }
                }
            }
        }
        seen += ids.len();
        if let Some(id) = ids.last() {
            last.clone_from(id);
        }
    }
}

/// Tasks of queue `q` that are queued or held by a worker: the group's lag (entries
/// not delivered yet) plus its pending entries. Acknowledged entries that wait for a
/// trim do not count.
fn unfinished(con: &mut redis::Connection) -> i64 {
    let groups: redis::Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("{q}:tasks")
        .query(con)
        .expect("XINFO");
    let mut total = 0;
    if let redis::Value::Array(groups) = groups {
        for group in groups {
            let redis::Value::Array(fields) = group else {
                continue;
            };
            for pair in fields.chunks(2) {
                if let [redis::Value::BulkString(name), redis::Value::Int(n)] = pair
                    && (name == b"pending" || name == b"lag")
                {
                    total += n;
                }
            }
        }
    }
    total
}

fn task_error(e: &FutureError) -> &TaskError {
    TaskError::of(e).unwrap_or_else(|| panic!("expected a cluster error, got {e:?}"))
}

// ---------------------------------------------------------------- tests

/// Point 4, first bullet: a task's `Err` is its value, a panic is `Panicked` with the
/// message and location, and neither runs again. Handles mix with a thread pool's.
fn errors_and_panics_fail_their_future_once() {
    let redis = Redis::start();
    let _worker = WorkerProc::start(&redis, "q", "A", 2);
    let cluster = client(&redis, "q");
    assert_eq!(cluster.submit(SQUARE, 12).unwrap().result().unwrap(), 144);
    assert_eq!(
        cluster.submit(FALLIBLE, -3).unwrap().result().unwrap(),
        Err(String::from("-3 is negative"))
    );
    let marks = TempDir::new("boom");
    let dir = marks.path().display().to_string();
    match cluster.submit(BOOM, dir).unwrap().result() {
        Err(FutureError::Panicked(p)) => {
            assert!(p.message().starts_with("boom in "), "{}", p.message());
            let at = p.location().expect("a location");
            assert!(at.file().ends_with("cluster.rs"), "{at}");
            assert_eq!(at.line(), BOOM_LINE);
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    let runs = std::fs::read_dir(marks.path()).unwrap().count();
    assert_eq!(runs, 1, "a panicking task is not delivered again");
    // Cluster and thread-pool handles in one as_completed.
    let threads = ThreadPoolExecutor::new();
    let local = threads.submit(|| 7u64).unwrap();
    let remote = cluster.submit(SQUARE, 5).unwrap();
    let mut values: Vec<u64> = as_completed(vec![local, remote], Some(HANG))
        .map(|h| h.unwrap().result().unwrap())
        .collect();
    values.sort_unstable();
    assert_eq!(values, [7, 25]);
    assert_eq!(cluster.stats().unexpected_results, 0);
}

/// Bad input: a task the worker does not know, or knows with other types, fails with
/// a clear error and is never run.
fn unknown_tasks_and_other_signatures_are_refused() {
    let redis = Redis::start();
    let worker = WorkerProc::start(&redis, "q", "A", 1);
    let cluster = client(&redis, "q");
    let e = cluster
        .submit(UNREGISTERED, 3)
        .unwrap()
        .result()
        .unwrap_err();
    assert!(
        matches!(task_error(&e), TaskError::UnknownTask { task, .. } if task == "not_registered")
    );
    assert!(
        e.to_string()
            .contains("does not know the task \"not_registered\""),
        "{e}"
    );
    let e = cluster
        .submit(SQUARE_OTHER_BUILD, 3)
        .unwrap()
        .result()
        .unwrap_err();
    assert!(
        matches!(task_error(&e), TaskError::SignatureMismatch { task, .. } if task == "square")
    );
    assert!(e.to_string().contains("another signature"), "{e}");
    worker.wait_line("refused task");
    // The worker is fine.
    assert_eq!(cluster.submit(SQUARE, 3).unwrap().result().unwrap(), 9);
}

/// Bad input: a message that does not decode goes to the dead-letter stream with the
/// reason; the worker goes on.
fn undecodable_messages_are_dead_lettered() {
    let redis = Redis::start();
    let worker = WorkerProc::start(&redis, "q", "A", 1);
    let mut con = redis.con();
    let _: String = redis::cmd("XADD")
        .arg("{q}:tasks")
        .arg("*")
        .arg("t")
        .arg(b"\xff\xff\xff\xff garbage".as_slice())
        .query(&mut con)
        .unwrap();
    // Blocks until the worker moved it.
    let dead: redis::Value = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(HANG.as_millis() as u64)
        .arg("STREAMS")
        .arg("{q}:dead")
        .arg("0")
        .query(&mut con)
        .unwrap();
    let text = format!("{dead:?}");
    assert!(text.contains("does not decode"), "{text}");
    worker.wait_line("does not decode");
    assert_eq!(unfinished(&mut con), 0);
    let cluster = client(&redis, "q");
    assert_eq!(cluster.submit(SQUARE, 4).unwrap().result().unwrap(), 16);

    // A task message a worker cannot read from a client it can name (as a client of
    // another version would write one): the client's future fails, saying why. The
    // queue "p" has no worker yet, so the client's own message can be swapped first.
    let other = client(&redis, "p");
    let handle = other.submit(SQUARE, 5).unwrap();
    wait_entries(&mut con, "{p}:tasks", 1);
    let () = redis::cmd("DEL").arg("{p}:tasks").query(&mut con).unwrap();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("{p}:tasks")
        .arg("workers")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("{p}:tasks")
        .arg("*")
        .arg("t")
        .arg(b"\xff\xff\xff\xff from another version".as_slice())
        .arg("k")
        .arg(format!("{:016x}:0", other.client_id()))
        .query(&mut con)
        .unwrap();
    let _p = WorkerProc::start(&redis, "p", "P", 1);
    let e = handle.result().unwrap_err();
    assert!(
        matches!(task_error(&e), TaskError::Undecodable { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("could not read the task"), "{e}");
}

/// Bad input: URLs that do not parse, a broker that is down, bad options: clear errors
/// at once.
fn bad_urls_and_a_broker_that_is_down_are_clear_errors() {
    let e = ClusterExecutor::builder()
        .broker("http://localhost:6379")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("\"http\""), "{e}");
    let e = ClusterExecutor::builder()
        .broker("localhost")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("not a URL"), "{e}");
    let e = ClusterExecutor::builder().build().unwrap_err();
    assert!(e.to_string().contains("no broker"), "{e}");
    let dir = TempDir::new("down");
    let url = format!("redis+unix://{}/none.sock", dir.path().display());
    let e = ClusterExecutor::builder().broker(&url).build().unwrap_err();
    assert!(e.to_string().contains("cannot reach the broker"), "{e}");
    let e = Worker::builder()
        .broker(&url)
        .register(SQUARE)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("cannot reach the broker"), "{e}");
    let e = Worker::builder().broker(&url).build().unwrap_err();
    assert!(e.to_string().contains("no task registered"), "{e}");
    let e = ClusterExecutor::builder()
        .broker(&url)
        .queue("a b")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("queue name"), "{e}");
    let e = ClusterExecutor::builder()
        .broker(&url)
        .window(0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("window"), "{e}");
}

/// Point 4, second bullet: a child killed on a live host runs the task again at once:
/// the lease is an hour, so only the immediate redelivery can finish it in time.
fn a_killed_child_runs_its_task_again_at_once() {
    let redis = Redis::start();
    let worker = WorkerProc::start(&redis, "q", "A", 2);
    let cluster = ClusterExecutor::builder()
        .broker(redis.url())
        .queue("q")
        .lease(Duration::from_secs(3600))
        .build()
        .unwrap();
    let marks = TempDir::new("crash");
    let dir = marks.path().display().to_string();
    let handle = cluster.submit(CRASH_ONCE, (dir, 41)).unwrap();
    assert_eq!(handle.result_timeout(HANG).unwrap(), 41);
    assert!(
        marks.path().join("41").exists(),
        "the first delivery crashed"
    );
    let line = worker.wait_line("died");
    assert!(line.contains("delivery 1 of 3"), "{line}");
}

/// Point 4, fifth bullet: a task that kills every process it runs in fails after
/// `max_deliveries` with each attempt listed, goes to the dead-letter stream, and no
/// other task is blamed.
fn a_task_that_kills_every_child_is_dead_lettered_with_its_attempts() {
    let redis = Redis::start();
    let _worker = WorkerProc::start(&redis, "q", "A", 2);
    let cluster = ClusterExecutor::builder()
        .broker(redis.url())
        .queue("q")
        .max_deliveries(3)
        .build()
        .unwrap();
    let bad = cluster.submit(ALWAYS_ABORT, 1).unwrap();
    let good: Vec<_> = (0..50u64)
        .map(|n| cluster.submit(SQUARE, n).unwrap())
        .collect();
    let e = bad.result_timeout(HANG).unwrap_err();
    let e = match e {
        concurrent_futures::ResultTimeoutError::Failed(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    };
    let why = task_error(&e);
    let attempts = why.attempts().expect("attempts");
    assert_eq!(attempts.len(), 3, "{why}");
    for attempt in attempts {
        assert_eq!(attempt.signal(), Some(6), "{attempt}");
        assert!(attempt.child_pid().is_some(), "{attempt}");
        assert!(!attempt.host().is_empty());
        assert!(!attempt.is_lease_expired());
    }
    let text = e.to_string();
    assert!(
        text.contains("3 deliveries") && text.contains("killed by signal 6"),
        "{text}"
    );
    for (n, handle) in good.into_iter().enumerate() {
        assert_eq!(handle.result().unwrap(), (n * n) as u64);
    }
    let mut con = redis.con();
    assert_eq!(xlen(&mut con, "{q}:dead"), 1);
}

/// Point 4, third bullet: the tasks of a worker that vanished (SIGKILL of the worker
/// and of its child: the whole host) are claimed by another after the lease.
fn a_vanished_workers_task_is_claimed_by_another() {
    let redis = Redis::start();
    let holds = Holds::new();
    let mut a = WorkerProc::start(&redis, "q", "A", 1);
    let cluster = ClusterExecutor::builder()
        .broker(redis.url())
        .queue("q")
        .lease(Duration::from_millis(500))
        .build()
        .unwrap();
    let handle = cluster.submit(HOLD, holds.path()).unwrap();
    let first = holds.next();
    assert_eq!(first.worker, "A");
    a.kill();
    common::signal_pid(first.pid, Signal::SIGKILL);
    let b = WorkerProc::start(&redis, "q", "B", 1);
    let second = holds.next();
    assert_eq!(second.worker, "B");
    b.wait_line("whose lease expired");
    second.release();
    assert_eq!(handle.result_timeout(HANG).unwrap(), "B");
    assert_eq!(cluster.stats().unexpected_results, 0);
}

/// Point 4, fourth bullet: a worker stopped past its lease loses its task to another;
/// when it resumes it cannot deliver (its heartbeat finds the entry gone and stops the
/// task; a commit would be refused by the fence), and the future gets one result.
fn a_worker_stopped_past_its_lease_cannot_deliver() {
    let redis = Redis::start();
    let holds = Holds::new();
    let a = WorkerProc::start(&redis, "q", "A", 1);
    let cluster = ClusterExecutor::builder()
        .broker(redis.url())
        .queue("q")
        .lease(Duration::from_millis(500))
        .build()
        .unwrap();
    let handle = cluster.submit(HOLD, holds.path()).unwrap();
    let first = holds.next();
    assert_eq!(first.worker, "A");
    a.signal(Signal::SIGSTOP);
    let b = WorkerProc::start(&redis, "q", "B", 1);
    let second = holds.next();
    assert_eq!(second.worker, "B");
    b.wait_line("whose lease expired");
    second.release();
    assert_eq!(handle.result_timeout(HANG).unwrap(), "B");
    a.signal(Signal::SIGCONT);
    a.wait_line("lost the lease");
    first.wait_closed(); // A killed its child
    // A round trip through A's queue after it resumed: its commit, had it made one,
    // came before this result.
    assert_eq!(cluster.submit(SQUARE, 9).unwrap().result().unwrap(), 81);
    assert_eq!(cluster.stats().unexpected_results, 0);
}

/// Point 4, sixth bullet (queued): `cancel()` removes the task from the stream and
/// wakes `wait` at once.
fn cancel_of_a_queued_task_removes_it_and_wakes_wait() {
    let redis = Redis::start();
    let cluster = client(&redis, "q"); // no worker: the task stays queued
    let handles = vec![cluster.submit(SQUARE, 3).unwrap()];
    std::thread::scope(|s| {
        let waiter = s.spawn(|| wait(&handles, Some(HANG), ReturnWhen::AllCompleted));
        assert!(handles[0].cancel());
        let sets = waiter.join().unwrap();
        assert_eq!(sets.done.len(), 1);
        assert!(sets.not_done.is_empty());
    });
    assert!(handles[0].is_cancelled());
    cluster.shutdown(true, false); // the writer has sent the cancellation
    let mut con = redis.con();
    assert_eq!(xlen(&mut con, "{q}:tasks"), 0);
    let keys: Vec<String> = redis::cmd("KEYS").arg("{q}:r:*").query(&mut con).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// Point 4, sixth bullet (running): `cancel()` of a running task kills the child
/// running it; the worker goes on.
fn cancel_of_a_running_task_kills_its_child() {
    let redis = Redis::start();
    let holds = Holds::new();
    let worker = WorkerProc::start(&redis, "q", "A", 1);
    let cluster = client(&redis, "q");
    let handle = cluster.submit(HOLD, holds.path()).unwrap();
    let held = holds.next();
    assert!(handle.cancel());
    assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
    worker.wait_line("cancelled; stopped it");
    held.wait_closed();
    assert_eq!(cluster.submit(SQUARE, 6).unwrap().result().unwrap(), 36);
    assert_eq!(cluster.stats().unexpected_results, 0);
}

/// Point 4, seventh bullet: a client that dies leaves nothing behind: its result
/// stream expires and workers drop its queued tasks.
fn a_dead_client_leaves_nothing_behind() {
    let redis = Redis::start();
    let mut con = redis.con();
    let mut client = Command::new(std::env::current_exe().unwrap())
        .env(common::ROLE, "client")
        .env(common::BROKER, redis.url())
        .env(common::QUEUE, "q")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut id = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut id)
        .unwrap();
    let id = id.trim().to_owned();
    wait_entries(&mut con, "{q}:tasks", 5);
    let results = format!("{{q}}:r:{id}");
    let mut events = redis.con();
    let mut pubsub = events.as_pubsub();
    pubsub.subscribe("__keyevent@0__:expired").unwrap();
    client.kill().unwrap();
    client.wait().unwrap();
    loop {
        let message = pubsub.get_message().expect("an expiry event in time");
        if message.get_payload::<String>().unwrap() == results {
            break;
        }
    }
    drop(pubsub);
    let worker = WorkerProc::start(&redis, "q", "A", 1);
    // The worker may settle the five in more than one batch: one line per batch.
    let mut dropped = 0;
    while dropped < 5 {
        let line = worker.wait_line("dropped");
        let (count, rest) = line
            .split_once("dropped ")
            .and_then(|(_, rest)| rest.split_once(' '))
            .expect("dropped N tasks of client ID");
        assert!(rest.starts_with(&format!("tasks of client {id}")), "{line}");
        dropped += count.parse::<usize>().expect("a count");
    }
    assert_eq!(dropped, 5);
    let lingering: Vec<String> = redis::cmd("KEYS")
        .arg("{q}:[rc]:*")
        .query(&mut con)
        .unwrap();
    assert!(lingering.is_empty(), "{lingering:?}");
    assert_eq!(unfinished(&mut con), 0);
}

/// Point 4, eighth bullet: a broker killed and restarted with its append-only file
/// loses no future: the client and the worker reconnect, a task held across the
/// restart commits, the queued ones run.
fn a_broker_restart_loses_no_future() {
    let mut redis = Redis::start_with(true);
    let holds = Holds::new();
    let _worker = WorkerProc::start(&redis, "q", "A", 1);
    let cluster = client(&redis, "q");
    let held = cluster.submit(HOLD, holds.path()).unwrap();
    let task = holds.next();
    let queued: Vec<_> = (0..50u64)
        .map(|n| cluster.submit(SQUARE, n).unwrap())
        .collect();
    redis.restart();
    task.release();
    assert_eq!(held.result_timeout(HANG).unwrap(), "A");
    for (n, handle) in queued.into_iter().enumerate() {
        assert_eq!(handle.result_timeout(HANG).unwrap(), (n * n) as u64);
    }
    // A batch of XADDs cut by the kill is sent again: a task may then run twice, and
    // its second result is dropped (second_runs); none is unexpected.
    assert_eq!(cluster.stats().unexpected_results, 0);
}

/// Point 4, eighth bullet: a broker that comes back without its data: the client
/// resubmits what it holds (the default) or fails it clearly.
fn a_broker_that_lost_its_data_resubmits_or_fails() {
    let mut redis = Redis::start();
    let resubmitting = ClusterExecutor::builder()
        .broker(redis.url())
        .queue("q")
        .client_ttl(Duration::from_millis(600))
        .build()
        .unwrap();
    let failing = ClusterExecutor::builder()
        .broker(redis.url())
        .queue("q")
        .client_ttl(Duration::from_millis(600))
        .on_data_loss(OnDataLoss::Fail)
        .build()
        .unwrap();
    let kept: Vec<_> = (0..5u64)
        .map(|n| resubmitting.submit(SQUARE, n).unwrap())
        .collect();
    let lost = failing.submit(SQUARE, 9).unwrap();
    wait_entries(&mut redis.con(), "{q}:tasks", 6);
    redis.restart_empty();
    let e = lost.result_timeout(HANG).unwrap_err();
    let concurrent_futures::ResultTimeoutError::Failed(e) = e else {
        panic!("timed out");
    };
    assert!(
        matches!(task_error(&e), TaskError::BrokerDataLost { .. }),
        "{e}"
    );
    let _worker = WorkerProc::start(&redis, "q", "A", 1);
    for (n, handle) in kept.into_iter().enumerate() {
        assert_eq!(handle.result_timeout(HANG).unwrap(), (n * n) as u64);
    }
}

/// Point 4, last bullet: `map` over many items keeps at most `window` messages in
/// flight (so in the broker) and the client's memory flat; results in order.
fn map_keeps_the_window_and_flat_memory() {
    let redis = Redis::start();
    let _a = WorkerProc::start(&redis, "q", "A", 2);
    let cluster = ClusterExecutor::builder()
        .broker(redis.url())
        .queue("q")
        .window(4)
        .build()
        .unwrap();
    let items: u64 = std::env::var("CF_REDIS_TEST_MAP_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let before = common::rss_kb();
    let mut n = 0u64;
    let mut max_rss = before;
    for (i, result) in cluster.map(SQUARE, 0..items, 1000).enumerate() {
        assert_eq!(result.unwrap(), (i as u64) * (i as u64));
        n += 1;
        if i % 10_000 == 0 {
            max_rss = max_rss.max(common::rss_kb());
        }
    }
    assert_eq!(n, items);
    let stats = cluster.stats();
    assert!(stats.max_in_flight <= 4, "{stats:?}");
    assert_eq!(stats.submitted, items.div_ceil(1000));
    assert!(
        max_rss - before < 50 * 1024,
        "grew from {before} kB to {max_rss} kB"
    );
    let mut con = redis.con();
    assert_eq!(unfinished(&mut con), 0);
}

/// Point 7: 10,000 tasks with child kills (about one task in 64 aborts its process
/// once), one worker stopped past its lease and resumed, and the broker killed and
/// restarted: every future completes with its own value, none gets two results, and
/// nothing stays queued or pending.
fn fault_run_loses_nothing_and_duplicates_nothing() {
    const TASKS: u64 = 10_000;
    let mut redis = Redis::start_with(true);
    let a = WorkerProc::start(&redis, "q", "A", 1);
    let b = WorkerProc::start(&redis, "q", "B", 1);
    let cluster = ClusterExecutor::builder()
        .broker(redis.url())
        .queue("q")
        .lease(Duration::from_millis(500))
        .max_deliveries(5)
        .window(TASKS as usize)
        .build()
        .unwrap();
    let marks = TempDir::new("fault");
    let dir = marks.path().display().to_string();
    let handles: Vec<_> = (0..TASKS)
        .map(|n| (n, cluster.submit(FAULT, (dir.clone(), n)).unwrap()))
        .collect();
    let (progress, done) = crossbeam_channel::unbounded();
    std::thread::scope(|s| {
        let collector = s.spawn(move || {
            let mut seen = HashSet::new();
            for (i, item) in as_completed(handles, Some(HANG * 3)).enumerate() {
                let (n, handle) = item.expect("every future completes in time");
                assert_eq!(handle.result().expect("a value"), n);
                assert!(seen.insert(n), "task {n} completed twice");
                let _ = progress.send(i + 1);
            }
            seen.len()
        });
        let wait_for = |count: usize| {
            loop {
                match done.recv_timeout(HANG) {
                    Ok(n) if n >= count => break,
                    Ok(_) => {}
                    Err(e) => panic!("progress stopped before {count} results: {e:?}"),
                }
            }
        };
        // A worker stopped past its lease: B claims what A held.
        wait_for(1000);
        // A holds entries now: thousands are queued and it refills up to its prefetch.
        a.signal(Signal::SIGSTOP);
        b.wait_line("whose lease expired");
        a.signal(Signal::SIGCONT);
        // A finds out: its heartbeat reports the entries it lost, or the fence refuses
        // the commit of one its child finished meanwhile, whichever comes first.
        a.wait_any(&["lost the lease", "refused: the lease was lost"]);
        // The broker killed and restarted (append-only, every write synced).
        wait_for(5000);
        redis.restart();
        wait_for(TASKS as usize);
        assert_eq!(collector.join().unwrap(), TASKS as usize);
    });
    let crashed = std::fs::read_dir(marks.path()).unwrap().count();
    assert!(crashed > 50, "only {crashed} tasks crashed a child");
    assert_eq!(cluster.stats().unexpected_results, 0);
    let mut con = redis.con();
    assert_eq!(unfinished(&mut con), 0);
}

/// Point 3: a task registered as I/O bound runs on a thread of the worker process, one
/// registered plainly in a child.
fn io_bound_tasks_run_on_the_workers_threads() {
    let redis = Redis::start();
    let worker = WorkerProc::start(&redis, "q", "A", 1);
    let cluster = client(&redis, "q");
    let on_thread = cluster.submit(PID_IO, ()).unwrap().result().unwrap();
    let in_child = cluster.submit(PID, ()).unwrap().result().unwrap();
    assert_eq!(i64::from(on_thread), i64::from(worker.pid()));
    assert_ne!(i64::from(in_child), i64::from(worker.pid()));
}

/// The worker entry point as `flags worker` uses it, in this process: `run` returns
/// `Ok` after a stop request (having finished what it held), and an error naming the
/// broker when the broker stays away past the reconnect budget.
fn a_worker_stops_when_asked_and_when_the_broker_stays_away() {
    let mut redis = Redis::start();
    let worker = Worker::builder()
        .broker(redis.url())
        .queue("q")
        .procs(1)
        .register(SQUARE)
        .build()
        .unwrap();
    let stop = worker.stop_handle();
    let (ended_tx, ended) = crossbeam_channel::bounded(1);
    let running = std::thread::spawn(move || {
        let _ = ended_tx.send(worker.run().map_err(|e| e.to_string()));
    });
    let cluster = client(&redis, "q");
    assert_eq!(cluster.submit(SQUARE, 7).unwrap().result().unwrap(), 49);
    stop.stop();
    assert_eq!(ended.recv_timeout(HANG).expect("run returned"), Ok(()));
    running.join().unwrap();
    drop(cluster);

    let worker = Worker::builder()
        .broker(redis.url())
        .queue("q")
        .procs(1)
        .reconnect_budget(Duration::from_millis(300))
        .register(SQUARE)
        .build()
        .unwrap();
    let (ended_tx, ended) = crossbeam_channel::bounded(1);
    let running = std::thread::spawn(move || {
        let _ = ended_tx.send(worker.run().map_err(|e| e.to_string()));
    });
    redis.kill();
    let e = ended.recv_timeout(HANG).expect("run returned").unwrap_err();
    assert!(e.contains("stayed unreachable"), "{e}");
    running.join().unwrap();
}

/// Bad input: a broker that goes away for longer than the client's reconnect budget
/// fails the unfinished futures with a clear error and refuses later submits, instead
/// of hanging.
fn a_client_fails_clearly_when_the_broker_stays_away() {
    let mut redis = Redis::start();
    let cluster = ClusterExecutor::builder()
        .broker(redis.url())
        .queue("q")
        .client_ttl(Duration::from_millis(300))
        .reconnect_budget(Duration::from_millis(300))
        .build()
        .unwrap();
    let handle = cluster.submit(SQUARE, 2).unwrap(); // no worker: stays queued
    redis.kill();
    let e = match handle.result_timeout(HANG) {
        Err(concurrent_futures::ResultTimeoutError::Failed(e)) => e,
        other => panic!("expected a failure, got {other:?}"),
    };
    assert!(
        matches!(task_error(&e), TaskError::BrokerUnavailable { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("stayed unreachable"), "{e}");
    match cluster.submit(SQUARE, 3) {
        Err(e @ SubmitError::Broken(..)) => {
            assert!(e.to_string().contains("stayed unreachable"), "{e}");
            assert_eq!(e.into_inner(), 3);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// `shutdown(cancel_futures)` cancels what is queued; a submit after shutdown is
/// refused with the argument back.
fn shutdown_cancels_and_refuses() {
    let redis = Redis::start();
    let cluster = client(&redis, "q");
    let queued: Vec<_> = (0..10u64)
        .map(|n| cluster.submit(SQUARE, n).unwrap())
        .collect();
    cluster.shutdown(true, true);
    for handle in queued {
        assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
    }
    match cluster.submit(SQUARE, 5) {
        Err(e @ SubmitError::ShutDown(_)) => assert_eq!(e.into_inner(), 5),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut con = redis.con();
    assert_eq!(xlen(&mut con, "{q}:tasks"), 0);
}

// ---------------------------------------------------------------- main

/// One trial per test function, named after it.
macro_rules! trials {
    ($($test:ident),* $(,)?) => {
        vec![$(Trial::test(stringify!($test), || run($test))),*]
    };
}

/// Runs a test function as a trial (a panic is its failure).
fn run(test: fn()) -> Result<(), Failed> {
    test();
    Ok(())
}

fn main() -> ExitCode {
    concurrent_futures::process_worker_main();
    match std::env::var(common::ROLE).as_deref() {
        Ok("worker") => return worker_main(),
        Ok("client") => return client_main(),
        _ => {}
    }
    let trials = trials![
        errors_and_panics_fail_their_future_once,
        unknown_tasks_and_other_signatures_are_refused,
        undecodable_messages_are_dead_lettered,
        bad_urls_and_a_broker_that_is_down_are_clear_errors,
        a_killed_child_runs_its_task_again_at_once,
        a_task_that_kills_every_child_is_dead_lettered_with_its_attempts,
        a_vanished_workers_task_is_claimed_by_another,
        a_worker_stopped_past_its_lease_cannot_deliver,
        cancel_of_a_queued_task_removes_it_and_wakes_wait,
        cancel_of_a_running_task_kills_its_child,
        a_dead_client_leaves_nothing_behind,
        a_broker_restart_loses_no_future,
        a_broker_that_lost_its_data_resubmits_or_fails,
        map_keeps_the_window_and_flat_memory,
        shutdown_cancels_and_refuses,
        fault_run_loses_nothing_and_duplicates_nothing,
        a_client_fails_clearly_when_the_broker_stays_away,
        io_bound_tasks_run_on_the_workers_threads,
        a_worker_stops_when_asked_and_when_the_broker_stays_away,
    ];
    let mut args = Arguments::from_args();
    // One at a time, whatever `--test-threads` says: each test starts its own broker and
    // worker processes, and two cores are all there is.
    args.test_threads = Some(1);
    libtest_mimic::run(&args, trials).exit_code()
}
