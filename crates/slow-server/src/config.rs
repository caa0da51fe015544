//! [`ServerConfig`]: what to serve, where, and how badly.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ServerError;

/// The default cap on connections served at once.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// The default time a client has to send a request's headers (and to start its next request
/// on a kept-alive connection).
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a served file's bytes are kept without looking at the file again.
pub(crate) const DEFAULT_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The settings of one server, built step by step and checked when the server starts.
///
/// The default ([`ServerConfig::new`]) serves the built-in flag set on `127.0.0.1` with a port
/// chosen by the system, with no delay, no errors and no seed.
///
/// # Examples
///
/// The book's ERROR server, made reproducible:
///
/// ```
/// use std::time::Duration;
/// use slow_server::ServerConfig;
///
/// let half = Duration::from_millis(500);
/// let config = ServerConfig::new().delay(half, half).error_rate(0.25).seed(42);
/// # drop(config);
/// ```
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(crate) addr: SocketAddr,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) error_rate: f64,
    pub(crate) seed: Option<u64>,
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) file_check_interval: Duration,
}

impl ServerConfig {
    /// The built-in flag set on `127.0.0.1:0`, with no delay, no errors and no seed.
    pub fn new() -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            dir: None,
            min_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            error_rate: 0.0,
            seed: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            file_check_interval: DEFAULT_FILE_CHECK_INTERVAL,
        }
    }

    /// Listens on `addr`; port 0 lets the system choose a free port (see
    /// [`ServerHandle::local_addr`](crate::ServerHandle::local_addr)).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Serves the files under `dir` byte for byte below `/flags/` instead of the built-in flag
    /// set: `dir/br/br.gif` answers `/flags/br/br.gif`.
    ///
    /// The directory must exist when the server starts. No request can read outside it, through
    /// `..`, encoded separators or symbolic links that leave it.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Waits a delay drawn uniformly from `min..=max` before every response to a `GET` or
    /// `HEAD` (errors and 404s included, as in the book's server). The server refuses to start
    /// if `min > max`.
    pub fn delay(mut self, min: Duration, max: Duration) -> Self {
        self.min_delay = min;
        self.max_delay = max;
        self
    }

    /// Answers `418 I'm a Teapot` with probability `rate`, which must be within `0.0..=1.0`.
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Makes the delay and the error verdict a function of the seed and the request path, as
    /// described in [`plan_for`](crate::plan_for).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Serves at most `max` connections at once (default 16,384). A connection past the cap gets
    /// `503 Service Unavailable` with `Retry-After: 1` and is closed.
    ///
    /// Fewer are served if the process's descriptor limit (`ulimit -n`) does not allow `max`:
    /// the servers of a process share what the soft limit allowed when the first of them
    /// started, less a reserve, among their connections and the files they send (see
    /// [`raise_descriptor_limit`](crate::raise_descriptor_limit)); a connection past that share
    /// gets the same `503`, and so does a request for a file when no descriptor is left.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// Closes a connection whose client takes longer than `timeout` to send a request's headers,
    /// or to start the next request on a kept-alive connection (default 10 s). This is what
    /// stops a slowloris client from holding a connection.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// In directory mode, serves a file from memory for up to `interval` after its path and
    /// version (device, inode, length, modification time) were last checked (default 1 s, as
    /// nginx's `open_file_cache_valid`); `Duration::ZERO` checks on every request. Only what
    /// was read through a checked path is ever served, so this bounds how long a change to a
    /// file goes unseen, never what can be read.
    pub fn file_check_interval(mut self, interval: Duration) -> Self {
        self.file_check_interval = interval;
        self
    }

    /// The address the server will listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shortest and longest delay.
    pub fn delay_range(&self) -> (Duration, Duration) {
        (self.min_delay, self.max_delay)
    }

    /// The probability of a `418 I'm a Teapot`.
    pub fn error_probability(&self) -> f64 {
        self.error_rate
    }

    /// The seed, if the faults are deterministic.
    pub fn fixed_seed(&self) -> Option<u64> {
        self.seed
    }

    /// The directory served, if not the built-in flag set.
    pub fn served_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Checks the settings that do not need the file system or the network.
    pub(crate) fn validate(&self) -> Result<(), ServerError> {
        if self.min_delay > self.max_delay {
            return Err(ServerError::DelayRange {
                min: self.min_delay,
                max: self.max_delay,
            });
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(ServerError::ErrorRate(self.error_rate));
        }
        if self.max_connections == 0 {
            return Err(ServerError::MaxConnections);
        }
        if self.header_read_timeout.is_zero() {
            return Err(ServerError::HeaderTimeout);
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::new()
    }
}
