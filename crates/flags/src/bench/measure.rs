//! One measurement: `flags --json [--trace FILE] …` run as a child of this executable, through a
//! small probe process (`flags bench -- ARGS`) whose only child is that run, so that the probe's
//! `getrusage(RUSAGE_CHILDREN)` is the run's own peak RSS.
//!
//! The elapsed time is the child's own (`elapsed_secs` of its `--json` report: from just before
//! the client is built to the last download), so process start-up is not counted; the wall time
//! around the probe is kept as well, for the cost of writing the trace.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use flags_engine::{JsonReport, TraceLine, parse_trace};
use serde::Deserialize;

/// Environment variables naming proxies: removed for runs against the in-process server.
const PROXY_VARS: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// What one run of the downloader measured.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// The downloader's own elapsed time.
    pub(crate) elapsed: Duration,
    /// From spawning the probe to its exit (process start-up and the trace file included).
    pub(crate) wall: Duration,
    /// The downloader process's peak resident set, where the platform reports it.
    pub(crate) peak_rss_kib: Option<u64>,
    pub(crate) downloaded: usize,
    pub(crate) not_found: usize,
    pub(crate) errors: usize,
    /// The trace, or nothing for an untraced run.
    pub(crate) requests: Vec<TraceLine>,
}

/// The probe's own line, printed after the child's report.
#[derive(Debug, Deserialize, serde::Serialize)]
struct ProbeLine {
    peak_rss_kib: Option<u64>,
}

/// Runs `flags ARGS --json --dest DIR [--trace FILE]` in a fresh scratch directory.
///
/// # Errors
///
/// Failing to create the scratch directory or to start the process, a usage error or a crash
/// of the child, or output that is not the expected report.
pub(crate) fn run(args: &[String], trace: bool, no_proxy: bool) -> anyhow::Result<Run> {
    let scratch = tempfile::Builder::new()
        .prefix("flags-bench")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let trace_path = scratch.path().join("trace.jsonl");
    let exe = std::env::current_exe().context("cannot find the flags executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench").arg("--").args(args).arg("--json");
    cmd.arg("--dest").arg(scratch.path().join("dest"));
    if trace {
        cmd.arg("--trace").arg(&trace_path);
    }
    if no_proxy {
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let output = cmd.output().context("cannot run flags")?;
    let wall = started.elapsed();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines().filter(|l| !l.trim().is_empty());
    let (Some(report), Some(probe)) = (lines.next(), lines.next()) else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "flags {} failed ({}): {}",
            args.join(" "),
            output.status,
            stderr.trim()
        );
    };
    let report: JsonReport = serde_json::from_str(report)
        .with_context(|| format!("unexpected report from flags: {report}"))?;
    let probe: ProbeLine = serde_json::from_str(probe)
        .with_context(|| format!("unexpected line from the probe: {probe}"))?;
    let requests = if trace {
        read_trace(&trace_path)?
    } else {
        Vec::new()
    };
    Ok(Run {
        elapsed: Duration::try_from_secs_f64(report.elapsed_secs)
            .context("negative elapsed time in the report")?,
        wall,
        peak_rss_kib: probe.peak_rss_kib,
        downloaded: report.downloaded,
        not_found: report.not_found,
        errors: report.errors,
        requests,
    })
}

/// Reads a `--trace` file.
fn read_trace(path: &Path) -> anyhow::Result<Vec<TraceLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the trace {}", path.display()))?;
    Ok(parse_trace(&text)?)
}

/// The probe (`flags bench -- ARGS`): runs `flags ARGS` with stdout and stderr inherited, then
/// prints `{"peak_rss_kib": N}` on a line of its own and exits with the child's status.
pub(crate) fn probe(args: &[String]) -> ExitCode {
    let status = std::env::current_exe().and_then(|exe| Command::new(exe).args(args).status());
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            eprintln!("flags bench: cannot run flags: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = ProbeLine {
        peak_rss_kib: children_peak_rss_kib(),
    };
    let mut out = std::io::stdout().lock();
    let written = serde_json::to_string(&line)
        .map_err(std::io::Error::other)
        .and_then(|json| writeln!(out, "{json}"));
    if written.is_err() {
        return ExitCode::FAILURE;
    }
    match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

/// The largest peak RSS among the waited-for children: with one child, that child's.
#[cfg(unix)]
fn children_peak_rss_kib() -> Option<u64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let max_rss = u64::try_from(getrusage(UsageWho::RUSAGE_CHILDREN).ok()?.max_rss()).ok()?;
    // Linux and the BSDs report KiB; macOS reports bytes.
    if cfg!(target_vendor = "apple") {
        Some(max_rss / 1024)
    } else {
        Some(max_rss)
    }
}

#[cfg(not(unix))]
fn children_peak_rss_kib() -> Option<u64> {
    None
}
