//! What a run reports: the outcome and record of each download, the counters, the flags2-style
//! initial and final reports, the `--json` object (written by a run, read back by `flags bench`)
//! and the exit status.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::plan::Mode;

/// Exit status after Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// How one download ended, with the detail to print ([`DownloadStatus`] is the same without
/// it). Serde: it crosses from the worker processes of `--mode processes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
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
    /// The outcome without its detail.
    pub fn status(&self) -> DownloadStatus {
        match self {
            Self::Ok => DownloadStatus::Ok,
            Self::NotFound { .. } => DownloadStatus::NotFound,
            Self::Error { .. } => DownloadStatus::Error,
        }
    }
}

/// How one download ended, without the detail: the book's `DownloadStatus`. A trace line's
/// `outcome` (`ok`, `not_found`, `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadStatus {
    /// Saved.
    Ok,
    /// 404.
    NotFound,
    /// Anything else.
    Error,
}

impl DownloadStatus {
    /// Every status, in the order reports list them.
    pub const ALL: [Self; 3] = [Self::Ok, Self::NotFound, Self::Error];
}

/// One finished download: what the report counts and what traces and `flags bench` draw.
#[derive(Debug, Clone)]
pub struct Record {
    /// The country code, upper case.
    pub code: String,
    /// The connection (sequential, async) or worker thread or process (threads, processes)
    /// that ran it, from 0.
    pub lane: usize,
    /// When the download started (before the first request).
    pub start: Instant,
    /// When it ended (after the save, or the last failure).
    pub end: Instant,
    /// Requests made for the flag (1 + retries used).
    pub attempts: u32,
    /// How it ended.
    pub outcome: Outcome,
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
pub struct Tally {
    /// Flags saved.
    pub downloaded: usize,
    /// Codes the server answered 404 for.
    pub not_found: usize,
    /// Codes that failed otherwise.
    pub errors: usize,
    /// Every finished download, in completion order.
    pub records: Vec<Record>,
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

/// The `--json` report: one object on stdout. `flags bench` reads it back from each run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonReport {
    /// `BUILTIN`, `LOCAL`, `DELAY`, `ERROR`, `REMOTE` or `URL`.
    pub server: String,
    /// The base URL downloaded from.
    pub url: String,
    /// How the downloads were scheduled.
    pub mode: Mode,
    /// Codes requested.
    pub flags: usize,
    /// Connections (or workers) used.
    pub concurrency: usize,
    /// Flags saved.
    pub downloaded: usize,
    /// Codes the server answered 404 for.
    pub not_found: usize,
    /// Codes that failed otherwise.
    pub errors: usize,
    /// Codes not attempted because of Ctrl-C.
    pub not_attempted: usize,
    /// Whether Ctrl-C stopped the run.
    pub interrupted: bool,
    /// From just before the first download to the end of the last, in seconds.
    pub elapsed_secs: f64,
    /// Each error, in completion order.
    pub error_details: Vec<ErrorDetail>,
}

/// One failed code in the `--json` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The country code.
    pub code: String,
    /// Why it failed, in one line.
    pub message: String,
}

impl JsonReport {
    /// The report of a run.
    pub(crate) fn new(
        site: (&str, &str),
        mode: Mode,
        total: usize,
        concurrency: usize,
        tally: &Tally,
        elapsed: Duration,
        interrupted: bool,
    ) -> Self {
        let error_details = tally
            .records
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Error { message } => Some(ErrorDetail {
                    code: r.code.clone(),
                    message: message.clone(),
                }),
                _ => None,
            })
            .collect();
        Self {
            server: site.0.to_owned(),
            url: site.1.to_owned(),
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

/// How a run ended: what it counted, and whether Ctrl-C stopped it.
#[derive(Debug)]
pub struct Summary {
    /// The counters and the records.
    pub tally: Tally,
    /// Whether Ctrl-C stopped the run (codes not started were not attempted).
    pub interrupted: bool,
}

impl Summary {
    /// The exit status of the `flags` command after this run: 130 after Ctrl-C, 1 when any
    /// download failed, 0 otherwise (not found is not a failure).
    pub fn exit_code(&self) -> ExitCode {
        exit_code(&self.tally, self.interrupted)
    }
}

/// 130 after Ctrl-C, 1 when any download failed, 0 otherwise (not found is not a failure).
fn exit_code(tally: &Tally, interrupted: bool) -> ExitCode {
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
        // `flags bench` reads the report back with the same type.
        assert_eq!(serde_json::from_value::<JsonReport>(value)?, report);
        Ok(())
    }
}
