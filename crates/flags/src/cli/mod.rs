//! The command line: `flags [OPTIONS] [CC]...` and its subcommands.
//!
//! [`Cli`] is the raw record clap fills in; [`Plan::try_from`] validates it into the engine's
//! [`Plan`] (ripgrep's lowargs → hiargs split). A validation failure is a [`UsageError`]: `main`
//! prints it as `*** Usage error: …` plus the usage line and exits with 2. The clap types stay
//! here: the engine's [`Mode`] and [`NameBy`] have command-line twins ([`ModeArg`],
//! [`NameByArg`]) that convert into them.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod bench;
mod get;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use flags_engine::countries;
use flags_engine::{Mode, NameBy, Plan, Server};

pub(crate) use self::bench::BenchArgs;
pub(crate) use self::get::GetArgs;

/// Default `--max-req` for the concurrent modes.
const DEFAULT_CONCURRENT_REQ: usize = 30;
/// Default `--max-req` for the sequential mode.
const DEFAULT_SEQUENTIAL_REQ: usize = 1;
/// The longest `--timeout` accepted, in seconds (one day).
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// Download flags of countries, as in Fluent Python's flags2 examples.
#[derive(Debug, Parser)]
#[command(name = "flags", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    /// A subcommand; without one, `flags` downloads.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// What to download and how.
    #[command(flatten)]
    pub(crate) download: DownloadArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the test HTTP server (the book's LOCAL, DELAY and ERROR servers by default).
    Serve(crate::serve::ServeArgs),
    /// Compare the modes against the seeded test server and the ideal schedule; draw it
    Bench(BenchArgs),
    /// Serve `--mode cluster` downloads from a Redis broker (run one per host)
    Worker(WorkerArgs),
    /// Download many URLs from a list (or the command line): bounded memory, per-host limits,
    /// safe names, resumable
    Get(GetArgs),
}

/// Which country codes, as typed: shared by the downloader and `flags bench`.
#[derive(Debug, Args)]
pub(crate) struct CodeArgs {
    /// Country codes: two letters, or one letter for the 26 codes starting with it
    /// [default: the 20 most populous countries]
    #[arg(value_name = "CC")]
    pub(crate) codes: Vec<String>,

    /// All 194 available flags (AD to ZW)
    #[arg(short, long, conflicts_with_all = ["every", "codes"])]
    pub(crate) all: bool,

    /// Every possible code (AA to ZZ, 676 requests)
    #[arg(short, long, conflicts_with = "codes")]
    pub(crate) every: bool,

    /// Only the first N codes (after sorting)
    #[arg(short, long, value_name = "N")]
    pub(crate) limit: Option<usize>,
}

impl CodeArgs {
    /// The codes asked for: upper case, sorted, without duplicates, cut to `--limit`.
    ///
    /// # Errors
    ///
    /// A code that is not one or two letters, or `--limit 0`.
    pub(crate) fn resolve(&self) -> Result<Vec<String>, UsageError> {
        let mut codes = if self.every {
            countries::every()
        } else if self.all {
            countries::all()
        } else if self.codes.is_empty() {
            countries::pop20()
        } else {
            countries::expand(&self.codes).map_err(|e| UsageError(e.to_string()))?
        };
        if let Some(limit) = self.limit {
            if limit == 0 {
                return Err(UsageError("--limit must be at least 1".into()));
            }
            codes.truncate(limit);
        }
        Ok(codes)
    }
}

/// The downloader's options, as typed (validated by [`Plan::try_from`]).
#[derive(Debug, Args)]
pub(crate) struct DownloadArgs {
    /// Which codes to download.
    #[command(flatten)]
    pub(crate) codes: CodeArgs,

    /// Maximum concurrent requests [default: 30; 1000 at most; --mode sequential always uses 1]
    #[arg(short, long = "max-req", value_name = "N")]
    pub(crate) max_req: Option<usize>,

