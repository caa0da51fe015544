//! `--mode cluster` and `flags worker` (issue 16, point 5): downloads sent through a private
//! `redis-server` (a Unix socket in a temporary directory) to `flags worker` processes.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::util::{Scratch, TestResult, counts, flags};

/// A private broker, stopped when dropped.
struct Broker {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts `redis-server` on a socket of its own and waits until it accepts connections.
    fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("redis.sock");
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server is needed (apt-get install redis-server): {e}"))?;
        // Its log goes through a buffer when not on a terminal, so readiness is the socket
        // accepting a connection; the bound only turns a broken server into a failure.
        let patience = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while UnixStream::connect(&socket).is_err() {
            if child.try_wait()?.is_some() || std::time::Instant::now() > patience {
                let _ = child.kill();
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(Self {
            child,
            socket,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `flags worker` process, stopped (SIGKILL) when dropped if still running.
struct FlagsWorker(Child);

impl FlagsWorker {
    fn start(broker: &Broker, queue: &str, dest: Option<&Path>) -> std::io::Result<Self> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flags"));
        command
            .args(["worker", "--broker", &broker.url(), "--queue", queue])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(dest) = dest {
            command.arg("--dest").arg(dest);
        }
        command.spawn().map(Self)
    }
}

impl Drop for FlagsWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn issue_16_cluster_mode_downloads_through_flags_workers() -> TestResult {
    let broker = Broker::start()?;
    let _workers = [
        FlagsWorker::start(&broker, "q1", None)?,
        FlagsWorker::start(&broker, "q1", None)?,
    ];
    let scratch = Scratch::new()?;
    let output = flags(scratch.path())
        .args([
            "--mode",
            "cluster",
            "--broker",
            &broker.url(),
            "--queue",
            "q1",
        ])
        .args(["-v", "BR", "CN", "IN", "US", "ZZ"])
        .arg("--dest")
        .arg(scratch.dest())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(counts(&output.stdout), (4, 1, 0), "{stdout}");
    assert_eq!(scratch.saved(), ["BR.gif", "CN.gif", "IN.gif", "US.gif"]);
    // The same exit status as the other modes for the same counts.
    let threads = flags(scratch.path())
        .args(["--mode", "threads", "BR", "CN", "IN", "US", "ZZ", "--dest"])
        .arg(scratch.dest())
        .output()?;
    assert_eq!(output.status.code(), threads.status.code());
    Ok(())
}

#[test]
fn issue_16_a_worker_started_with_its_own_dest_saves_there() -> TestResult {
    let broker = Broker::start()?;
    let own = tempfile::tempdir()?;
    let _worker = FlagsWorker::start(&broker, "q2", Some(own.path()))?;
    let scratch = Scratch::new()?;
    flags(scratch.path())
        .args([
            "--mode",
            "cluster",
            "--broker",
            &broker.url(),
            "--queue",
            "q2",
            "BR",
        ])
        .arg("--dest")
        .arg(scratch.dest())
        .assert()
        .success();
    assert!(own.path().join("BR.gif").is_file());
    assert!(scratch.saved().is_empty(), "the worker's --dest wins");
    Ok(())
}

#[test]
fn issue_16_a_worker_stops_on_ctrl_c_and_sigterm_with_the_shells_status() -> TestResult {
    let broker = Broker::start()?;
    for (signal, status) in [(Signal::SIGINT, 130), (Signal::SIGTERM, 143)] {
        let mut worker = FlagsWorker::start(&broker, "q3", None)?;
        // Serving: a download through it proves the worker is past its start-up.
        let scratch = Scratch::new()?;
        flags(scratch.path())
            .args([
                "--mode",
                "cluster",
                "--broker",
                &broker.url(),
                "--queue",
                "q3",
                "BR",
            ])
            .arg("--dest")
            .arg(scratch.dest())
            .assert()
            .success();
        let pid = i32::try_from(worker.0.id())?;
        kill(Pid::from_raw(pid), signal)?;
        assert_eq!(worker.0.wait()?.code(), Some(status), "{signal:?}");
    }
    Ok(())
}

#[test]
fn issue_16_bad_cluster_arguments_are_usage_errors_and_a_missing_broker_a_run_time_one()
-> TestResult {
    let scratch = Scratch::new()?;
    for args in [
        &["--mode", "cluster", "BR"][..],
        &[
            "--mode",
            "cluster",
            "--broker",
            "http://example.invalid",
            "BR",
        ],
        &["--broker", "redis://127.0.0.1:6379/0", "BR"],
        &[
            "--mode",
            "cluster",
            "--broker",
            "redis://x/0",
            "--queue",
            "a{b}",
            "BR",
        ],
        &["worker", "--broker", "nonsense"],
        &["worker", "--broker", "redis://x/0", "--threads", "0"],
    ] {
        let output = flags(scratch.path()).args(args).output()?;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("Usage error"),
            "{args:?}"
        );
    }
    // Nothing listens on this socket: a clear error, exit status 1, no hang.
    let nowhere = scratch.path().join("nobody.sock");
    let url = format!("redis+unix://{}", nowhere.display());
    let output = flags(scratch.path())
        .args(["--mode", "cluster", "--broker", &url, "BR"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("broker"));
    let output = flags(scratch.path())
        .args(["worker", "--broker", &url])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("broker"));
    Ok(())
}
