//! What a run reports: the outcome and record of each download, the counters, the flags2-style
//! initial and final reports, the `--json` object and the exit status.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::plan::Mode;

/// Exit status after Ctrl-C (128 + SIGINT, as shells report it).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// How one download ended (the book's `DownloadStatus`, with the detail to print). Serde: it
/// crosses from the worker processes of `--mode processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub(crate) enum Outcome {
    /// Saved.
    Ok,
    /// The server answered 404 for this URL.
    NotFound {
        /// The flag's URL.
        url: String,
    },
    /// Anything else: a one-line reason.
    Error {
        /// Why, in one line.
        message: String,
    },
}

impl Outcome {
    /// The outcome's name in the JSON report and traces.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotFound { .. } => "not_found",
            Self::Error { .. } => "error",
        }
    }
}

/// One finished download: what the report counts and what traces and `flags bench` draw.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// The country code, upper case.
    pub(crate) code: String,
    /// The connection (sequential, async) or worker thread or process (threads, processes)
    /// that ran it, from 0.
    pub(crate) lane: usize,
    /// When the download started (before the first request).
    pub(crate) start: Instant,
    /// When it ended (after the save, or the last failure).
    pub(crate) end: Instant,
    /// Requests made for the flag (1 + retries used).
    pub(crate) attempts: u32,
    pub(crate) outcome: Outcome,
}

impl Record {
    /// The record of the download task for `code` that failed (a panic, which is a bug, or a
    /// worker process that died): counted as an error of that code, not lost.
    pub(crate) fn failed_task(code: &str, error: &dyn std::fmt::Display) -> Self {
        let now = Instant::now();
        Self {
            code: code.to_owned(),
            lane: usize::MAX,
            start: now,
            end: now,
            attempts: 0,
            outcome: Outcome::Error {
                message: format!("download task failed: {error}"),
            },
        }
    }
}

/// The counters of a run, and every record in completion order.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) downloaded: usize,
    pub(crate) not_found: usize,
    pub(crate) errors: usize,
    pub(crate) records: Vec<Record>,
}

impl Tally {
    /// Counts a finished download.
    pub(crate) fn add(&mut self, record: Record) {
        match record.outcome {
            Outcome::Ok => self.downloaded += 1,
            Outcome::NotFound { .. } => self.not_found += 1,
            Outcome::Error { .. } => self.errors += 1,
        }
        self.records.push(record);
    }

    /// Downloads that finished, whatever their outcome.
    pub(crate) fn finished(&self) -> usize {
        self.records.len()
    }
}

/// The `-v` line for a finished download: `BR OK`, `AA not found: URL`, `ZW error: reason`.
pub(crate) fn verbose_line(record: &Record) -> String {
    match &record.outcome {
        Outcome::Ok => format!("{} OK", record.code),
        Outcome::NotFound { url } => format!("{} not found: {url}", record.code),
        Outcome::Error { message } => format!("{} error: {message}", record.code),
    }
}

/// The lines printed before downloading, as in flags2_common.py.
pub(crate) fn initial_report(
    label: &str,
    url: &str,
    codes: &[String],
    concurrency: usize,
) -> String {
    let listed = if codes.len() <= 10 {
        codes.join(", ")
    } else {
        format!("from {} to {}", codes[0], codes[codes.len() - 1])
    };
    let mut out = format!("{label} site: {url}\n");
    let _ = writeln!(
        out,
        "Searching for {} flag{}: {listed}",
        codes.len(),
        plural(codes.len())
    );
    if concurrency == 1 {
        out.push_str("1 connection will be used.\n");
    } else {
        let _ = writeln!(out, "{concurrency} concurrent connections will be used.");
    }
    out
}

