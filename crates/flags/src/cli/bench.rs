//! `flags bench`'s options, as typed, and their validation into a [`bench::Plan`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flags_engine::Mode;

use super::{CodeArgs, ModeArg, UsageError};
use crate::bench::{self, Source};

/// Options of `flags bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which codes every mode downloads.
    #[command(flatten)]
    pub(crate) codes: CodeArgs,

    /// Concurrent requests to try, comma-separated (the sequential mode always uses 1)
    #[arg(
        short,
        long = "max-req",
        value_name = "N,...",
        value_delimiter = ',',
        default_value = "30"
    )]
    pub(crate) max_req: Vec<usize>,

    /// Modes to measure, comma-separated [default: every mode]
    #[arg(
        long = "mode",
        value_enum,
        value_name = "MODE,...",
        value_delimiter = ','
    )]
    pub(crate) modes: Vec<ModeArg>,

    /// Runs of each mode and max_req; the table shows the median
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub(crate) runs: usize,

    /// Shortest delay of the built-in server, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 0.1)]
    pub(crate) min_delay: f64,

    /// Longest delay of the built-in server, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 0.5)]
    pub(crate) max_delay: f64,

    /// Share of `418 I'm a Teapot` answers of the built-in server, 0 to 1
    #[arg(long, value_name = "RATE", default_value_t = 0.0)]
    pub(crate) error_rate: f64,

    /// Seed of the built-in server's delays and errors
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) seed: u64,

    /// Measure this http(s):// base URL instead of the built-in server (the ideal is then
    /// computed from the sequential run's request times)
    #[arg(short, long, value_name = "URL")]
    pub(crate) server: Option<String>,

    /// Timeout of each request, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) timeout: f64,

    /// Print the results as one JSON object on stdout instead of the table
    #[arg(long)]
    pub(crate) json: bool,

    /// Draw the timelines (one panel per mode and max_req) and the elapsed times to FILE (SVG)
    #[arg(long, value_name = "FILE")]
    pub(crate) svg: Option<PathBuf>,

    /// Skip the untraced runs that measure what tracing costs
    #[arg(long)]
    pub(crate) no_overhead: bool,

    /// Internal: run `flags ARGS` and report its peak RSS (how the bench measures each run)
    #[arg(last = true, hide = true, value_name = "ARGS")]
    pub(crate) probe: Vec<String>,
}

impl TryFrom<BenchArgs> for bench::Plan {
    type Error = UsageError;

    fn try_from(args: BenchArgs) -> Result<Self, UsageError> {
        let codes = args.codes.resolve()?;
        let mut max_reqs = Vec::new();
        for &m in &args.max_req {
            if m == 0 {
                return Err(UsageError("--max-req must be at least 1".into()));
            }
            if !max_reqs.contains(&m) {
                max_reqs.push(m);
            }
        }
        if args.runs == 0 {
            return Err(UsageError("--runs must be at least 1".into()));
        }
        let secs = |name: &str, value: f64| {
            if value.is_finite() && (0.0..=3600.0).contains(&value) {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(UsageError(format!(
                    "{name} must be a number of seconds from 0 to 3600"
                )))
            }
        };
        let (min, max) = (
            secs("--min-delay", args.min_delay)?,
            secs("--max-delay", args.max_delay)?,
        );
        if min > max {
            return Err(UsageError("--min-delay must not exceed --max-delay".into()));
        }
        if !(0.0..=1.0).contains(&args.error_rate) {
            return Err(UsageError("--error-rate must be from 0 to 1".into()));
        }
        if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 86_400.0) {
            return Err(UsageError(
                "--timeout must be a number of seconds above 0 and at most 86400".into(),
            ));
        }
        let source = match args.server {
            None => Source::Builtin(
                slow_server::ServerConfig::new()
                    .delay(min, max)
                    .error_rate(args.error_rate)
                    .seed(args.seed),
                (min, max, args.error_rate, args.seed),
            ),
            Some(url) => {
                let lower = url.to_ascii_lowercase();
                let rest = lower
                    .strip_prefix("http://")
                    .or_else(|| lower.strip_prefix("https://"))
                    .unwrap_or_default();
                if rest.is_empty() || rest.starts_with('/') || url.contains(char::is_whitespace) {
                    return Err(UsageError(format!(
                        "--server must be an http(s):// base URL, not {url:?}"
                    )));
                }
                Source::Url(url.trim_end_matches('/').to_owned())
            }
        };
        let asked: Vec<Mode> = args.modes.into_iter().map(Mode::from).collect();
        let modes = Mode::ALL
            .into_iter()
            .filter(|m| asked.is_empty() || asked.contains(m))
            .collect();
        Ok(Self {
            codes,
            modes,
            max_reqs,
            runs: args.runs,
            source,
            timeout: args.timeout,
            json: args.json,
            svg: args.svg,
            overhead: !args.no_overhead,
        })
    }
}
