//! What the server allows: the best a downloader with `lanes` connections can do when request
//! `i` takes `delays[i]` and nothing else costs time.
//!
//! [`greedy`] is list scheduling in submission order, which is what every mode does: a code
//! starts on the first connection to come free, in the order the codes were submitted. It is
//! the ideal a correct downloader should reach. [`lower_bound`] is what no schedule of those
//! delays can beat, `max(longest delay, total / lanes)`; greedy is within a factor of 2 of it
//! (Graham's bound) and usually much closer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// The ideal run time of a set of delays on some number of lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ideal {
    /// The makespan of the greedy schedule in submission order.
    pub(crate) greedy: Duration,
    /// `max(longest delay, total delay / lanes)`.
    pub(crate) lower_bound: Duration,
}

impl Ideal {
    /// Both figures for `delays`, in submission order, on `lanes` connections (at least 1).
    pub(crate) fn new(delays: &[Duration], lanes: usize) -> Self {
        Self {
            greedy: greedy(delays, lanes),
            lower_bound: lower_bound(delays, lanes),
        }
    }
}

/// The makespan of list scheduling: each delay, in order, goes to the lane that frees first
/// (the lowest-numbered one on a tie). `lanes` is taken as at least 1.
pub(crate) fn greedy(delays: &[Duration], lanes: usize) -> Duration {
    let lanes = lanes.max(1);
    // Lanes by the time they come free; the lane number breaks ties, as a FIFO pool would.
    let mut free: BinaryHeap<Reverse<(Duration, usize)>> = (0..lanes.min(delays.len()))
        .map(|lane| Reverse((Duration::ZERO, lane)))
        .collect();
    let mut makespan = Duration::ZERO;
    for &delay in delays {
        let Some(Reverse((at, lane))) = free.pop() else {
            break;
        };
        let end = at.saturating_add(delay);
        makespan = makespan.max(end);
        free.push(Reverse((end, lane)));
    }
    makespan
}

/// `max(longest delay, total delay / lanes)`: no schedule on `lanes` connections is shorter.
pub(crate) fn lower_bound(delays: &[Duration], lanes: usize) -> Duration {
    let longest = delays.iter().copied().max().unwrap_or_default();
    let total: Duration = delays.iter().sum();
    let lanes = u32::try_from(lanes.max(1)).unwrap_or(u32::MAX);
    longest.max(total / lanes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(list: &[u64]) -> Vec<Duration> {
        list.iter().copied().map(Duration::from_millis).collect()
    }

    #[test]
    fn nothing_to_do() {
        assert_eq!(
            Ideal::new(&[], 4),
            Ideal {
                greedy: Duration::ZERO,
                lower_bound: Duration::ZERO
            }
        );
    }

    #[test]
    fn one_lane_is_the_sum() {
        let d = ms(&[100, 300, 200]);
        assert_eq!(greedy(&d, 1), Duration::from_millis(600));
        assert_eq!(lower_bound(&d, 1), Duration::from_millis(600));
        // Zero lanes means one.
        assert_eq!(greedy(&d, 0), Duration::from_millis(600));
    }

    #[test]
    fn more_lanes_than_requests_is_the_longest() {
        let d = ms(&[100, 300, 200]);
        assert_eq!(greedy(&d, 10), Duration::from_millis(300));
        assert_eq!(lower_bound(&d, 10), Duration::from_millis(300));
    }

    #[test]
    fn hand_computed_two_lanes() {
        // Lane 0: 100 then (free at 100) 50 → 150, then (free at 150) 300 → 450.
        // Lane 1: 200, then (free at 200) 100 → 300.
        // Order: 100→L0 [0,100]; 200→L1 [0,200]; 50→L0 [100,150]; 300→L0 [150,450];
        // 100→L1 [200,300]. Makespan 450. Total 750 / 2 = 375, longest 300: bound 375.
        let d = ms(&[100, 200, 50, 300, 100]);
        assert_eq!(greedy(&d, 2), Duration::from_millis(450));
        assert_eq!(lower_bound(&d, 2), Duration::from_millis(375));
    }

    #[test]
    fn submission_order_matters() {
        // Long job last: 3 lanes, [1,1,1,1,1,1,3] → the 3 starts at 2, ends at 5.
        // Long job first: it runs [0,3] while the others fill the other two lanes by 3.
        let last = ms(&[1, 1, 1, 1, 1, 1, 3]);
        let first = ms(&[3, 1, 1, 1, 1, 1, 1]);
        assert_eq!(greedy(&last, 3), Duration::from_millis(5));
        assert_eq!(greedy(&first, 3), Duration::from_millis(3));
        assert_eq!(lower_bound(&last, 3), Duration::from_millis(3));
    }

    #[test]
    fn ties_go_to_the_lowest_lane() {
        // Equal delays on 3 lanes: rounds of 3, so 7 requests take 3 rounds.
        let d = ms(&[10; 7]);
        assert_eq!(greedy(&d, 3), Duration::from_millis(30));
        assert_eq!(lower_bound(&d, 3), Duration::from_nanos(23_333_333));
    }

    #[test]
    fn greedy_is_between_the_bound_and_twice_it() {
        let d: Vec<Duration> = (0..194u64)
            .map(|i| Duration::from_millis(100 + (i * 7919) % 400))
            .collect();
        for lanes in [1, 2, 10, 30, 100, 194, 500] {
            let ideal = Ideal::new(&d, lanes);
            assert!(ideal.greedy >= ideal.lower_bound, "{lanes}");
            assert!(ideal.greedy <= 2 * ideal.lower_bound, "{lanes}");
        }
    }
}
