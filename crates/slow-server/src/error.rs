//! The error of starting a server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Why a server could not start.
///
/// Each message is one line, fit to print after `error: ` on a command line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The minimum delay is greater than the maximum delay.
    #[error(
        "invalid delay: the minimum ({} s) is greater than the maximum ({} s)",
        min.as_secs_f64(),
        max.as_secs_f64()
    )]
    DelayRange {
        /// The minimum delay asked for.
        min: Duration,
        /// The maximum delay asked for.
        max: Duration,
    },
    /// The error rate is not a probability.
    #[error("invalid error rate {0}: it must be between 0 and 1")]
    ErrorRate(f64),
    /// The connection cap is zero.
    #[error("invalid connection limit: at least one connection must be allowed")]
    MaxConnections,
    /// The header read timeout is zero.
    #[error("invalid header read timeout: it must be longer than zero")]
    HeaderTimeout,
    /// The directory to serve cannot be opened.
    #[error("cannot serve directory {}: {source}", path.display())]
    Dir {
        /// The directory asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The path to serve is not a directory.
    #[error("cannot serve {}: not a directory", path.display())]
    NotADirectory {
        /// The path asked for.
        path: PathBuf,
    },
    /// The address cannot be bound or listened on (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The background runtime or thread of [`start`](crate::start) could not be created.
    #[error("cannot start the server runtime: {0}")]
    Runtime(std::io::Error),
}
