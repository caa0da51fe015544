//! The pipeline rules: how many tasks a worker's pipe may hold ahead of the one it runs,
//! and when its writer holds back so that another worker takes the next task.
//!
//! Pure functions of what the supervisor knows, passed in; nothing here locks or wakes
//! (the one clock, [`coarse_now`], is read by the caller and handed in as `now`). Who
//! calls them, under which lock, is in `supervisor.rs` and in the state table of the
//! `README.md` beside this file.
//!
//! The depth adapts to the measured task time: tiny tasks are batched by the hundred
//! (one `write` and one `read` for many), slow ones go one at a time so that they spread
//! over the workers. It ramps up (it may double with each result) and falls back to 1
//! after a slow result, so that a few quick first results cannot queue a batch of slow
//! tasks behind one worker.

/// How much work (in nanoseconds of measured task time) is queued in each worker's pipe
/// ahead of what it is running: enough to hide the round trip and to batch system calls
/// for tiny tasks, little enough to balance slow tasks across workers (one at a time).
pub(super) const PIPELINE_NANOS: u64 = 2_000_000;
/// The most tasks queued in one worker's pipe.
const MAX_DEPTH: u64 = 1024;
/// How long a task may run before nothing more is queued behind it: a few pipelines'
/// worth of work, and two ticks of the coarse clock, which ticks every few milliseconds.
const STALL_NANOS: u64 = 8_000_000;

/// What the pool has learnt of its tasks' run time, which sets the depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pipeline {
    /// Moving average of the measured task time, in nanoseconds; `None` before the
    /// first result.
    avg_nanos: Option<u64>,
    /// The most the depth may be now: doubles with each result and falls back to 1
    /// after a slow one.
    ramp: u64,
}

impl Pipeline {
    /// Nothing measured yet: one task at a time.
    pub(super) const fn new() -> Self {
        Self {
            avg_nanos: None,
            ramp: 1,
        }
    }

    /// A result came back; its task ran for `nanos`.
    pub(super) fn observe(&mut self, nanos: u64) {
        self.ramp = if nanos >= PIPELINE_NANOS {
            1
        } else {
            self.ramp.saturating_mul(2).min(MAX_DEPTH)
        };
        self.avg_nanos = Some(match self.avg_nanos {
            None => nanos,
            Some(avg) => (avg.saturating_mul(7) / 8).saturating_add(nanos / 8),
        });
    }

    /// How many tasks a worker's pipe may hold, the running one included: a pipeline's
    /// worth of work at the average task time, within the ramp; at least 1.
    pub(super) fn depth(&self) -> usize {
        let depth = match self.avg_nanos {
            None => 1,
            Some(nanos) => (PIPELINE_NANOS / nanos.max(1)).clamp(1, self.ramp),
        };
        usize::try_from(depth).unwrap_or(1)
    }

    /// A waiting writer is woken only once its worker's pipe holds fewer tasks than
    /// this, so that it refills many at once instead of one write per result.
    pub(super) fn low_water(&self) -> usize {
        (self.depth() / 2).max(1)
    }

    /// What the hand-off model compares states by.
    #[cfg(all(test, not(cf_loom)))]
    pub(super) fn fingerprint(&self) -> [u64; 2] {
        [self.avg_nanos.unwrap_or(u64::MAX), self.ramp]
    }
}

/// A writer's own worker, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Load {
    /// Tasks in its pipe; the front one runs.
    pub(super) in_flight: usize,
    /// Tasks it may still take (`max_tasks_per_child`; `u64::MAX` without a limit).
    pub(super) tasks_left: u64,
    /// The task it runs has run for long ([`is_stalled`]).
    pub(super) stalled: bool,
}

/// How many of `queued` tasks a writer may move into its worker's pipe now: the room
/// the depth leaves, no more than the worker may still take, and no more than a fair
/// share of the queue among the `open_workers` (those taking tasks, and those being
/// started), so that the others get tasks too.
///
/// Nothing waits behind a running task while a worker is being started (`starting`), or
/// behind one that has run for long already: a deep pipeline learnt from tiny tasks
/// would otherwise queue the first slow ones behind each other.
pub(super) fn room(
    depth: usize,
    mine: Load,
    queued: usize,
    open_workers: usize,
    starting: usize,
) -> usize {
    if mine.in_flight > 0 && (starting > 0 || mine.stalled) {
        return 0;
    }
    let room = depth.saturating_sub(mine.in_flight);
    let room = usize::try_from(mine.tasks_left).map_or(room, |left| room.min(left));
    room.min(fair_share(queued, open_workers))
}

/// A fair share of `queued` tasks among `open_workers`: rounded up, and at least 1.
pub(super) fn fair_share(queued: usize, open_workers: usize) -> usize {
    queued.div_ceil(open_workers.max(1)).max(1)
}

/// True when a writer whose worker holds `mine` tasks should leave the next task to
/// another worker that holds `theirs` (and takes tasks): it has fewer, and the one it
/// runs has not run for long. Its writer takes the task rather than let it wait behind
/// this worker's (a slow task here would hold it while the other worker idles).
pub(super) fn defers_to(mine: usize, theirs: usize, their_stalled: bool) -> bool {
    theirs < mine && !their_stalled
}

