//! What a download run is asked to do: the [`Plan`] and its option types. The engine owns them;
//! the command line only fills them in (ripgrep's `HiArgs` is built from flags, the searcher
//! never sees a flag).

use std::path::PathBuf;
use std::time::Duration;

/// The most connections (or workers) a run will use, whatever it is asked for.
pub const MAX_CONCURRENT_REQ: usize = 1000;

/// How the downloads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One request after the other, on one keep-alive connection.
    Sequential,
    /// Our `ThreadPoolExecutor`, one worker thread per connection, a blocking HTTP client.
    Threads,
    /// Tokio tasks, at most one per connection in flight.
    Async,
    /// Our `ProcessPoolExecutor`, one worker process per connection, each with its own client.
    Processes,
    /// `flags worker` processes, on this host or others, fed through a Redis broker
    /// ([`Plan::cluster`]).
    Cluster,
}

impl Mode {
    /// Every mode that runs on this host alone, in the order the command line and `flags
    /// bench` list them ([`Mode::Cluster`] needs a broker and workers).
    pub const ALL: [Self; 4] = [
        Self::Sequential,
        Self::Threads,
        Self::Async,
        Self::Processes,
    ];

    /// The mode's name: `sequential`, `threads`, `async` or `processes`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sequential => "sequential",
            Self::Threads => "threads",
            Self::Async => "async",
            Self::Processes => "processes",
            Self::Cluster => "cluster",
        }
    }

    /// Connections (or workers) a run of `codes` downloads uses when `max_req` are allowed:
    /// 1 for the sequential mode, otherwise `min(max_req, codes)`, from 1 to
    /// [`MAX_CONCURRENT_REQ`].
    pub fn concurrency(self, max_req: usize, codes: usize) -> usize {
        match self {
            Self::Sequential => 1,
            _ => max_req.min(codes).clamp(1, MAX_CONCURRENT_REQ),
        }
    }
}

/// How saved files are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NameBy {
    /// `{CC}.gif`.
    Code,
    /// `{Country_Name}.gif`, from the server's `{cc}/metadata.json`.
    Country,
}

/// Where to download from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// The built-in test server, started in-process on an ephemeral loopback port.
    Builtin,
    /// A named server of the book (`LOCAL`, `DELAY`, `ERROR`, `REMOTE`) or a URL (label `URL`).
    Remote {
        /// How the initial report names the server.
        label: &'static str,
        /// The base URL, without a trailing slash.
        base_url: String,
    },
}

/// Where `--mode cluster` sends its downloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The broker's URL: `redis://host:port/db` or `redis+unix:///path`.
    pub broker: String,
    /// The queue (key prefix) the workers serve.
    pub queue: String,
}

/// The validated settings of a download run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The codes to download, upper case, sorted, without duplicates.
    pub codes: Vec<String>,
    /// Where to download from.
    pub server: Server,
    /// How to schedule the downloads.
    pub mode: Mode,
    /// Connections (or workers) to use: see [`Mode::concurrency`].
    pub concurrency: usize,
    /// The directory the flags are saved in (it must exist).
    pub dest: PathBuf,
    /// The longest a request may take, body included.
    pub timeout: Duration,
    /// Retries of a transient error (timeout, connection failure, 429, 5xx).
    pub retries: u32,
    /// Print the final report as one JSON object, and no initial report.
    pub json: bool,
    /// Print a line per finished download, and no progress bar.
    pub verbose: bool,
    /// How saved files are named.
    pub name_by: NameBy,
    /// Where to write the per-download trace (JSON lines), if anywhere.
    pub trace: Option<PathBuf>,
    /// The broker and queue of [`Mode::Cluster`] (`None` in the other modes).
    pub cluster: Option<Cluster>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_bounded_by_codes_and_mode() {
        assert_eq!(Mode::Sequential.concurrency(9, 194), 1);
        assert_eq!(Mode::Threads.concurrency(30, 194), 30);
        assert_eq!(Mode::Async.concurrency(500, 194), 194);
        assert_eq!(Mode::Processes.concurrency(5000, 676), 676);
        assert_eq!(Mode::Threads.concurrency(5000, 5000), MAX_CONCURRENT_REQ);
        assert_eq!(Mode::Threads.concurrency(30, 0), 1);
    }

    #[test]
    fn names_are_the_json_names() -> serde_json::Result<()> {
        for mode in Mode::ALL {
            assert_eq!(serde_json::to_value(mode)?, mode.name());
            assert_eq!(serde_json::from_value::<Mode>(mode.name().into())?, mode);
        }
        Ok(())
    }
}
