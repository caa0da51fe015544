//! Ctrl-C: stop scheduling, cancel what has not started, let (threads, processes, sequential)
//! or make (async) the requests in flight end, print the partial report, exit 130, no partial
//! file.
//!
//! Synchronised without sleeps: the server reports each request as it arrives and holds it;
//! the test sends SIGINT once the first wave is in flight, waits for the "Interrupted" note on
//! stderr, and only then lets the held requests be answered.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use crate::util::{FaultServer, GIF, Reply, Scratch, TestResult, counts};

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