/// True when the task at the front of a pipe, started at `front_since` (on the coarse
/// clock), has run for long at `now`: nothing more is queued behind it (it may run much
/// longer; a free worker should take the next tasks). A clock that seems to go back
/// counts as no time.
pub(super) fn is_stalled(front_since: Option<u64>, now: u64) -> bool {
    front_since.is_some_and(|since| now.saturating_sub(since) >= STALL_NANOS)
}

/// A monotonic clock that costs a few nanoseconds to read, but ticks only every few
/// milliseconds (`CLOCK_MONOTONIC_COARSE`): it is read once per result, where the
/// precise clock's cost showed in the throughput of tiny tasks, and the long-task rule
/// needs only to tell milliseconds from microseconds.
pub(super) fn coarse_now() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).map_or(0, |t| {
        u64::try_from(t.tv_sec())
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(t.tv_nsec()).unwrap_or(0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(results: &[u64]) -> Pipeline {
        let mut pipeline = Pipeline::new();
        for &nanos in results {
            pipeline.observe(nanos);
        }
        pipeline
    }

    /// A task that takes a two-hundredth of a pipeline's worth of work.
    const TINY: u64 = PIPELINE_NANOS / 200;

    #[test]
    fn one_task_at_a_time_until_a_result_is_measured() {
        assert_eq!(Pipeline::new().depth(), 1);
        assert_eq!(Pipeline::new().low_water(), 1);
    }

    #[test]
    fn the_depth_ramps_up_doubling_with_each_tiny_result() {
        let depths: Vec<usize> = (1..=6).map(|n| after(&vec![TINY; n]).depth()).collect();
        assert_eq!(depths, [2, 4, 8, 16, 32, 64]);
    }

    #[test]
    fn the_depth_is_a_pipeline_of_work_within_its_bounds() {
        assert_eq!(after(&[TINY; 40]).depth(), 200);
        // Tasks of no measurable time: the most the pipe holds, and no division by zero.
        assert_eq!(after(&[0; 40]).depth(), MAX_DEPTH as usize);
        // A task of a pipeline's worth of work or more: one at a time.
        assert_eq!(after(&[PIPELINE_NANOS; 40]).depth(), 1);
        assert_eq!(after(&[u64::MAX; 3]).depth(), 1);
    }

    #[test]
    fn a_slow_result_drops_the_depth_to_one_at_once() {
        let mut results = vec![TINY; 40];
        results.push(PIPELINE_NANOS);
        let pipeline = after(&results);
        // The average is still tiny, but the ramp starts again.
        assert_eq!(pipeline.depth(), 1);
        results.push(TINY);
        assert_eq!(after(&results).depth(), 2);
    }

    #[test]
    fn a_writer_is_woken_at_half_its_depth() {
        assert_eq!(after(&[TINY; 40]).low_water(), 100);
        assert_eq!(after(&[TINY]).low_water(), 1);
    }

    #[test]
    fn a_fair_share_is_rounded_up_and_never_zero() {
        assert_eq!(fair_share(10, 3), 4);
        assert_eq!(fair_share(9, 3), 3);
        assert_eq!(fair_share(1, 4), 1);
        assert_eq!(fair_share(0, 4), 1);
        assert_eq!(fair_share(5, 0), 5);
    }

    fn idle() -> Load {
        Load {
            in_flight: 0,
            tasks_left: u64::MAX,
            stalled: false,
        }
    }

    #[test]
    fn room_is_what_the_depth_leaves_within_the_limits() {
        let busy = Load {
            in_flight: 3,
            ..idle()
        };
        assert_eq!(room(8, idle(), 100, 1, 0), 8);
        assert_eq!(room(8, busy, 100, 1, 0), 5);
        assert_eq!(
            room(2, busy, 100, 1, 0),
            0,
            "a pipe over its depth takes none"
        );
        let retiring = Load {
            tasks_left: 2,
            ..idle()
        };
        assert_eq!(room(8, retiring, 100, 1, 0), 2, "max_tasks_per_child");
        assert_eq!(room(8, idle(), 100, 25, 0), 4, "a fair share");
        assert_eq!(room(8, idle(), 3, 25, 0), 1, "at least one");
    }

    #[test]
    fn nothing_waits_behind_a_running_task_while_a_worker_starts_or_after_a_long_one() {
        let busy = Load {
            in_flight: 1,
            ..idle()
        };
        assert_eq!(room(8, busy, 100, 2, 1), 0, "a worker is being started");
        let stalled = Load {
            stalled: true,
            ..busy
        };
        assert_eq!(room(8, stalled, 100, 2, 0), 0, "its task has run for long");
        // A free worker takes tasks all the same.
        assert_eq!(room(8, idle(), 100, 2, 1), 8);
    }

    #[test]
    fn a_writer_defers_to_a_worker_with_fewer_tasks_that_is_not_stalled() {
        assert!(defers_to(1, 0, false), "an idle worker takes it");
        assert!(defers_to(5, 2, false));
        assert!(!defers_to(2, 2, false), "not to an equal one");
        assert!(!defers_to(1, 0, true), "not to one stuck on a long task");
        assert!(!defers_to(0, 0, false));
    }

    #[test]
    fn a_task_is_stalled_after_it_has_run_for_long() {
        assert!(!is_stalled(None, u64::MAX), "no task");
        assert!(!is_stalled(Some(100), 100));
        assert!(!is_stalled(Some(100), 100 + STALL_NANOS - 1));
        assert!(is_stalled(Some(100), 100 + STALL_NANOS));
        assert!(!is_stalled(Some(100), 50), "a clock that seems to go back");
    }
}
