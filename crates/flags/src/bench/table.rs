//! The bench's results as a text table and as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use flags_engine::Mode;
use serde::Serialize;

use super::{Bench, Row};

/// `1.234 s`.
fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// `12.3 MiB`, or `-`.
fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// The table, then what the ideal means and what tracing costs.
pub(crate) fn text(bench: &Bench) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} server: {}\n{} codes, {} run{} each{}",
        bench.server,
        bench.url,
        bench.codes,
        bench.runs,
        if bench.runs == 1 { "" } else { "s" },
        match bench.delay {
            Some((min, max, rate, seed)) => format!(
                "; delays {}–{} s, seed {seed}{}",
                super::short_secs(min),
                super::short_secs(max),
                if rate > 0.0 {
                    format!(", error rate {rate}")
                } else {
                    String::new()
                }
            ),
            None => String::new(),
        }
    );
    if let Some((before, after)) = bench.load {
        let _ = writeln!(
            out,
            "{} CPUs; load average {before:.2} before, {after:.2} after",
            bench.cpus
        );
    }
    let header = [
        "mode",
        "max_req",
        "median s",
        "min–max s",
        "ideal s",
        "bound s",
        "ratio",
        "speed-up",
        "extra/req",
        "peak RSS",
        "trace cost",
    ];
    let mut lines: Vec<[String; 11]> = vec![header.map(String::from)];
    for row in &bench.rows {
        let (min, max) = row.min_max();
        lines.push([
            row.mode.name().to_owned(),
            row.max_req.to_string(),
            secs(row.median()),
            format!("{}–{}", secs(min), secs(max)),
            row.ideal.map_or_else(|| "-".into(), |i| secs(i.greedy)),
            row.ideal
                .map_or_else(|| "-".into(), |i| secs(i.lower_bound)),
            row.ratio()
                .map_or_else(|| "-".into(), |r| format!("{r:.3}")),
            bench
                .speedup(row)
                .map_or_else(|| "-".into(), |s| format!("{s:.1}×")),
            row.extra_per_request.map_or_else(
                || "-".into(),
                |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
            ),
            mib(row.peak_rss_kib()),
            format!("{:.3}%", bench.trace_cost_pct(row)),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, line) in lines.iter().enumerate() {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str("  ");
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    let source = if bench.ideal_source == "seed" {
        "the server's seeded delays"
    } else {
        "the sequential run's request times"
    };
    let (elapsed, wall): (Vec<f64>, Vec<f64>) =
        bench.rows.iter().filter_map(Row::trace_overhead).unzip();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:+.1}%…{hi:+.1}%")
    };
    let _ = writeln!(
        out,
        "\nideal: greedy schedule of {source}, in submission order, on max_req connections; \
         bound: max(longest delay, total / max_req).\n\
         extra/req: median of (request time − the server's delay for it) in the median run.\n\
         trace cost: timing each request (2 clock reads, {:.0} ns) and writing its --trace line \
         ({:.0} ns), measured directly, over the median elapsed time.",
        bench.record_ns, bench.trace_line_ns,
    );
    if !elapsed.is_empty() {
        let _ = writeln!(
            out,
            "cross-check, median of runs with --trace over runs without: elapsed {}, wall time \
             {} (machine noise included).",
            range(&elapsed),
            range(&wall)
        );
    }
    out
}

/// The `--json` object.
#[derive(Debug, Serialize)]
pub(crate) struct Json {
    /// `BUILTIN` or `URL`.
    server: &'static str,
    url: String,
    codes: usize,
    runs: usize,
    /// The built-in server's delays and errors; null for `--server URL`.
    delay: Option<JsonDelay>,
    /// `seed` (the server's seeded delays) or `sequential` (the sequential run's request times).
    ideal_source: &'static str,
    /// Two clock reads: what timing one request costs.
    record_ns: f64,
    /// Writing one `--trace` line.
    trace_line_ns: f64,
    /// CPUs available to the bench.
    cpus: usize,
    /// The 1-minute load average before and after the bench (null where unknown).
    load_average: Option<[f64; 2]>,
    results: Vec<JsonRow>,
}

