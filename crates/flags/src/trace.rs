//! `--trace FILE`: one JSON line per download. A run writes it ([`write_trace`]) and
//! `flags bench` reads it back ([`parse_trace`]), both through [`TraceLine`].

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::report::{DownloadStatus, Record};

/// One line of a trace: a download, with times in seconds from the start of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceLine {
    /// The country code.
    pub code: String,
    /// The connection or worker that ran it (see [`Record::lane`]).
    pub lane: usize,
    /// When the download started, in seconds from the start of the run.
    pub start: f64,
    /// When it ended, in seconds from the start of the run.
    pub end: f64,
    /// Requests made (1 + retries used).
    pub attempts: u32,
    /// How it ended.
    pub outcome: DownloadStatus,
}

impl TraceLine {
    /// The line of `record`, its times taken from `run_start`.
    pub fn new(record: &Record, run_start: Instant) -> Self {
        let secs = |t: Instant| t.saturating_duration_since(run_start).as_secs_f64();
        Self {
            code: record.code.clone(),
            lane: record.lane,
            start: secs(record.start),
            end: secs(record.end),
            attempts: record.attempts,
            outcome: record.outcome.status(),
        }
    }
}

/// Writes every record as a JSON line, times relative to `run_start`.
///
/// # Errors
///
/// Writing to `out`.
pub fn write_trace(
    out: &mut dyn std::io::Write,
    records: &[Record],
    run_start: Instant,
) -> std::io::Result<()> {
    for record in records {
        serde_json::to_writer(&mut *out, &TraceLine::new(record, run_start))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A line of a trace that is not a [`TraceLine`].
#[derive(Debug, thiserror::Error)]
#[error("bad trace line: {line}")]
pub struct BadTraceLine {
    line: String,
    #[source]
    source: serde_json::Error,
}

/// Reads a trace written by [`write_trace`]; blank lines are skipped.
///
/// # Errors
///
/// The first line that is not a [`TraceLine`].
pub fn parse_trace(text: &str) -> Result<Vec<TraceLine>, BadTraceLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|source| BadTraceLine {
                line: line.to_owned(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::Outcome;

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
        let text = String::from_utf8(out)?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["code"], "BR");
        assert_eq!(lines[0]["lane"], 4);
        assert_eq!(lines[0]["outcome"], "ok");
        assert!((lines[0]["end"].as_f64().unwrap_or_default() - 0.25).abs() < 1e-9);
        assert_eq!(lines[1]["outcome"], "not_found");

        // `flags bench` reads it back with the same type.
        let parsed = parse_trace(&format!("{text}\n"))?;
        assert_eq!(parsed.len(), 2);
        assert_eq!((parsed[0].code.as_str(), parsed[0].lane), ("BR", 4));
        assert_eq!(parsed[1].outcome, DownloadStatus::NotFound);
        assert!(parse_trace("{\"code\": \"BR\"}").is_err());
        Ok(())
    }
}
