//! Ctrl-C: stop scheduling, cancel what has not started, let (threads, processes, sequential)
//! or make (async) the requests in flight end, print the partial report, exit 130, no partial
//! file.
//!
//! Synchronised without sleeps: the server reports each request as it arrives and holds it;
//! the test sends SIGINT once the first wave is in flight, waits for the "Interrupted" note on
//! stderr, and only then lets the held requests be answered.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use crate::util::{FaultServer, GIF, Reply, Scratch, TestResult, counts, gif_path};

fn interrupt(
    mode: &str,
    max_req: usize,
) -> Result<(Scratch, std::process::Output), Box<dyn std::error::Error>> {
    interrupt_times(mode, max_req, 1)
}

/// Runs `flags -a` against a server that holds every request, sends `times` SIGINTs once
/// `max_req` requests are in flight (each after the previous note), then lets the server answer.
fn interrupt_times(
    mode: &str,
    max_req: usize,
    times: usize,
) -> Result<(Scratch, std::process::Output), Box<dyn std::error::Error>> {
    let server = FaultServer::start(|_, _| Reply::Stall(Box::new(Reply::ok(GIF))))?;
    let scratch = Scratch::new()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flags"))
        .current_dir(scratch.path())
        .args([
            "-a",
            "--dest",
            "dest",
            "--timeout",
            "60",
            "--mode",
            mode,
            "-m",
            &max_req.to_string(),
            "-s",
            &server.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let arrived = server.wait_for_requests(max_req);
    assert_eq!(arrived.len(), max_req);
    let stderr = child.stderr.take().ok_or("stderr")?;
    let mut stderr = BufReader::new(stderr);
    for _ in 0..times {
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()?;
        assert!(status.success());
        let mut line = String::new();
        while !line.contains("*** Interrupted") {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                break;
            }
        }
        assert!(line.contains("*** Interrupted"), "{line:?}");
    }
    if times > 1 || mode == "async" {
        // Async mode aborts the requests in flight, and a second Ctrl-C exits at once: the
        // process ends with requests still held. Nothing may be left in dest.
        let output = child.wait_with_output()?;
        return Ok((scratch, output));
    }
    server.open_gate();
    let mut rest = Vec::new();
    stderr.read_to_end(&mut rest)?;
    let output = child.wait_with_output()?;
    Ok((scratch, output))
}

/// Ctrl-C in a pool mode: the three downloads in flight finish and are counted, the other
/// 191 codes are reported as not attempted.
fn pool_finishes_requests_in_flight(mode: &str) -> TestResult {
    let (scratch, output) = interrupt(mode, 3)?;
    assert_eq!(output.status.code(), Some(130), "{mode}");
    assert_eq!(counts(&output.stdout), (3, 0, 0), "{mode}");
    let stdout = String::from_utf8(output.stdout)?;
    assert!(
        stdout.contains("\n191 not attempted: interrupted by Ctrl-C.\n"),
        "{mode}: {stdout}"
    );
    scratch.assert_clean(3);
    Ok(())
}

#[test]
fn ctrl_c_in_threads_mode_finishes_requests_in_flight() -> TestResult {
    pool_finishes_requests_in_flight("threads")
}

/// Workers run in process groups of their own: the SIGINT reaches only `flags`, which cancels
/// the codes no worker has taken and counts the downloads the workers finish.
#[test]
fn ctrl_c_in_processes_mode_finishes_requests_in_flight() -> TestResult {
    pool_finishes_requests_in_flight("processes")
}

#[test]
fn ctrl_c_in_sequential_mode_finishes_the_request_in_flight() -> TestResult {
    let (scratch, output) = interrupt("sequential", 1)?;
    assert_eq!(output.status.code(), Some(130));
    assert_eq!(counts(&output.stdout), (1, 0, 0));
    scratch.assert_clean(1);
    Ok(())
}

#[test]
fn ctrl_c_in_async_mode_aborts_requests_in_flight() -> TestResult {
    let (scratch, output) = interrupt("async", 4)?;
    assert_eq!(output.status.code(), Some(130));
    assert_eq!(counts(&output.stdout), (0, 0, 0));
    let stdout = String::from_utf8(output.stdout)?;
    assert!(
        stdout.contains("\n194 not attempted: interrupted by Ctrl-C.\n"),
        "{stdout}"
    );
    scratch.assert_clean(0);
    Ok(())
}

/// Async mode ends at the first Ctrl-C; the blocking modes wait for their requests in flight,
/// unless Ctrl-C comes again.
#[test]
fn second_ctrl_c_exits_at_once() -> TestResult {
    for (mode, max_req) in [("sequential", 1), ("threads", 2)] {
        let (scratch, output) = interrupt_times(mode, max_req, 2)?;
        assert_eq!(output.status.code(), Some(130), "{mode}");
        scratch.assert_clean(0);
    }
    Ok(())
}

/// Sends `signal` (`INT`, `TERM`, `KILL`) to `pid`.
fn kill(signal: &str, pid: u32) -> TestResult {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()?;
    assert!(status.success(), "kill -{signal} {pid}");
    Ok(())
}

/// Reads `stderr` until a line containing `note`; false at its end.
fn wait_for_note(stderr: &mut impl BufRead, note: &str) -> std::io::Result<bool> {
    let mut line = String::new();
    while !line.contains(note) {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `flags -a --mode MODE -m MAX_REQ` against `server`, with stdout and stderr piped.
fn spawn_all(
    server: &FaultServer,
    scratch: &Scratch,
    mode: &str,
    max_req: usize,
    extra: &[&str],
) -> std::io::Result<std::process::Child> {
    Command::new(env!("CARGO_BIN_EXE_flags"))
        .current_dir(scratch.path())
        .args(["--dest", "dest", "--timeout", "3600", "--mode", mode])
        .args(["-m", &max_req.to_string(), "-s", &server.url()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Issue 17, point 3: `flags` handles SIGTERM as it does Ctrl-C (stop scheduling, let the
/// downloads in flight end, partial report, no partial file), with exit status 143 (128 +
/// 15). It used to die of the signal, with no report.
#[test]
fn issue_17_sigterm_is_handled_like_ctrl_c() -> TestResult {
    for (mode, max_req) in [
        ("sequential", 1),
        ("threads", 3),
        ("async", 3),
        ("processes", 3),
    ] {
        let server = FaultServer::start(|_, _| Reply::Stall(Box::new(Reply::ok(GIF))))?;
        let scratch = Scratch::new()?;
        let mut child = spawn_all(&server, &scratch, mode, max_req, &["-a"])?;
        assert_eq!(server.wait_for_requests(max_req).len(), max_req);
        kill("TERM", child.id())?;
        let mut stderr = BufReader::new(child.stderr.take().ok_or("stderr")?);
        assert!(wait_for_note(&mut stderr, "*** Interrupted")?, "{mode}");
        server.open_gate();
        let mut rest = Vec::new();
        stderr.read_to_end(&mut rest)?;
        let output = child.wait_with_output()?;
        assert_eq!(output.status.code(), Some(143), "{mode}");
        let stdout = String::from_utf8(output.stdout)?;
        // The async mode aborts its requests in flight; the others finish them.
        let finished = if mode == "async" { 0 } else { max_req };
        assert_eq!(
            counts(stdout.as_bytes()),
            (finished, 0, 0),
            "{mode}: {stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "\n{:3} not attempted: interrupted by SIGTERM.\n",
                194 - finished
            )),
            "{mode}: {stdout}"
        );
        scratch.assert_clean(finished);
    }
    Ok(())
}

/// Issue 17, point 3: after SIGKILL of `flags --mode processes`, its workers went on with
/// their requests and saved flags into `--dest` with no parent left. A worker now stops, at
/// once and without saving, when its parent is gone (parent-death signal). The held
/// requests are answered only after `flags` is dead; stderr reaches its end only when every
/// process that shares it (the workers, the fork server) has exited.
#[test]
fn issue_17_workers_stop_without_saving_when_flags_is_killed() -> TestResult {
    let server = FaultServer::start(|_, _| Reply::Stall(Box::new(Reply::ok(GIF))))?;
    let scratch = Scratch::new()?;
    let mut child = spawn_all(&server, &scratch, "processes", 3, &["-a"])?;
    assert_eq!(server.wait_for_requests(3).len(), 3);
    kill("KILL", child.id())?;
    let mut stderr = child.stderr.take().ok_or("stderr")?;
    let status = child.wait()?;
    assert_eq!(status.code(), None, "killed by a signal");
    server.open_gate();
    let mut rest = Vec::new();
    stderr.read_to_end(&mut rest)?;
    scratch.assert_clean(0);
    Ok(())
}

/// Issue 17, point 4: Ctrl-C did not reach a worker's retry backoff: with `Retry-After`
/// capped at 60 s, `--mode processes` exited only when the backoff ended, and retried first.
/// In every mode the backoff now ends at once and the code is not requested again. (Waits
/// a minute before it fails on the old code.)
#[test]
fn issue_17_ctrl_c_ends_a_retry_backoff_at_once() -> TestResult {
    for mode in ["sequential", "threads", "async", "processes"] {
        let server = FaultServer::start(|_, seen| {
            if seen == 0 {
                Reply::with_header(503, "Retry-After", "3600")
            } else {
                Reply::ok(GIF)
            }
        })?;
        let scratch = Scratch::new()?;
        let child = spawn_all(&server, &scratch, mode, 1, &["BR", "-v", "--retries", "1"])?;
        assert_eq!(server.wait_for_requests(1).len(), 1);
        kill("INT", child.id())?;
        let output = child.wait_with_output()?;
        let stdout = String::from_utf8(output.stdout)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "{mode}: {stdout}{stderr}");
        // The download ends with the error it was waiting to retry; the async mode may
        // abort its task first instead (then the code is not attempted).
        let failed = stdout.contains("BR error: HTTP error 503 - Service Unavailable\n");
        let aborted = stdout.contains("\n  1 not attempted: interrupted by Ctrl-C.\n");
        assert!(
            failed || (mode == "async" && aborted),
            "{mode}: {stdout}{stderr}"
        );
        assert_eq!(server.seen(&gif_path("BR")), 1, "{mode}");
        scratch.assert_clean(0);
    }
    Ok(())
}

/// Issue 17, point 4: after a second Ctrl-C, `flags --mode processes` exited but its workers
/// lived on (and kept the caller's pipes open). Now none does: stderr, which they share,
/// ends once `flags` has exited, before the held requests could be answered, and nothing is
/// saved when they are.
#[test]
fn issue_17_no_worker_outlives_a_second_ctrl_c() -> TestResult {
    let server = FaultServer::start(|_, _| Reply::Stall(Box::new(Reply::ok(GIF))))?;
    let scratch = Scratch::new()?;
    let mut child = spawn_all(&server, &scratch, "processes", 2, &["-a"])?;
    assert_eq!(server.wait_for_requests(2).len(), 2);
    let mut stderr = BufReader::new(child.stderr.take().ok_or("stderr")?);
    kill("INT", child.id())?;
    assert!(wait_for_note(&mut stderr, "*** Interrupted")?);
    kill("INT", child.id())?;
    let status = child.wait()?;
    assert_eq!(status.code(), Some(130));
    server.open_gate();
    let mut rest = Vec::new();
    stderr.read_to_end(&mut rest)?;
    scratch.assert_clean(0);
    assert_eq!(server.heads().len(), 2, "no request after the first two");
    Ok(())
}