/// The lines printed after downloading, as in flags2_common.py, plus a line after Ctrl-C.
pub(crate) fn final_report(
    tally: &Tally,
    total: usize,
    elapsed: Duration,
    interrupted: bool,
) -> String {
    let mut out = format!("{}\n", "-".repeat(20));
    let _ = writeln!(
        out,
        "{:3} flag{} downloaded.",
        tally.downloaded,
        plural(tally.downloaded)
    );
    if tally.not_found > 0 {
        let _ = writeln!(out, "{:3} not found.", tally.not_found);
    }
    if tally.errors > 0 {
        let _ = writeln!(out, "{:3} error{}.", tally.errors, plural(tally.errors));
    }
    if interrupted {
        let skipped = total.saturating_sub(tally.finished());
        let _ = writeln!(out, "{skipped:3} not attempted: interrupted by Ctrl-C.");
    }
    let _ = writeln!(out, "Elapsed time: {:.2}s", elapsed.as_secs_f64());
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The `--json` report: one object on stdout.
#[derive(Debug, Serialize)]
pub(crate) struct JsonReport<'a> {
    /// `BUILTIN`, `LOCAL`, `DELAY`, `ERROR`, `REMOTE` or `URL`.
    pub(crate) server: &'a str,
    /// The base URL downloaded from.
    pub(crate) url: &'a str,
    pub(crate) mode: Mode,
    /// Codes requested.
    pub(crate) flags: usize,
    /// Connections (or workers) used.
    pub(crate) concurrency: usize,
    pub(crate) downloaded: usize,
    pub(crate) not_found: usize,
    pub(crate) errors: usize,
    /// Codes not attempted because of Ctrl-C.
    pub(crate) not_attempted: usize,
    pub(crate) interrupted: bool,
    pub(crate) elapsed_secs: f64,
    /// Each error, in completion order.
    pub(crate) error_details: Vec<ErrorDetail<'a>>,
}

/// One failed code in the `--json` report.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorDetail<'a> {
    pub(crate) code: &'a str,
    pub(crate) message: &'a str,
}

impl<'a> JsonReport<'a> {
    /// The report of a run.
    pub(crate) fn new(
        site: (&'a str, &'a str),
        mode: Mode,
        total: usize,
        concurrency: usize,
        tally: &'a Tally,
        elapsed: Duration,
        interrupted: bool,
    ) -> Self {
        let error_details = tally
            .records
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Error { message } => Some(ErrorDetail {
                    code: &r.code,
                    message,
                }),
                _ => None,
            })
            .collect();
        Self {
            server: site.0,
            url: site.1,
            mode,
            flags: total,
            concurrency,
            downloaded: tally.downloaded,
            not_found: tally.not_found,
            errors: tally.errors,
            not_attempted: total.saturating_sub(tally.finished()),
            interrupted,
            elapsed_secs: elapsed.as_secs_f64(),
            error_details,
        }
    }
}

/// One line of `--trace FILE` (JSON lines): times in seconds from the start of the run.
#[derive(Debug, Serialize)]
struct TraceLine<'a> {
    code: &'a str,
    lane: usize,
    start: f64,
    end: f64,
    attempts: u32,
    outcome: &'static str,
}