    /// Server: BUILTIN (in-process test server), LOCAL, DELAY, ERROR, REMOTE, or an http(s):// base URL
    #[arg(short, long, value_name = "LABEL|URL", default_value = "BUILTIN")]
    pub(crate) server: String,

    /// Output a line per code as it completes (and no progress bar)
    #[arg(short, long)]
    pub(crate) verbose: bool,

    /// How to schedule the downloads
    #[arg(long, value_enum, default_value_t = ModeArg::Threads)]
    pub(crate) mode: ModeArg,

    /// The Redis broker of --mode cluster: redis://HOST:PORT/DB or redis+unix:///PATH
    #[arg(long, value_name = "URL")]
    pub(crate) broker: Option<String>,

    /// The queue of --mode cluster, served by `flags worker --queue NAME`
    #[arg(long, value_name = "NAME", default_value = "flags")]
    pub(crate) queue: String,

    /// Directory for the downloaded files (created if missing)
    #[arg(long, value_name = "DIR", default_value = "downloaded")]
    pub(crate) dest: PathBuf,

    /// Timeout of each request, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) timeout: f64,

    /// Retries of a transient error (timeout, connection failure, 429, 5xx), with exponential
    /// backoff and jitter; honours Retry-After
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) retries: u32,

    /// Print the final report as one JSON object on stdout
    #[arg(long)]
    pub(crate) json: bool,

    /// Write one JSON line per download (code, lane, start and end in seconds from the start of
    /// the run, attempts, outcome) to FILE
    #[arg(long, value_name = "FILE")]
    pub(crate) trace: Option<PathBuf>,

    /// Name files by country code (BR.gif) or by the country name from metadata.json (Brazil.gif)
    #[arg(long, value_enum, value_name = "HOW", default_value_t = NameByArg::Code)]
    pub(crate) name_by: NameByArg,
}

/// `--mode`: how the downloads are scheduled (the engine's [`Mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ModeArg {
    /// One request after the other, on one keep-alive connection
    Sequential,
    /// A ThreadPoolExecutor with --max-req workers and a blocking HTTP client
    Threads,
    /// Tokio tasks with at most --max-req requests in flight
    Async,
    /// A ProcessPoolExecutor with --max-req worker processes, each with its own HTTP client
    Processes,
    /// `flags worker` processes, here or on other hosts, fed through a Redis broker
    /// (--broker); at most --max-req downloads in flight
    Cluster,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Sequential => Self::Sequential,
            ModeArg::Threads => Self::Threads,
            ModeArg::Async => Self::Async,
            ModeArg::Processes => Self::Processes,
            ModeArg::Cluster => Self::Cluster,
        }
    }
}

/// `--name-by`: how saved files are named (the engine's [`NameBy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum NameByArg {
    /// `{CC}.gif`
    Code,
    /// `{Country_Name}.gif`, from the server's `{cc}/metadata.json`
    Country,
}

impl From<NameByArg> for NameBy {
    fn from(name_by: NameByArg) -> Self {
        match name_by {
            NameByArg::Code => Self::Code,
            NameByArg::Country => Self::Country,
        }
    }
}

/// The named servers of the book and their base URLs.
const SERVERS: [(&str, &str); 4] = [
    ("LOCAL", "http://localhost:8000/flags"),
    ("DELAY", "http://localhost:8001/flags"),
    ("ERROR", "http://localhost:8002/flags"),
    ("REMOTE", "https://www.fluentpython.com/data/flags"),
];

