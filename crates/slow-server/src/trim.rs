//! Giving memory back to the system after a burst of connections.
//!
//! glibc keeps what it freed in its per-thread arenas: a server that went back to idle after a
//! burst of connections kept the burst's memory, and back-to-back bursts grew it further
//! (fragmentation). `malloc_trim(0)` once the open connections have halved returns the free
//! pages of every arena (the figures are in the crate's BENCHMARKS.md).

use std::sync::atomic::{AtomicBool, Ordering};

/// A trim is worth it only after at least this many connections were open at once.
const MIN_PEAK: usize = 1024;

/// Set while a trim runs: a load that swings around the threshold must not start trims
/// that overlap (each locks the allocator's arenas while it walks them).
static TRIMMING: AtomicBool = AtomicBool::new(false);

/// Watches the number of open connections and trims each time it has halved since its peak (or
/// since the last trim): a burst's memory goes back while it drains, even when the next burst
/// arrives before the last connection of the previous one has closed.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    peak: usize,
}

impl Trimmer {
    /// Records the number of open connections; may start a trim on a blocking thread (it must be
    /// called inside the runtime).
    pub(crate) fn observe(&mut self, open: usize) {
        if self.due(open) && !TRIMMING.swap(true, Ordering::AcqRel) {
            tokio::task::spawn_blocking(|| {
                release_free_memory();
                TRIMMING.store(false, Ordering::Release);
            });
        }
    }

    fn due(&mut self, open: usize) -> bool {
        self.peak = self.peak.max(open);
        let due = self.peak >= MIN_PEAK && open <= self.peak / 2;
        if due {
            self.peak = open;
        }
        due
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, reason = "one FFI call to glibc, see the SAFETY comment")]
fn release_free_memory() {
    // SAFETY: `malloc_trim` takes no pointers and locks each arena itself while it walks the
    // free chunks, so it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The open connections of a burst: up to `peak`, then back down to 0; returns the counts at
    /// which a trim was due.
    fn trims_over_a_burst(peak: usize) -> Vec<usize> {
        let mut trimmer = Trimmer::default();
        (0..=peak)
            .chain((0..peak).rev())
            .filter(|&open| trimmer.due(open))
            .collect()
    }

    #[test]
    fn a_large_burst_is_trimmed_on_the_way_down() {
        assert_eq!(trims_over_a_burst(10_000), [5000, 2500, 1250, 625]);
        // A second burst trims again.
        let mut trimmer = Trimmer::default();
        let burst = || (0..=10_000).chain((0..10_000).rev());
        let trims = burst()
            .chain(burst())
            .filter(|&open| trimmer.due(open))
            .count();
        assert_eq!(trims, 8);
    }

    #[test]
    fn small_loads_are_never_trimmed() {
        assert_eq!(trims_over_a_burst(MIN_PEAK - 1), Vec::<usize>::new());
    }
}
