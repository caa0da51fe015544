//! Issue 17, point 1: what a download costs in memory does not depend on the size of the
//! body. Each run's peak resident memory (`VmHWM` in `/proc/PID/status`, summed over `flags`
//! and its worker processes) is read while every download holds a whole flag, once with tiny
//! flags and once with 9 MiB ones; the difference is what the bodies cost.
//!
//! Synchronised on request arrival, without sleeps: with `--name-by country` a download asks
//! for `metadata.json` only after its whole flag was received, and the server never answers
//! that request, so when every code has asked for it, every flag is held (in memory, or in
//! its unnamed file in `--dest`). Only a broken run makes the test wait, up to a generous
//! bound.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::util::{FaultServer, GIF, Reply, Scratch};

const MIB: u64 = 1 << 20;
/// Under the 10 MiB cap.
const BODY: usize = 9 << 20;
/// Only a broken run takes this long to send its requests.
const BOUND: Duration = Duration::from_secs(120);

type Error = Box<dyn std::error::Error>;

/// A field of `/proc/PID/status` in bytes (given there in kB); 0 for a process gone.
pub(crate) fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .map_or(0, |kib: u64| kib * 1024)
}

/// The processes whose parent is `pid` (the workers and the fork server of `--mode
/// processes`, which are `flags`' own children).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let (_, after_name) = stat.rsplit_once(')')?;
                    after_name.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Kills the child when dropped (its server never answers).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `flags --name-by country CODES -m MAX_REQ --mode MODE` against a server whose flags
/// are `body` and whose `metadata.json` never comes; once every connection holds a download
/// that asked for its metadata, returns the peak resident memory of `flags` and its children.
fn peak_while_holding(
    mode: &str,
    codes: &[String],
    max_req: usize,
    body: Arc<[u8]>,
) -> Result<u64, Error> {
    let server = FaultServer::start(move |path, _| {
        if path.ends_with("/metadata.json") {
            Reply::Stall(Box::new(Reply::status(404)))
        } else {
            Reply::Shared(Arc::clone(&body))
        }
    })?;
    let scratch = Scratch::new()?;
    // `FLAGS_BIN` measures another build (an older commit's, for the figures).
    let flags = std::env::var_os("FLAGS_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_flags").into());
    let child = Command::new(flags)
        .current_dir(scratch.path())
        .args(codes)
        .args([
            "--name-by",
            "country",
            "--dest",
            "dest",
            "--timeout",
            "3600",
        ])
        .args([
            "--mode",
            mode,
            "-m",
            &max_req.to_string(),
            "-s",
            &server.url(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let child = Running(child);
    // Each download holds its connection while it waits: at most `max_req` ask at once.
    let mut waiting = codes.len().min(max_req);
    while waiting > 0 {
        let path = server
            .next_request(BOUND)
            .ok_or("flags stopped asking for metadata.json")?;
        if path.ends_with("/metadata.json") {
            waiting -= 1;
        }
    }
    let pid = child.0.id();
    let peak = status_bytes(pid, "VmHWM")
        + children(pid)
            .into_iter()
            .map(|child| status_bytes(child, "VmHWM"))
            .sum::<u64>();
    drop(child);
    Ok(peak)
}

/// A flag of `len` bytes: a GIF signature and zeros.
fn flag_of(len: usize) -> Arc<[u8]> {
    let mut body = GIF[..6].to_vec();
    body.resize(len, 0);
    body.into()
}

/// How much more `codes` downloads held at once cost with 9 MiB flags than with tiny ones.
fn growth(mode: &str, codes: &[String], max_req: usize) -> Result<(u64, u64), Error> {
    let small = peak_while_holding(mode, codes, max_req, GIF.into())?;
    let large = peak_while_holding(mode, codes, max_req, flag_of(BODY))?;
    eprintln!(
        "{mode:>10} {} codes -m {max_req}, {} held: VmHWM {:.1} MiB with {}-byte flags, \
         {:.1} MiB with {} MiB flags",
        codes.len(),
        codes.len().min(max_req),
        small as f64 / MIB as f64,
        GIF.len(),
        large as f64 / MIB as f64,
        BODY as u64 / MIB,
    );
    Ok((small, large))
}

fn codes(n: usize) -> Vec<String> {
    slow_server::country_codes()
        .iter()
        .take(n)
        .map(|cc| (*cc).to_owned())
        .collect()
}

/// Issue 17, point 1: every body was read whole into memory (about 9 MiB per download in
/// flight against a server that sends 9 MiB). Bodies now stream into the unnamed file as
/// they arrive: four downloads holding a 9 MiB flag each cost less than half a flag more
/// than four holding 14 bytes, in every mode.
#[test]
fn issue_17_memory_does_not_grow_with_the_body() -> Result<(), Error> {
    for (mode, n) in [
        ("sequential", 1),
        ("threads", 4),
        ("async", 4),
        ("processes", 4),
    ] {
        let (small, large) = growth(mode, &codes(n), n)?;
        let grown = large.saturating_sub(small);
        assert!(
            grown < BODY as u64 / 2,
            "{mode}: {n} downloads holding {BODY}-byte flags took {grown} bytes more"
        );
    }
    Ok(())
}

/// The figures in BENCHMARKS.md: the issue's `-a -m 194` and `-m 60` in every mode. Not run
/// by default (194 flags of 9 MiB: 1.7 GiB through loopback per run). Run with
/// `cargo test --release -p flags --test cli issue_17_peak_memory_figures -- --ignored
/// --nocapture`, with `FLAGS_BIN=PATH` to measure another build of `flags`.
#[test]
#[ignore = "a benchmark: 1.7 GiB through loopback per run"]
fn issue_17_peak_memory_figures() -> Result<(), Error> {
    let all = codes(194);
    for max_req in [60, 194] {
        for mode in ["threads", "async", "processes"] {
            growth(mode, &all, max_req)?;
        }
    }
    growth("sequential", &all, 1)?;
    Ok(())
}