/// Parses `-s LABEL|URL`.
fn parse_server(arg: &str) -> Result<Server, UsageError> {
    if arg.eq_ignore_ascii_case("BUILTIN") {
        return Ok(Server::Builtin);
    }
    if let Some(&(label, url)) = SERVERS
        .iter()
        .find(|(label, _)| arg.eq_ignore_ascii_case(label))
    {
        return Ok(Server::Remote {
            label,
            base_url: url.to_owned(),
        });
    }
    let lower = arg.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !arg.chars().any(char::is_whitespace) =>
        {
            Ok(Server::Remote {
                label: "URL",
                base_url: arg.trim_end_matches('/').to_owned(),
            })
        }
        _ => Err(UsageError(format!(
            "unknown server {arg:?}: expected BUILTIN, LOCAL, DELAY, ERROR, REMOTE or an http(s):// URL"
        ))),
    }
}

/// A broker URL as the `redis` crate takes it: `redis://`, `rediss://`, `redis+unix://` or
/// `unix://`; whether the broker is there is found out when the run connects.
fn parse_broker(url: &str) -> Result<String, UsageError> {
    let schemes = ["redis://", "rediss://", "redis+unix://", "unix://"];
    if schemes
        .iter()
        .any(|s| url.starts_with(s) && url.len() > s.len())
    {
        Ok(url.to_owned())
    } else {
        Err(UsageError(format!(
            "invalid broker URL {url:?}: expected redis://HOST:PORT/DB or redis+unix:///PATH"
        )))
    }
}

/// A queue name: a Redis key prefix, so printable and without spaces or braces (the
/// keys' hash tag).
fn parse_queue(name: &str) -> Result<String, UsageError> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '{' && c != '}')
    {
        Ok(name.to_owned())
    } else {
        Err(UsageError(format!(
            "invalid queue name {name:?}: 1 to 64 printable ASCII characters, no braces"
        )))
    }
}

/// `flags worker`: serve `--mode cluster` downloads from a broker.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The Redis broker: redis://HOST:PORT/DB or redis+unix:///PATH
    #[arg(long, value_name = "URL")]
    pub(crate) broker: String,

    /// The queue to serve (the clients' --queue)
    #[arg(long, value_name = "NAME", default_value = "flags")]
    pub(crate) queue: String,

    /// Downloads at once on this worker (downloads wait on the network, so they run on
    /// threads, not processes)
    #[arg(long, visible_alias = "procs", value_name = "N", default_value_t = 32)]
    pub(crate) threads: usize,

    /// Save here instead of the --dest each client names (which must otherwise be a path
    /// this host can reach, such as shared storage)
    #[arg(long, value_name = "DIR")]
    pub(crate) dest: Option<PathBuf>,
}

impl TryFrom<WorkerArgs> for flags_engine::WorkerPlan {
    type Error = UsageError;

    fn try_from(args: WorkerArgs) -> Result<Self, UsageError> {
        if args.threads == 0 || args.threads > MAX_CONCURRENT_REQ_WORKER {
            return Err(UsageError(format!(
                "--threads must be from 1 to {MAX_CONCURRENT_REQ_WORKER}"
            )));
        }
        Ok(Self {
            broker: parse_broker(&args.broker)?,
            queue: parse_queue(&args.queue)?,
            threads: args.threads,
            dest: args.dest,
        })
    }
}

/// The most downloads a worker runs at once.
const MAX_CONCURRENT_REQ_WORKER: usize = 1000;

/// A command line that parses but makes no sense; exit status 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

impl TryFrom<DownloadArgs> for Plan {
    type Error = UsageError;

