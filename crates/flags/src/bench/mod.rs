//! `flags bench`: the chapter's lesson, measured. Every mode downloads the same codes from the
//! same seeded slow server, several times, and each is compared with what the server allows:
//! the greedy schedule of its delays on `max_req` connections ([`ideal`]). The table says how
//! far each mode is from that ideal and from the sequential loop; `--svg` draws every request
//! on its lane.
//!
//! Each run is a child `flags --json --trace FILE` process ([`measure`]), so the figures are
//! those of the real command, peak RSS included, and the runs do not share a heap or a pool.

mod ideal;
mod measure;
mod svg;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flags_engine::Mode;

use self::ideal::Ideal;
use self::measure::Run;
pub(crate) use self::measure::probe;

/// Where the bench downloads from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The built-in server, with this configuration, and its delays, error rate and seed.
    Builtin(slow_server::ServerConfig, (Duration, Duration, f64, u64)),
    /// A server somewhere else.
    Url(String),
}

/// The validated settings of a bench (`flags bench`'s options, checked by the command line).
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The codes every mode downloads.
    pub(crate) codes: Vec<String>,
    /// The modes to measure, in [`Mode::ALL`] order.
    pub(crate) modes: Vec<Mode>,
    /// The `-m` values to try, without duplicates (the sequential mode always uses 1).
    pub(crate) max_reqs: Vec<usize>,
    /// Runs of each mode and max_req.
    pub(crate) runs: usize,
    /// Where the runs download from.
    pub(crate) source: Source,
    /// `--timeout` of each run, in seconds.
    pub(crate) timeout: f64,
    /// Print JSON instead of the table.
    pub(crate) json: bool,
    /// Where to draw the SVG, if anywhere.
    pub(crate) svg: Option<PathBuf>,
    /// Also measure untraced runs, for what tracing costs.
    pub(crate) overhead: bool,
}

/// One mode at one max_req: its runs and what the server allowed.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) mode: Mode,
    /// The `-m` asked for.
    pub(crate) max_req: usize,
    /// Connections (or workers) used: `min(max_req, codes)`.
    pub(crate) lanes: usize,
    /// Traced runs, in the order they ran.
    pub(crate) runs: Vec<Run>,
    /// Untraced runs, to measure what tracing costs (none for the sequential mode).
    pub(crate) untraced: Vec<Run>,
    pub(crate) ideal: Option<Ideal>,
    /// The median over the median run's requests of (request time − the server's delay for
    /// it): what each request costs beyond the wait the server imposes (seeded server only).
    pub(crate) extra_per_request: Option<Duration>,
}

impl Row {
    /// The median elapsed time of the traced runs.
    pub(crate) fn median(&self) -> Duration {
        median(self.runs.iter().map(|r| r.elapsed).collect())
    }

    pub(crate) fn min_max(&self) -> (Duration, Duration) {
        let elapsed = self.runs.iter().map(|r| r.elapsed);
        (
            elapsed.clone().min().unwrap_or_default(),
            elapsed.max().unwrap_or_default(),
        )
    }

    /// The run drawn in the timeline: the one with the median elapsed time (the lower one of an
    /// even count).
    pub(crate) fn median_run(&self) -> Option<&Run> {
        let mut runs: Vec<&Run> = self.runs.iter().collect();
        runs.sort_by_key(|r| r.elapsed);
        runs.get(runs.len().saturating_sub(1) / 2).copied()
    }

    /// Median elapsed over the ideal (greedy) time.
    pub(crate) fn ratio(&self) -> Option<f64> {
        let ideal = self.ideal?.greedy.as_secs_f64();
        (ideal > 0.0).then(|| self.median().as_secs_f64() / ideal)
    }

    /// The median peak RSS, where measured.
    pub(crate) fn peak_rss_kib(&self) -> Option<u64> {
        let mut rss: Vec<u64> = self.runs.iter().filter_map(|r| r.peak_rss_kib).collect();
        rss.sort_unstable();
        rss.get(rss.len().saturating_sub(1) / 2).copied()
    }

    /// What tracing costs: `(traced − untraced) / untraced` of the median elapsed and wall
    /// times, in percent.
    pub(crate) fn trace_overhead(&self) -> Option<(f64, f64)> {
        if self.untraced.is_empty() {
            return None;
        }
        let pct = |on: Duration, off: Duration| {
            100.0 * (on.as_secs_f64() - off.as_secs_f64()) / off.as_secs_f64().max(1e-9)
        };
        let untraced_elapsed = median(self.untraced.iter().map(|r| r.elapsed).collect());
        let wall = |runs: &[Run]| median(runs.iter().map(|r| r.wall).collect());
        Some((
            pct(self.median(), untraced_elapsed),
            pct(wall(&self.runs), wall(&self.untraced)),
        ))
    }
}

/// The median of some durations (the mean of the middle two for an even count).
pub(crate) fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