/// Writes every record as a JSON line, times relative to `run_start`.
///
/// # Errors
///
/// Writing to `out`.
pub(crate) fn write_trace(
    out: &mut dyn std::io::Write,
    records: &[Record],
    run_start: Instant,
) -> std::io::Result<()> {
    let secs = |t: Instant| t.saturating_duration_since(run_start).as_secs_f64();
    for record in records {
        let line = TraceLine {
            code: &record.code,
            lane: record.lane,
            start: secs(record.start),
            end: secs(record.end),
            attempts: record.attempts,
            outcome: record.outcome.label(),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// 130 after Ctrl-C, 1 when any download failed, 0 otherwise (not found is not a failure).
pub(crate) fn exit_code(tally: &Tally, interrupted: bool) -> ExitCode {
    if interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if tally.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(code: &str, outcome: Outcome) -> Record {
        let now = Instant::now();
        Record {
            code: code.into(),
            lane: 0,
            start: now,
            end: now,
            attempts: 1,
            outcome,
        }
    }

    fn codes(list: &[&str]) -> Vec<String> {
        list.iter().map(|&c| c.to_owned()).collect()
    }

    #[test]
    fn initial_report_lists_few_codes() {
        assert_eq!(
            initial_report(
                "BUILTIN",
                "http://127.0.0.1:1/flags",
                &codes(&["AA", "AD", "BR"]),
                1
            ),
            "BUILTIN site: http://127.0.0.1:1/flags\nSearching for 3 flags: AA, AD, BR\n1 connection will be used.\n"
        );
        assert_eq!(
            initial_report("LOCAL", "u", &codes(&["BR"]), 1),
            "LOCAL site: u\nSearching for 1 flag: BR\n1 connection will be used.\n"
        );
        let many = crate::countries::pop20();
        assert_eq!(
            initial_report("DELAY", "u", &many, 20),
            "DELAY site: u\nSearching for 20 flags: from BD to VN\n20 concurrent connections will be used.\n"
        );
    }

    #[test]
    fn final_report_counts() {
        let mut tally = Tally::default();
        for _ in 0..20 {
            tally.add(record("BR", Outcome::Ok));
        }
        for _ in 0..3 {
            tally.add(record("AA", Outcome::NotFound { url: "u".into() }));
        }
        tally.add(record(
            "ZW",
            Outcome::Error {
                message: "HTTP error 418 - I'm a teapot".into(),
            },
        ));
        assert_eq!(
            final_report(&tally, 24, Duration::from_millis(50), false),
            "--------------------\n 20 flags downloaded.\n  3 not found.\n  1 error.\nElapsed time: 0.05s\n"
        );
        assert_eq!(exit_code(&tally, false), ExitCode::FAILURE);
        assert_eq!(
            final_report(&tally, 30, Duration::from_millis(1234), true),
            "--------------------\n 20 flags downloaded.\n  3 not found.\n  1 error.\n  6 not attempted: interrupted by Ctrl-C.\nElapsed time: 1.23s\n"
        );
        assert_eq!(exit_code(&tally, true), ExitCode::from(130));
    }

    #[test]
    fn final_report_singular_and_zero() {
        let mut tally = Tally::default();
        assert_eq!(
            final_report(&tally, 0, Duration::ZERO, false),
            "--------------------\n  0 flags downloaded.\nElapsed time: 0.00s\n"
        );
        tally.add(record("BR", Outcome::Ok));
        tally.add(record(
            "XX",
            Outcome::Error {
                message: "x".into(),
            },
        ));
        tally.add(record(
            "XY",
            Outcome::Error {
                message: "y".into(),
            },
        ));
        assert_eq!(
            final_report(&tally, 3, Duration::ZERO, false),
            "--------------------\n  1 flag downloaded.\n  2 errors.\nElapsed time: 0.00s\n"
        );
    }

    #[test]
    fn verbose_lines() {
        assert_eq!(verbose_line(&record("BR", Outcome::Ok)), "BR OK");
        assert_eq!(
            verbose_line(&record(
                "AA",
                Outcome::NotFound {
                    url: "http://h/aa/aa.gif".into()
                }
            )),
            "AA not found: http://h/aa/aa.gif"
        );
        assert_eq!(
            verbose_line(&record(
                "ZW",
                Outcome::Error {
                    message: "HTTP error 418 - I'm a teapot".into()
                }
            )),
            "ZW error: HTTP error 418 - I'm a teapot"
        );
    }

    #[test]
    fn trace_lines() -> Result<(), Box<dyn std::error::Error>> {
        let start = Instant::now();
        let mut rec = record("BR", Outcome::Ok);
        rec.start = start + Duration::from_millis(10);
        rec.end = start + Duration::from_millis(250);
        rec.lane = 4;
        let mut out = Vec::new();
        write_trace(
            &mut out,
            &[rec, record("AA", Outcome::NotFound { url: "u".into() })],
            start,
        )?;
        let lines: Vec<serde_json::Value> = String::from_utf8(out)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["code"], "BR");
        assert_eq!(lines[0]["lane"], 4);
        assert_eq!(lines[0]["outcome"], "ok");
        assert!((lines[0]["end"].as_f64().unwrap_or_default() - 0.25).abs() < 1e-9);
        assert_eq!(lines[1]["outcome"], "not_found");
        Ok(())
    }

    #[test]
    fn json_report_fields() -> serde_json::Result<()> {
        let mut tally = Tally::default();
        tally.add(record("BR", Outcome::Ok));
        tally.add(record(
            "ZW",
            Outcome::Error {
                message: "boom".into(),
            },
        ));
        let report = JsonReport::new(
            ("BUILTIN", "http://x/flags"),
            Mode::Async,
            3,
            2,
            &tally,
            Duration::from_millis(5),
            true,
        );
        let value = serde_json::to_value(&report)?;
        assert_eq!(value["mode"], "async");
        assert_eq!(value["downloaded"], 1);
        assert_eq!(value["errors"], 1);
        assert_eq!(value["not_attempted"], 1);
        assert_eq!(value["interrupted"], true);
        assert_eq!(
            value["error_details"],
            serde_json::json!([{"code": "ZW", "message": "boom"}])
        );
        Ok(())
    }
}