    fn try_from(args: DownloadArgs) -> Result<Self, UsageError> {
        let codes = args.codes.resolve()?;
        let mode = Mode::from(args.mode);
        let max_req = match args.max_req {
            Some(0) => return Err(UsageError("--max-req must be at least 1".into())),
            Some(n) => n,
            None if mode == Mode::Sequential => DEFAULT_SEQUENTIAL_REQ,
            None => DEFAULT_CONCURRENT_REQ,
        };
        let concurrency = mode.concurrency(max_req, codes.len());
        if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= MAX_TIMEOUT_SECS) {
            return Err(UsageError(format!(
                "--timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}"
            )));
        }
        if args.dest.as_os_str().is_empty() {
            return Err(UsageError("--dest must not be empty".into()));
        }
        let cluster = match (mode, args.broker) {
            (Mode::Cluster, Some(broker)) => Some(flags_engine::Cluster {
                broker: parse_broker(&broker)?,
                queue: parse_queue(&args.queue)?,
            }),
            (Mode::Cluster, None) => {
                return Err(UsageError("--mode cluster needs --broker URL".into()));
            }
            (_, Some(_)) => return Err(UsageError("--broker is only for --mode cluster".into())),
            (_, None) => None,
        };
        Ok(Self {
            cluster,
            codes,
            server: parse_server(&args.server)?,
            mode,
            concurrency,
            dest: args.dest,
            timeout: Duration::from_secs_f64(args.timeout),
            retries: args.retries,
            json: args.json,
            verbose: args.verbose,
            name_by: args.name_by.into(),
            trace: args.trace,
        })
    }
}

impl TryFrom<Cli> for Plan {
    type Error = UsageError;

    fn try_from(cli: Cli) -> Result<Self, UsageError> {
        Self::try_from(cli.download)
    }
}

/// Why an output of the run (`--dest`, `--trace`) cannot be written.
#[derive(Debug)]
pub(crate) enum OutputError {
    /// The path cannot be used (not a directory, no permission, a read-only file system):
    /// a usage error, exit status 2.
    Usage(UsageError),
    /// The file system has no room (no block or inode left, or the quota spent): nothing is
    /// wrong with the command line, so a run-time error, exit status 1.
    Full(anyhow::Error),
}

impl OutputError {
    /// Sorts an I/O error on `what` (`--dest DIR`) into the two kinds.
    fn new(what: &str, error: std::io::Error) -> Self {
        use std::io::ErrorKind;
        // tempfile's errors carry the temporary file's path; the OS error says it all.
        let error = error
            .raw_os_error()
            .map_or(error, std::io::Error::from_raw_os_error);
        if matches!(
            error.kind(),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded
        ) {
            Self::Full(anyhow::Error::new(error).context(format!("cannot write to {what}")))
        } else {
            Self::Usage(UsageError(format!("cannot write to {what}: {error}")))
        }
    }
}

/// Creates `dest` if needed and checks that a file can be created in it.
///
/// # Errors
///
/// An [`OutputError`] naming the directory and the reason.
pub(crate) fn prepare_dest(dest: &Path) -> Result<(), OutputError> {
    let what = format!("--dest {}", dest.display());
    std::fs::create_dir_all(dest).map_err(|e| OutputError::new(&what, e))?;
    tempfile::tempfile_in(dest).map_err(|e| OutputError::new(&what, e))?;
    Ok(())
}

/// Checks, before any download, that the `--trace` file can be written: creates it if
/// missing, and leaves an existing one as it is until the run replaces it.
///
/// # Errors
///
/// An [`OutputError`] naming the file and the reason.
pub(crate) fn prepare_trace(trace: &Path) -> Result<(), OutputError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(trace)
        .map_err(|e| OutputError::new(&format!("--trace {}", trace.display()), e))?;
    Ok(())
}

/// The usage line clap prints, for `*** Usage error` messages.
pub(crate) fn usage() -> String {
    Cli::command().render_usage().to_string()
}

/// The usage line of `flags worker`, for its `*** Usage error` messages.
pub(crate) fn worker_usage() -> String {
    let mut cli = Cli::command();
    cli.find_subcommand_mut("worker")
        .map_or_else(String::new, |worker| worker.render_usage().to_string())
}

/// Checks, before any download, that `flags get`'s list can be opened and is a file.
///
/// # Errors
///
/// A [`UsageError`] naming the list and the reason.
pub(crate) fn prepare_list(list: &Path) -> Result<(), UsageError> {
    let unreadable =
        |e: std::io::Error| UsageError(format!("cannot read the list {}: {e}", list.display()));
    let file = std::fs::File::open(list).map_err(unreadable)?;
    if file.metadata().map_err(unreadable)?.is_dir() {
        return Err(UsageError(format!(
            "cannot read the list {}: it is a directory",
            list.display()
        )));
    }
    Ok(())
}