/// A delay setting for titles: `0.1`, `0.25`, `0.005`.
pub(crate) fn short_secs(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64());
    let text = text.trim_end_matches('0');
    text.strip_suffix('.').unwrap_or(text).to_owned()
}

/// Everything a bench measured.
#[derive(Debug)]
pub(crate) struct Bench {
    /// `BUILTIN` or `URL`.
    pub(crate) server: &'static str,
    pub(crate) url: String,
    pub(crate) codes: usize,
    pub(crate) runs: usize,
    /// The built-in server's settings (none for `--server URL`).
    pub(crate) delay: Option<(Duration, Duration, f64, u64)>,
    /// Where the ideal comes from: `seed` or `sequential`.
    pub(crate) ideal_source: &'static str,
    /// What two clock reads (the timing of one request) cost, in nanoseconds.
    pub(crate) record_ns: f64,
    /// What writing one `--trace` line costs, in nanoseconds.
    pub(crate) trace_line_ns: f64,
    /// CPUs available, and the 1-minute load average before and after (Linux only): the
    /// machine may be shared, and a loaded one stretches every figure.
    pub(crate) cpus: usize,
    pub(crate) load: Option<(f64, f64)>,
    pub(crate) rows: Vec<Row>,
}

impl Bench {
    /// The sequential row's median: the base of the speed-ups.
    pub(crate) fn sequential(&self) -> Option<Duration> {
        self.rows
            .iter()
            .find(|r| r.mode == Mode::Sequential)
            .map(Row::median)
    }

    /// How many times faster than the sequential mode.
    pub(crate) fn speedup(&self, row: &Row) -> Option<f64> {
        let base = self.sequential()?.as_secs_f64();
        let this = row.median().as_secs_f64();
        (this > 0.0).then(|| base / this)
    }

    /// What tracing costs a run of `row`, measured directly: the timing of each request and
    /// the writing of its trace line, in percent of the row's median elapsed time.
    pub(crate) fn trace_cost_pct(&self, row: &Row) -> f64 {
        let requests = row.runs.first().map_or(self.codes, |r| r.requests.len());
        let cost = (self.record_ns + self.trace_line_ns) * requests as f64 * 1e-9;
        100.0 * cost / row.median().as_secs_f64().max(1e-9)
    }
}

