//! Test support: a private `redis-server` per test, worker and client processes of this
//! test binary, and held tasks. Every wait has a generous deadline that only guards
//! against a hang; nothing sleeps to synchronise.

#![allow(dead_code, unreachable_pub)] // shared by the test binary's modules

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any single wait may take before the test fails as hung.
pub const HANG: Duration = Duration::from_secs(120);

/// The environment variable that makes this binary a worker or a client.
pub const ROLE: &str = "CF_REDIS_TEST_ROLE";
pub const BROKER: &str = "CF_REDIS_TEST_BROKER";
pub const QUEUE: &str = "CF_REDIS_TEST_QUEUE";
pub const NAME: &str = "CF_REDIS_TEST_WORKER_NAME";
pub const PROCS: &str = "CF_REDIS_TEST_PROCS";
pub const PREFETCH: &str = "CF_REDIS_TEST_PREFETCH";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cfr-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `redis-server` of this test alone, on a Unix socket in a temporary directory.
pub struct Redis {
    child: Option<Child>,
    dir: TempDir,
    appendonly: bool,
}

impl Redis {
    /// Starts one without persistence.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts one; with `appendonly`, every write is synced to the append-only file
    /// before it is acknowledged, so a kill loses nothing.
    pub fn start_with(appendonly: bool) -> Self {
        let mut redis = Self {
            child: None,
            dir: TempDir::new("redis"),
            appendonly,
        };
        redis.launch();
        redis
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--daemonize")
            .arg("no")
            .arg("--notify-keyspace-events")
            .arg("Ex");
        if self.appendonly {
            command
                .arg("--appendonly")
                .arg("yes")
                .arg("--appendfsync")
                .arg("always");
        } else {
            command.arg("--appendonly").arg("no");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line
                    .to_ascii_lowercase()
                    .contains("ready to accept connections")
                {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(HANG)
            .expect("redis-server did not get ready");
        self.child = Some(child);
    }

    /// A connection for the test itself.
    pub fn con(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("url");
        let con = client
            .get_connection()
            .expect("connect to the test's redis");
        con.set_read_timeout(Some(HANG)).expect("timeout");
        con
    }

    /// Kills the server (SIGKILL: no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Starts it again on the same socket and directory (loading its append-only file,
    /// if it has one).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Kills it and deletes its data, then starts it again: a broker that lost its data.
    pub fn restart_empty(&mut self) {
        self.kill();
        for entry in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A worker process: this test binary started as a worker.
pub struct WorkerProc {
    pub name: String,
    child: Child,
    lines: Receiver<String>,
}

impl WorkerProc {
    /// Starts a worker named `name` for `queue` with `procs` children, and waits until
    /// it is serving.
    pub fn start(redis: &Redis, queue: &str, name: &str, procs: usize) -> Self {
        Self::start_with(redis, queue, name, procs, 256)
    }

    pub fn start_with(
        redis: &Redis,
        queue: &str,
        name: &str,
        procs: usize,
        prefetch: usize,
    ) -> Self {
        let mut command = Command::new(std::env::current_exe().expect("own path"));
        command
            .env(ROLE, "worker")
            .env(BROKER, redis.url())
            .env(QUEUE, queue)
            .env(NAME, name)
            .env(PROCS, procs.to_string())
            .env(PREFETCH, prefetch.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("start a worker");
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = crossbeam_channel::unbounded();
        let prefix = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("CF_REDIS_TEST_VERBOSE").is_some() {
                    eprintln!("[{prefix}] {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let worker = Self {
            name: name.to_owned(),
            child,
            lines,
        };
        worker.wait_line("ready");
        worker
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    /// Waits for a line of the worker's stderr that contains `needle`; returns it.
    pub fn wait_line(&self, needle: &str) -> String {
        self.wait_any(&[needle])
    }

    /// Waits for a line of the worker's stderr that contains one of `needles`.
    pub fn wait_any(&self, needles: &[&str]) -> String {
        let needle = needles.join("\" or \"");
        loop {
            match self.lines.recv_timeout(HANG) {
                Ok(line) if needles.iter().any(|n| line.contains(n)) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("worker {}: no line with \"{needle}\" in time", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "worker {}: ended before a line with \"{needle}\"",
                        self.name
                    )
                }
            }
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal the worker");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGCONT);
        self.kill();
    }
}

/// Tasks held in a known state: a `hold` task connects to this listener, says its pid
/// and worker, and blocks until the test releases (writes to) or drops its connection.
pub struct Holds {
    pub dir: TempDir,
    arrivals: Receiver<Held>,
}

/// A held task.
pub struct Held {
    pub stream: UnixStream,
    pub pid: i32,
    pub worker: String,
}

impl Held {
    /// Lets the task return.
    pub fn release(mut self) {
        let _ = self.stream.write_all(b"x");
    }

    /// Waits until the task's process closed its end (it was killed).
    pub fn wait_closed(mut self) {
        self.stream.set_read_timeout(Some(HANG)).expect("timeout");
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the held task's process is still there: {other:?}"),
        }
    }
}

impl Holds {
    pub fn new() -> Self {
        let dir = TempDir::new("holds");
        let listener = UnixListener::bind(dir.path().join("hold.sock")).expect("bind");
        let (tx, arrivals) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                let worker = parts.next().unwrap_or("").to_owned();
                if tx
                    .send(Held {
                        stream,
                        pid,
                        worker,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        Self { dir, arrivals }
    }

    /// The path to give `hold`.
    pub fn path(&self) -> String {
        self.dir.path().join("hold.sock").display().to_string()
    }

    /// The next task that started holding.
    pub fn next(&self) -> Held {
        self.arrivals
            .recv_timeout(HANG)
            .expect("no held task arrived in time")
    }
}

/// The side of `hold` that runs in a worker's child.
pub fn hold_task(path: &str) -> String {
    let me = std::process::id();
    let worker = std::env::var(NAME).unwrap_or_default();
    let mut stream = UnixStream::connect(path).expect("connect to the test's listener");
    writeln!(stream, "{me} {worker}").expect("say who");
    let mut byte = [0u8; 1];
    let _ = stream.read(&mut byte);
    worker
}

/// Sends `signal` to a process (a held task's child).
pub fn signal_pid(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}

/// The client process's resident memory in kB (`VmRSS`).
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
