//! File descriptors: the process's limit, and the share of it the servers may use.
//!
//! Every connection and every file a server opens takes a descriptor. When the process has none
//! left, `accept` fails with `EMFILE` and new clients wait unanswered in the kernel's queue
//! until some connection closes, so the `503` promised past the connection cap never comes.
//! The servers of a process therefore share a budget set below the soft limit when the first
//! of them starts:
//!
//! - a permit per descriptor a served connection holds: its socket, taken at `accept`, and the
//!   file a request reads, taken before the file is opened and kept while it is sent;
//! - a smaller pool of permits for connections past the cap, each answered `503` with
//!   `Retry-After` (beyond it, a connection is closed unanswered);
//! - a reserve that no connection takes, for everything else: listeners, the runtime, the
//!   standard streams.

use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most connections answered `503` at once, in the whole process.
const MAX_REJECTING: usize = 1024;

/// The descriptor of a served connection's socket or of a file being read, counted.
pub(crate) type Descriptor = OwnedSemaphorePermit;

/// What the servers of this process may open.
#[derive(Debug)]
pub(crate) struct Budget {
    /// One permit per descriptor of a served connection (its socket, a file it reads).
    serving: Arc<Semaphore>,
    /// One permit per connection being answered `503`.
    rejecting: Arc<Semaphore>,
}

impl Budget {
    /// The process's budget, sized from the soft limit in force the first time it is asked for
    /// (when the first server starts).
    pub(crate) fn get() -> &'static Self {
        static BUDGET: OnceLock<Budget> = OnceLock::new();
        BUDGET.get_or_init(|| Self::for_limit(soft_limit()))
    }

    /// The budget of a process allowed `limit` descriptors (`None`: no known limit).
    pub(crate) fn for_limit(limit: Option<u64>) -> Self {
        let Share { serving, rejecting } = Share::of(limit);
        Self {
            serving: Arc::new(Semaphore::new(serving)),
            rejecting: Arc::new(Semaphore::new(rejecting)),
        }
    }

    /// A descriptor for a connection to serve or a file to open, if the budget has one left.
    pub(crate) fn serving(&self) -> Option<Descriptor> {
        Arc::clone(&self.serving).try_acquire_owned().ok()
    }

    /// A place among the connections being answered `503`, if there is one left.
    pub(crate) fn rejecting(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.rejecting).try_acquire_owned().ok()
    }
}

/// How a descriptor limit is shared; what neither part takes is the reserve.
#[derive(Debug, PartialEq, Eq)]
struct Share {
    serving: usize,
    rejecting: usize,
}

impl Share {
    /// The share of `limit` descriptors (`None`: no known limit). The reserve is a sixteenth
    /// of the limit, but at least 64 descriptors (half the limit below 128); an eighth of the
    /// rest, up to [`MAX_REJECTING`], answers `503`s.
    fn of(limit: Option<u64>) -> Self {
        // Semaphores count up to `MAX_PERMITS`; no process gets near that many descriptors.
        let most = Semaphore::MAX_PERMITS / 2;
        let limit = limit.map_or(most, |limit| {
            usize::try_from(limit).map_or(most, |limit| limit.min(most))
        });
        let reserve = (limit / 16).max(limit.min(128) / 2);
        let usable = limit - reserve;
        let rejecting = (usable / 8).clamp(1, MAX_REJECTING);
        Self {
            serving: usable.saturating_sub(rejecting).max(1),
            rejecting,
        }
    }
}

/// The soft limit on open files, if the platform has one.
#[cfg(unix)]
fn soft_limit() -> Option<u64> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft == RLIM_INFINITY => None,
        Ok((soft, _)) => Some(soft),
        // getrlimit cannot fail for a valid resource; if it did, assume the usual default.
        Err(_) => Some(1024),
    }
}

#[cfg(not(unix))]
fn soft_limit() -> Option<u64> {
    None
}

/// Raises the process's soft limit on open files to its hard limit, and returns the soft
/// limit in force afterwards (`None`: unlimited, or no such limit on this platform).
///
/// Many systems start processes with a soft limit of 1,024 descriptors and a much higher hard
/// one. The servers of a process share what the soft limit allows when the first of them
/// starts (a reserve is kept for everything else, and connections past the share get `503`),
/// so call this first: `flags serve` does. The new limit is inherited by child processes.
///
/// # Errors
///
/// What `setrlimit` said, if the limit could not be raised; the old one is still in force.
///
/// # Examples
///
/// ```
/// let limit = slow_server::raise_descriptor_limit()?;
/// let server = slow_server::start(slow_server::ServerConfig::new())?;
/// # let _ = (limit, server);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn raise_descriptor_limit() -> std::io::Result<Option<u64>> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        }
    }
    Ok(soft_limit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(limit: u64) -> (usize, usize) {
        let Share { serving, rejecting } = Share::of(Some(limit));
        (serving, rejecting)
    }

    #[test]
    fn the_usual_limits() {
        // 64 in reserve, 120 for 503s.
        assert_eq!(share(1024), (840, 120));
        assert_eq!(share(256), (168, 24));
        // A sixteenth in reserve, the 503s at their cap.
        assert_eq!(share(65_536), (60_416, 1024));
    }

    #[test]
    fn every_share_leaves_a_reserve() {
        for limit in (8..5000).chain([1 << 20, 1 << 30]) {
            let (serving, rejecting) = share(limit);
            let reserve = limit as usize - serving - rejecting;
            assert!(serving >= 1 && rejecting >= 1, "{limit}");
            assert!(
                reserve >= (limit as usize / 16).max(4),
                "{limit}: reserve {reserve}"
            );
        }
    }

    #[test]
    fn tiny_and_unknown_limits() {
        assert_eq!(share(0), (1, 1));
        let unlimited = Share::of(None);
        assert_eq!(unlimited.rejecting, MAX_REJECTING);
        assert!(unlimited.serving > Semaphore::MAX_PERMITS / 4);
    }
}