/// Runs the plan, prints the table (or JSON) and draws the SVG.
///
/// # Errors
///
/// Failing to start the built-in server, a run that fails (see [`measure::run`]), or failing to
/// draw or write the SVG.
pub(crate) fn run(plan: &Plan) -> anyhow::Result<ExitCode> {
    let (server, url, _builtin, delays) = match &plan.source {
        Source::Builtin(config, _) => {
            let handle =
                slow_server::start(config.clone()).context("cannot start the built-in server")?;
            let delays: Vec<Duration> = plan
                .codes
                .iter()
                .map(|cc| {
                    let lower = cc.to_ascii_lowercase();
                    slow_server::plan_for(config, &format!("/flags/{lower}/{lower}.gif")).delay
                })
                .collect();
            ("BUILTIN", handle.flags_url(), Some(handle), Some(delays))
        }
        Source::Url(url) => ("URL", url.clone(), None, None),
    };
    let no_proxy = matches!(plan.source, Source::Builtin(..));

    let load_before = load_average();
    let mut rows = Vec::new();
    for &mode in &plan.modes {
        let max_reqs: &[usize] = if mode == Mode::Sequential {
            &[1]
        } else {
            &plan.max_reqs
        };
        for &max_req in max_reqs {
            rows.push(Row::new(plan, mode, max_req));
        }
    }
    // Round after round, every row once per round: a change of load on a shared machine
    // then stretches every mode alike instead of the one that happened to run then.
    for round in 1..=plan.runs {
        for row in &mut rows {
            measure_once(plan, &url, row, round, no_proxy)?;
        }
    }

    // The ideal: the seeded delays, or else the sequential run's request times.
    let (delays, ideal_source) = match delays {
        Some(delays) => (Some(delays), "seed"),
        None => (sequential_delays(&rows, &plan.codes), "sequential"),
    };
    if let Some(delays) = &delays {
        for row in &mut rows {
            row.ideal = Some(Ideal::new(delays, row.lanes));
        }
    }
    if ideal_source == "seed"
        && let Some(delays) = &delays
    {
        let by_code: std::collections::HashMap<&str, Duration> = plan
            .codes
            .iter()
            .map(String::as_str)
            .zip(delays.iter().copied())
            .collect();
        for row in &mut rows {
            row.extra_per_request = row.median_run().map(|run| {
                median(
                    run.requests
                        .iter()
                        .filter_map(|r| {
                            let took = Duration::try_from_secs_f64(r.end - r.start).ok()?;
                            Some(took.saturating_sub(*by_code.get(r.code.as_str())?))
                        })
                        .collect(),
                )
            });
        }
    }

    let bench = Bench {
        server,
        url,
        codes: plan.codes.len(),
        runs: plan.runs,
        delay: match &plan.source {
            Source::Builtin(_, settings) => Some(*settings),
            Source::Url(_) => None,
        },
        ideal_source,
        record_ns: record_cost_ns(),
        trace_line_ns: trace_line_ns().context("cannot time the writing of a trace")?,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        load: load_before.zip(load_average()),
        rows,
    };
    if let Some(path) = &plan.svg {
        let svg = svg::render(&bench).context("cannot draw the charts")?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let out = if plan.json {
        serde_json::to_string_pretty(&table::json(&bench)).context("cannot encode the JSON")? + "\n"
    } else {
        table::text(&bench)
    };
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    Ok(ExitCode::SUCCESS)
}

impl Row {
    /// A row with no runs yet.
    fn new(plan: &Plan, mode: Mode, max_req: usize) -> Self {
        Self {
            mode,
            max_req,
            lanes: mode.concurrency(max_req, plan.codes.len()),
            runs: Vec::new(),
            untraced: Vec::new(),
            ideal: None,
            extra_per_request: None,
        }
    }
}

/// Runs `row`'s mode once traced and, for the concurrent modes, once untraced (in alternating
/// order from round to round, so that neither always runs first).
fn measure_once(
    plan: &Plan,
    url: &str,
    row: &mut Row,
    round: usize,
    no_proxy: bool,
) -> anyhow::Result<()> {
    let mode_name = row.mode.name();
    let mut args = vec![
        "--mode".to_owned(),
        mode_name.to_owned(),
        "-m".to_owned(),
        row.max_req.to_string(),
        "-s".to_owned(),
        url.to_owned(),
        "--timeout".to_owned(),
        plan.timeout.to_string(),
    ];
    args.extend(plan.codes.iter().cloned());
    let untraced = plan.overhead && row.mode != Mode::Sequential;
    let untraced_first = round.is_multiple_of(2);
    if untraced && untraced_first {
        row.untraced.push(measure::run(&args, false, no_proxy)?);
    }
    let run = measure::run(&args, true, no_proxy)?;
    eprintln!(
        "{mode_name:>10} -m {:<4} run {round}/{}: {:.3} s",
        row.max_req,
        plan.runs,
        run.elapsed.as_secs_f64()
    );
    row.runs.push(run);
    if untraced && !untraced_first {
        row.untraced.push(measure::run(&args, false, no_proxy)?);
    }
    Ok(())
}

/// Each code's request time in the median sequential run, in code order (0 for a code the run
/// did not reach).
fn sequential_delays(rows: &[Row], codes: &[String]) -> Option<Vec<Duration>> {
    let run = rows
        .iter()
        .find(|r| r.mode == Mode::Sequential)?
        .median_run()?;
    Some(
        codes
            .iter()
            .map(|cc| {
                run.requests
                    .iter()
                    .find(|r| &r.code == cc)
                    .and_then(|r| Duration::try_from_secs_f64(r.end - r.start).ok())
                    .unwrap_or_default()
            })
            .collect(),
    )
}

/// The 1-minute load average, from `/proc/loadavg` where there is one.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// What the per-request timing costs: two `Instant::now()` (start and end), in nanoseconds,
/// timed over many reads.
fn record_cost_ns() -> f64 {
    const READS: u32 = 200_000;
    let started = Instant::now();
    let mut last = started;
    for _ in 0..READS {
        last = std::hint::black_box(Instant::now());
    }
    let total = last.saturating_duration_since(started);
    2.0 * total.as_nanos() as f64 / f64::from(READS)
}

/// What writing one `--trace` line costs, in nanoseconds: the fastest of a few rounds of
/// writing 200 records to a file the way `flags --trace` does.
fn trace_line_ns() -> anyhow::Result<f64> {
    use std::io::Write as _;
    const LINES: u32 = 200;
    let start = Instant::now();
    let records: Vec<flags_engine::Record> = (0..LINES)
        .map(|i| flags_engine::Record {
            code: format!(
                "{}{}",
                char::from(b'A' + (i / 26 % 26) as u8),
                char::from(b'A' + (i % 26) as u8)
            ),
            lane: (i % 30) as usize,
            start,
            end: start + Duration::from_millis(u64::from(i)),
            attempts: 1,
            outcome: flags_engine::Outcome::Ok,
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(dir.path().join("trace.jsonl"))?);
        flags_engine::write_trace(&mut file, &records, start)?;
        file.flush()?;
        drop(file);
        best = best.min(started.elapsed());
    }
    Ok(best.as_nanos() as f64 / f64::from(LINES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![]), Duration::ZERO);
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(
            median(vec![ms(4), ms(1), ms(2), ms(3)]),
            Duration::from_micros(2500)
        );
    }

    #[test]
    fn short_seconds() {
        assert_eq!(short_secs(Duration::from_millis(100)), "0.1");
        assert_eq!(short_secs(Duration::from_millis(5)), "0.005");
        assert_eq!(short_secs(Duration::from_secs(2)), "2");
        assert_eq!(short_secs(Duration::ZERO), "0");
    }
}