#[derive(Debug, Serialize)]
struct JsonDelay {
    min_secs: f64,
    max_secs: f64,
    error_rate: f64,
    seed: u64,
}

#[derive(Debug, Serialize)]
struct JsonRow {
    mode: Mode,
    max_req: usize,
    /// Connections (or workers) used.
    lanes: usize,
    /// Each traced run's elapsed time, in the order they ran.
    elapsed_secs: Vec<f64>,
    median_secs: f64,
    min_secs: f64,
    max_secs: f64,
    ideal_secs: Option<f64>,
    lower_bound_secs: Option<f64>,
    ratio: Option<f64>,
    speedup: Option<f64>,
    /// Median over the median run's requests of (request time − server delay), in seconds.
    extra_per_request_secs: Option<f64>,
    peak_rss_kib: Option<u64>,
    /// Median elapsed of the untraced runs (null when not measured).
    untraced_median_secs: Option<f64>,
    /// (traced − untraced) / untraced, of the median elapsed time, in percent.
    trace_overhead_elapsed_pct: Option<f64>,
    /// The same for the wall time of the whole process (the trace file included).
    trace_overhead_wall_pct: Option<f64>,
    /// Timing the requests and writing the trace, measured directly, in percent of the median.
    trace_cost_pct: f64,
    /// Counts of the median run.
    downloaded: usize,
    not_found: usize,
    errors: usize,
}

/// The results as JSON.
pub(crate) fn json(bench: &Bench) -> Json {
    let results = bench
        .rows
        .iter()
        .map(|row: &Row| {
            let (min, max) = row.min_max();
            let median_run = row.median_run();
            let overhead = row.trace_overhead();
            JsonRow {
                mode: row.mode,
                max_req: row.max_req,
                lanes: row.lanes,
                elapsed_secs: row.runs.iter().map(|r| r.elapsed.as_secs_f64()).collect(),
                median_secs: row.median().as_secs_f64(),
                min_secs: min.as_secs_f64(),
                max_secs: max.as_secs_f64(),
                ideal_secs: row.ideal.map(|i| i.greedy.as_secs_f64()),
                lower_bound_secs: row.ideal.map(|i| i.lower_bound.as_secs_f64()),
                ratio: row.ratio(),
                speedup: bench.speedup(row),
                extra_per_request_secs: row.extra_per_request.map(|d| d.as_secs_f64()),
                peak_rss_kib: row.peak_rss_kib(),
                untraced_median_secs: (!row.untraced.is_empty()).then(|| {
                    super::median(row.untraced.iter().map(|r| r.elapsed).collect()).as_secs_f64()
                }),
                trace_overhead_elapsed_pct: overhead.map(|o| o.0),
                trace_overhead_wall_pct: overhead.map(|o| o.1),
                trace_cost_pct: bench.trace_cost_pct(row),
                downloaded: median_run.map_or(0, |r| r.downloaded),
                not_found: median_run.map_or(0, |r| r.not_found),
                errors: median_run.map_or(0, |r| r.errors),
            }
        })
        .collect();
    Json {
        server: bench.server,
        url: bench.url.clone(),
        codes: bench.codes,
        runs: bench.runs,
        delay: bench.delay.map(|(min, max, error_rate, seed)| JsonDelay {
            min_secs: min.as_secs_f64(),
            max_secs: max.as_secs_f64(),
            error_rate,
            seed,
        }),
        ideal_source: bench.ideal_source,
        record_ns: bench.record_ns,
        trace_line_ns: bench.trace_line_ns,
        cpus: bench.cpus,
        load_average: bench.load.map(|(a, b)| [a, b]),
        results,
    }
}
