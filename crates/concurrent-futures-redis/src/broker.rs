//! The broker connection: URL checks, connecting with a deadline, and reconnecting
//! with backoff after the broker went away (restart, network).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisError};

use crate::error::BuildError;
use crate::wire::GROUP;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest pause between reconnection attempts.
const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A broker address that parsed, and how to connect to it.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    client: Client,
    /// The URL as given, without a password, for messages.
    shown: String,
}

impl Broker {
    /// Checks `url` (`redis://host:port/db` or `redis+unix:///path`, also `unix://`).
    pub(crate) fn parse(url: &str) -> Result<Self, BuildError> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        let shown = redact(url);
        match scheme {
            Some("redis" | "redis+unix" | "unix") => {}
            Some(other) => {
                return Err(BuildError::new(format!(
                    "the broker URL {shown:?} has the scheme {other:?}: use redis://host:port/db or redis+unix:///path/to/redis.sock"
                )));
            }
            None => {
                return Err(BuildError::new(format!(
                    "the broker URL {shown:?} is not a URL: use redis://host:port/db or redis+unix:///path/to/redis.sock"
                )));
            }
        }
        let client = Client::open(url).map_err(|e| {
            BuildError::new(format!("the broker URL {shown:?} does not parse: {e}"))
        })?;
        Ok(Self { client, shown })
    }

    /// The URL for messages (no password).
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }

    /// One connection, with a deadline for connecting; reads and writes time out after
    /// `io_timeout` (so a broker that stops answering is noticed).
    pub(crate) fn connect(&self, io_timeout: Duration) -> Result<Connection, RedisError> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(io_timeout))?;
        con.set_write_timeout(Some(io_timeout))?;
        Ok(con)
    }

    /// Connects, retrying with exponential backoff until it works, `stop` is set, or
    /// `budget` passes since the first failure. Returns the last error otherwise.
    pub(crate) fn reconnect(
        &self,
        io_timeout: Duration,
        stop: &AtomicBool,
        budget: Duration,
    ) -> Result<Connection, RedisError> {
        let start = Instant::now();
        let mut pause = BACKOFF_START;
        loop {
            match self.connect(io_timeout) {
                Ok(con) => return Ok(con),
                Err(e) if stop.load(Ordering::Acquire) || start.elapsed() >= budget => {
                    return Err(e);
                }
                Err(_) => {
                    // Backoff between attempts: the broker is down, there is nothing to
                    // wait on but time.
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Creates the task stream and its consumer group when missing (a fresh broker, or one
/// that lost its data). Reading from id 0, so that tasks added before the group are
/// read too.
pub(crate) fn ensure_group(con: &mut Connection, tasks: &str) -> Result<(), RedisError> {
    let created: Result<(), RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(tasks)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// True for errors after which the connection is useless (reconnect).
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

/// True when the consumer group (or the stream) is gone: the broker lost its data.
pub(crate) fn is_nogroup(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// The time now as milliseconds, for stream ids and expiry arithmetic in messages.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_with_clear_errors() {
        assert!(Broker::parse("redis://127.0.0.1:6379/0").is_ok());
        assert!(Broker::parse("redis+unix:///tmp/redis.sock").is_ok());
        let e = Broker::parse("http://localhost").unwrap_err().to_string();
        assert!(e.contains("\"http\""), "{e}");
        let e = Broker::parse("localhost:6379").unwrap_err().to_string();
        assert!(e.contains("not a URL"), "{e}");
        let e = Broker::parse("redis://user:secret@host:notaport/0")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
