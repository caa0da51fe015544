//! [`Error`]: why a run stopped before its downloads could be counted. A failed download is not
//! an error: it is a [`Record`](crate::Record) with an error [`Outcome`](crate::Outcome).

use std::path::PathBuf;

use concurrent_futures::{BrokenPoolError, BuildError};

/// Why a download run could not be carried out.
///
/// Each variant names what could not be done; the cause, where there is one, is its
/// [`source`](std::error::Error::source), so `{:#}` under anyhow prints the whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The in-process test server (`Server::Builtin`) could not start.
    #[error("cannot start the built-in server")]
    BuiltinServer(#[source] slow_server::ServerError),
    /// The async mode's HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The async mode's tokio runtime could not start.
    #[error("cannot start the tokio runtime")]
    Runtime(#[source] std::io::Error),
    /// The threads mode's pool could not start.
    #[error("cannot start the thread pool")]
    ThreadPool(#[source] BuildError),
    /// The threads mode's pool refused a task without having been shut down by Ctrl-C.
    #[error("the thread pool refused a task (broken pool)")]
    ThreadPoolRefused,
    /// The processes mode's pool could not start.
    #[error("cannot start the process pool")]
    ProcessPool(#[source] BuildError),
    /// The processes mode's pool broke (its workers could not start, for example).
    #[error("the process pool is broken: {0}")]
    ProcessPoolBroken(BrokenPoolError),
    /// The processes mode's pool refused a task without having been shut down by Ctrl-C.
    #[error("the process pool refused a task")]
    ProcessPoolRefused,
    /// The cluster's broker could not be reached, or refused the client or worker.
    #[error("cannot use the cluster's broker")]
    Cluster(#[source] concurrent_futures_redis::BuildError),
    /// The cluster executor or worker stopped on an error (the broker stayed away).
    #[error("the cluster failed: {0}")]
    ClusterBroken(String),
    /// Nothing could be created in `--dest` (to date the start of the run).
    #[error("cannot write to --dest {}", path.display())]
    Dest {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `--trace` file could not be created.
    #[error("cannot create --trace {}", path.display())]
    TraceCreate {
        /// The trace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The `--trace` file could not be written.
    #[error("cannot write --trace {}", path.display())]
    TraceWrite {
        /// The trace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `flags get`'s list could not be opened.
    #[error("cannot read the list {}", path.display())]
    List {
        /// The list file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `flags get`'s list could not be read to its end.
    #[error("cannot read the list")]
    ListRead(#[source] std::io::Error),
    /// `flags get`'s resume journal could not be written.
    #[error("cannot write the journal in --dest")]
    JournalWrite(#[source] std::io::Error),
    /// `flags get`'s list of failures could not be written.
    #[error("cannot write the list of failures in --dest")]
    FailedWrite(#[source] std::io::Error),
    /// The `--json` report could not be encoded.
    #[error("cannot encode the JSON report")]
    Json(#[source] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync_and_static() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<Error>();
    }
}