/// The usage line of `flags get`, for its `*** Usage error` messages.
pub(crate) fn get_usage() -> String {
    let mut command = Cli::command();
    // Built, so that the subcommand's usage line starts with `flags get`.
    command.build();
    command
        .find_subcommand_mut("get")
        .map(|get| get.render_usage().to_string())
        .unwrap_or_default()
}

/// The usage line of `flags bench`, for its `*** Usage error` messages.
pub(crate) fn bench_usage() -> String {
    Cli::command()
        .find_subcommand_mut("bench")
        .map(|bench| bench.render_usage().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Plan, UsageError> {
        let cli = Cli::try_parse_from(std::iter::once("flags").chain(args.iter().copied()))
            .map_err(|e| UsageError(e.to_string()))?;
        Plan::try_from(cli)
    }

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() -> Result<(), UsageError> {
        let c = config(&[])?;
        assert_eq!(c.codes.len(), 20);
        assert_eq!(c.server, Server::Builtin);
        assert_eq!(c.mode, Mode::Threads);
        assert_eq!(c.concurrency, 20);
        assert_eq!(c.dest, PathBuf::from("downloaded"));
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.retries, 0);
        assert_eq!(c.name_by, NameBy::Code);
        assert!(!c.json && !c.verbose);
        Ok(())
    }

    #[test]
    fn concurrency_is_bounded_by_codes_and_mode() -> Result<(), UsageError> {
        assert_eq!(config(&["--mode", "sequential", "-a"])?.concurrency, 1);
        assert_eq!(
            config(&["--mode", "sequential", "-a", "-m", "9"])?.concurrency,
            1
        );
        assert_eq!(config(&["-a"])?.concurrency, 30);
        assert_eq!(config(&["-a", "-m", "500"])?.concurrency, 194);
        assert_eq!(config(&["-e", "-m", "5000"])?.concurrency, 676);
        assert_eq!(config(&["br", "-m", "5000"])?.concurrency, 1);
        assert_eq!(config(&["-a", "-l", "7"])?.codes.len(), 7);
        Ok(())
    }

    #[test]
    fn servers() -> Result<(), UsageError> {
        assert_eq!(config(&["-s", "builtin"])?.server, Server::Builtin);
        assert_eq!(
            config(&["-s", "Delay"])?.server,
            Server::Remote {
                label: "DELAY",
                base_url: "http://localhost:8001/flags".into()
            }
        );
        assert_eq!(
            config(&["-s", "http://127.0.0.1:9/x/"])?.server,
            Server::Remote {
                label: "URL",
                base_url: "http://127.0.0.1:9/x".into()
            }
        );
        for bad in ["nowhere", "ftp://x", "http://", "http:///x", "http://a b"] {
            assert!(config(&["-s", bad]).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["-m", "0"][..],
            &["-l", "0"],
            &["ABC"],
            &["1"],
            &["--timeout", "0"],
            &["--timeout", "NaN"],
            &["--timeout", "-1"],
        ] {
            assert!(config(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn unwritable_dest() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("file");
        std::fs::write(&file, b"x")?;
        assert!(matches!(prepare_dest(&file), Err(OutputError::Usage(_))));
        assert!(matches!(
            prepare_dest(&file.join("below")),
            Err(OutputError::Usage(_))
        ));
        assert!(matches!(
            prepare_trace(dir.path()),
            Err(OutputError::Usage(_))
        ));
        assert!(prepare_trace(&dir.path().join("trace.jsonl")).is_ok());
        assert!(prepare_dest(&dir.path().join("new/dir")).is_ok());
        Ok(())
    }
}
