//! `flags get`'s options ([`GetArgs`]), validated into the engine's [`GetPlan`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flags_engine::{GetPlan, ListSource, Mode};

use super::{MAX_TIMEOUT_SECS, ModeArg, UsageError};

/// Default `--max-req` of `flags get`.
const DEFAULT_MAX_REQ: usize = 50;
/// Default `--max-size`: 4 GiB.
const DEFAULT_MAX_SIZE: u64 = 4 << 30;

/// `flags get`'s options, as typed (validated by [`GetPlan::try_from`]).
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// URLs to download (or use -i)
    #[arg(value_name = "URL", conflicts_with = "input")]
    pub(crate) urls: Vec<String>,

    /// A list of URLs, one a line, optionally followed by the output name; `-` is stdin.
    /// Blank lines and `#` comments are ignored
    #[arg(short, long = "input", value_name = "LIST")]
    pub(crate) input: Option<PathBuf>,

    /// How to schedule the downloads (sequential runs as threads with -m 1)
    #[arg(long, value_enum, default_value_t = ModeArg::Threads)]
    pub(crate) mode: ModeArg,

    /// Maximum concurrent requests in all [default: 50; 1000 at most]
    #[arg(short, long = "max-req", value_name = "N")]
    pub(crate) max_req: Option<usize>,

    /// Maximum concurrent requests per host (and port)
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub(crate) max_per_host: usize,

    /// Directory for the downloaded files (created if missing)
    #[arg(long, value_name = "DIR", default_value = "downloaded")]
    pub(crate) dest: PathBuf,

    /// Timeout of each request, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub(crate) timeout: f64,

    /// Retries of a transient error (timeout, connection failure, 429, 5xx)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) retries: u32,

    /// Largest body saved: bytes, or with a K, M or G suffix (powers of 1024) [default: 4G]
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_size: Option<String>,

    /// Make no request for an entry whose file exists
    #[arg(long)]
    pub(crate) skip_existing: bool,

    /// Ask only for files newer than the saved ones (If-Modified-Since the file's time); saved
    /// files get the server's Last-Modified
    #[arg(short = 'N', long)]
    pub(crate) timestamping: bool,

    /// Print the final report as one JSON object on stdout
    #[arg(long)]
    pub(crate) json: bool,

    /// Output a line per entry as it completes (and no progress bar)
    #[arg(short, long)]
    pub(crate) verbose: bool,

    /// Write one JSON line per finished entry (the URL as "code", lane, start and end in
    /// seconds from the start of the run, outcome) to FILE, as it finishes
    #[arg(long, value_name = "FILE")]
    pub(crate) trace: Option<PathBuf>,
}

/// Parses `--max-size`: `1000`, `64K`, `10M`, `4G` (powers of 1024; a `B` or `iB` may follow).
fn parse_size(text: &str) -> Option<u64> {
    let upper = text.trim().to_ascii_uppercase();
    let upper = upper
        .strip_suffix("IB")
        .or(upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (digits, shift) = match upper.chars().last()? {
        'K' => (&upper[..upper.len() - 1], 10),
        'M' => (&upper[..upper.len() - 1], 20),
        'G' => (&upper[..upper.len() - 1], 30),
        'T' => (&upper[..upper.len() - 1], 40),
        _ => (upper, 0),
    };
    let value: u64 = digits.trim().parse().ok()?;
    value.checked_mul(1 << shift).filter(|&size| size > 0)
}

impl TryFrom<GetArgs> for GetPlan {
    type Error = UsageError;

    fn try_from(args: GetArgs) -> Result<Self, UsageError> {
        let source = match args.input {
            Some(path) if path.as_os_str() == "-" => ListSource::Stdin,
            Some(path) => ListSource::File(path),
            None if args.urls.is_empty() => {
                return Err(UsageError("give URLs or a list with -i LIST".into()));
            }
            None => ListSource::Urls(args.urls),
        };
        let mode = match args.mode {
            ModeArg::Threads | ModeArg::Sequential => Mode::Threads,
            ModeArg::Async => Mode::Async,
            ModeArg::Processes => Mode::Processes,
            ModeArg::Cluster => {
                return Err(UsageError(
                    "flags get has no cluster mode yet: use threads, async or processes".into(),
                ));
            }
        };
        let max_req = match (args.mode, args.max_req) {
            (_, Some(0)) => return Err(UsageError("--max-req must be at least 1".into())),
            (ModeArg::Sequential, _) => 1,
            (_, Some(n)) => n.min(flags_engine::MAX_CONCURRENT_REQ),
            (_, None) => DEFAULT_MAX_REQ,
        };
        if args.max_per_host == 0 {
            return Err(UsageError("--max-per-host must be at least 1".into()));
        }
        if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= MAX_TIMEOUT_SECS) {
            return Err(UsageError(format!(
                "--timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}"
            )));
        }
        if args.dest.as_os_str().is_empty() {
            return Err(UsageError("--dest must not be empty".into()));
        }
        let max_size = match args.max_size {
            None => DEFAULT_MAX_SIZE,
            Some(text) => parse_size(&text).ok_or_else(|| {
                UsageError(format!(
                    "--max-size must be a size above 0 such as 1000, 64K, 10M or 4G, not {text:?}"
                ))
            })?,
        };
        Ok(Self {
            source,
            mode,
            max_req,
            max_per_host: args.max_per_host,
            dest: args.dest,
            timeout: Duration::from_secs_f64(args.timeout),
            retries: args.retries,
            max_size,
            skip_existing: args.skip_existing,
            timestamping: args.timestamping,
            json: args.json,
            verbose: args.verbose,
            trace: args.trace,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn plan(args: &[&str]) -> Result<GetPlan, UsageError> {
        let cli = Cli::try_parse_from(["flags", "get"].into_iter().chain(args.iter().copied()))
            .map_err(|e| UsageError(e.to_string()))?;
        match cli.command {
            Some(Command::Get(args)) => GetPlan::try_from(args),
            _ => Err(UsageError("not get".into())),
        }
    }

    #[test]
    fn defaults_and_sources() -> Result<(), UsageError> {
        let p = plan(&["http://h/a"])?;
        assert_eq!(p.source, ListSource::Urls(vec!["http://h/a".into()]));
        assert_eq!((p.mode, p.max_req, p.max_per_host), (Mode::Threads, 50, 8));
        assert_eq!(p.max_size, 4 << 30);
        assert_eq!(plan(&["-i", "-"])?.source, ListSource::Stdin);
        assert_eq!(
            plan(&["-i", "l.txt", "--mode", "async", "-m", "3"])?.mode,
            Mode::Async
        );
        assert_eq!(plan(&["-i", "l", "--max-size", "10M"])?.max_size, 10 << 20);
        Ok(())
    }

    #[test]
    fn usage_errors() {
        for args in [
            &[][..],
            &["-i", "l", "http://h/a"],
            &["-i", "l", "-m", "0"],
            &["-i", "l", "--max-per-host", "0"],
            &["-i", "l", "--max-size", "0"],
            &["-i", "l", "--max-size", "ten"],
            &["-i", "l", "--timeout", "0"],
        ] {
            assert!(plan(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1MB"), Some(1 << 20));
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }
}
