//! The scheduler of `flags get`: a bounded look-ahead of the list in per-host queues.
//!
//! Entries are read from the list only while fewer than `lookahead` wait in the queues, so
//! memory does not grow with the list. An entry starts when fewer than `max_req` downloads
//! run in all and fewer than `max_per_host` on its host; hosts with room take turns, so a
//! slow host holds at most `max_per_host` slots and the rest of the look-ahead keeps the
//! others busy. A transient failure waits for its retry in a delay queue, holding no slot;
//! a `Retry-After` also pauses its host (only that host) until then.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use super::list::Entry;

/// One host's queue and running count.
#[derive(Debug, Default)]
struct Host {
    queue: VecDeque<Entry>,
    running: usize,
    /// Whether it is in [`Hosts::ready`].
    ready: bool,
}

/// The per-host queues.
#[derive(Debug)]
pub(crate) struct Hosts {
    hosts: HashMap<String, Host>,
    /// Hosts with a queued entry and room to start it, in turn order.
    ready: VecDeque<String>,
    queued: usize,
    running: usize,
    lookahead: usize,
    max_req: usize,
    max_per_host: usize,
    /// Entries waiting for a retry, by when (and order of arrival); counted in `queued`.
    delayed: BinaryHeap<Reverse<Delayed>>,
    /// Hosts that asked to wait (`Retry-After`), until when.
    paused: HashMap<String, Instant>,
    /// Entries put in the delay queue so far (orders entries due at the same instant).
    sequence: u64,
}

/// An entry in the delay queue.
#[derive(Debug)]
struct Delayed {
    due: Instant,
    sequence: u64,
    entry: Entry,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.sequence) == (other.due, other.sequence)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

impl Hosts {
    /// Queues of at most `lookahead` entries in all, for `max_req` downloads at once and
    /// `max_per_host` per host (each at least 1).
    pub(crate) fn new(lookahead: usize, max_req: usize, max_per_host: usize) -> Self {
        Self {
            hosts: HashMap::new(),
            ready: VecDeque::new(),
            queued: 0,
            running: 0,
            lookahead: lookahead.max(1),
            max_req: max_req.max(1),
            max_per_host: max_per_host.max(1),
            delayed: BinaryHeap::new(),
            paused: HashMap::new(),
            sequence: 0,
        }
    }

    /// Puts `entry` (whose download just finished with a transient failure, see
    /// [`Hosts::finished`]) in the delay queue until `due`; with `pause_host`, its host
    /// starts nothing before then either.
    pub(crate) fn retry_at(&mut self, entry: Entry, due: Instant, pause_host: bool) {
        if pause_host {
            let until = self.paused.entry(entry.host.clone()).or_insert(due);
            *until = (*until).max(due);
        }
        self.sequence += 1;
        self.queued += 1;
        self.delayed.push(Reverse(Delayed {
            due,
            sequence: self.sequence,
            entry,
        }));
    }

    /// Moves the retries due by `now` to their hosts' queues, and ends the pauses over.
    pub(crate) fn wake(&mut self, now: Instant) {
        let ended: Vec<String> = self
            .paused
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(host, _)| host.clone())
            .collect();
        for host in ended {
            self.paused.remove(&host);
            self.make_ready(&host);
        }
        while self.delayed.peek().is_some_and(|d| d.0.due <= now) {
            if let Some(Reverse(delayed)) = self.delayed.pop() {
                self.queued -= 1;
                self.push(delayed.entry);
            }
        }
    }

    /// When the next retry is due or pause ends, if any.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let retry = self.delayed.peek().map(|d| d.0.due);
        let pause = self.paused.values().min().copied();
        retry.into_iter().chain(pause).min()
    }

    /// Whether entries wait for a retry (the run is not over while they do).
    pub(crate) fn has_delayed(&self) -> bool {
        !self.delayed.is_empty()
    }

    /// Puts `host` in turn if it has a queued entry and room, and is not paused.
    fn make_ready(&mut self, name: &str) {
        if self.paused.contains_key(name) {
            return;
        }
        let max_per_host = self.max_per_host;
        if let Some(host) = self.hosts.get_mut(name)
            && !host.ready
            && !host.queue.is_empty()
            && host.running < max_per_host
        {
            host.ready = true;
            self.ready.push_back(name.to_owned());
        }
    }

    /// Whether another entry of the list may be read into the queues.
    pub(crate) fn wants_more(&self) -> bool {
        self.queued < self.lookahead
    }

    /// Downloads running.
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Entries waiting.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Queues `entry` on its host.
    pub(crate) fn push(&mut self, entry: Entry) {
        let host = self.hosts.entry(entry.host.clone()).or_default();
        host.queue.push_back(entry);
        self.queued += 1;
        if !host.ready && host.running < self.max_per_host {
            host.ready = true;
            let name = host
                .queue
                .back()
                .map(|e| e.host.clone())
                .unwrap_or_default();
            self.ready.push_back(name);
        }
    }

    /// The next entry that may start now (counted as running until [`Hosts::finished`]).
    pub(crate) fn start(&mut self) -> Option<Entry> {
        if self.running >= self.max_req {
            return None;
        }
        let name = loop {
            let name = self.ready.pop_front()?;
            if !self.paused.contains_key(&name) {
                break name;
            }
            // Paused since it was put in turn: back in turn when the pause ends.
            if let Some(host) = self.hosts.get_mut(&name) {
                host.ready = false;
            }
        };
        let host = self.hosts.get_mut(&name)?;
        let entry = host.queue.pop_front()?;
        host.running += 1;
        self.running += 1;
        self.queued -= 1;
        if !host.queue.is_empty() && host.running < self.max_per_host {
            self.ready.push_back(name);
        } else {
            host.ready = false;
        }
        Some(entry)
    }

    /// A download of `host` has finished.
    pub(crate) fn finished(&mut self, host: &str) {
        self.running = self.running.saturating_sub(1);
        let Some(state) = self.hosts.get_mut(host) else {
            return;
        };
        state.running = state.running.saturating_sub(1);
        if state.queue.is_empty() && state.running == 0 {
            // Forgotten, so memory is bounded by the look-ahead, not the hosts of the list.
            self.hosts.remove(host);
        } else {
            self.make_ready(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(host: &str, line: u64) -> Entry {
        Entry {
            line,
            url: format!("http://{host}/{line}"),
            host: host.into(),
            name: format!("{host}/{line}"),
            retries: 0,
        }
    }

    #[test]
    fn a_slow_host_does_not_hold_the_others() {
        let mut hosts = Hosts::new(100, 4, 2);
        for line in 0..10 {
            hosts.push(entry("slow", line));
        }
        hosts.push(entry("fast", 10));
        hosts.push(entry("fast", 11));
        let started: Vec<String> = std::iter::from_fn(|| hosts.start().map(|e| e.name)).collect();
        // Two of the slow host (its limit), then the fast one's.
        assert_eq!(started, ["slow/0", "fast/10", "slow/1", "fast/11"]);
        assert!(hosts.start().is_none(), "max_req reached");
        hosts.finished("fast");
        // The slow host is at its limit: nothing of it starts.
        assert!(hosts.start().is_none());
        hosts.finished("slow");
        assert_eq!(hosts.start().map(|e| e.name), Some("slow/2".into()));
        hosts.finished("fast");
        assert!(
            !hosts.hosts.contains_key("fast"),
            "an idle host is forgotten"
        );
        assert_eq!((hosts.running(), hosts.queued()), (2, 7));
    }

    #[test]
    fn a_retry_waits_outside_the_slots_and_retry_after_pauses_only_its_host() {
        let mut hosts = Hosts::new(100, 1, 1);
        hosts.push(entry("a", 0));
        hosts.push(entry("a", 1));
        hosts.push(entry("b", 2));
        let first = hosts.start().map(|e| e.name);
        assert_eq!(first.as_deref(), Some("a/0"));
        hosts.finished("a");
        let now = Instant::now();
        let later = now + std::time::Duration::from_secs(5);
        hosts.retry_at(entry("a", 0), later, true);
        // The slot is free for b; a is paused; a/0 waits in the delay queue.
        assert_eq!(hosts.start().map(|e| e.name), Some("b/2".into()));
        hosts.finished("b");
        assert!(hosts.start().is_none());
        assert_eq!(hosts.next_wake(), Some(later));
        hosts.wake(now);
        assert!(hosts.start().is_none(), "woken before its time");
        hosts.wake(later);
        assert_eq!(hosts.start().map(|e| e.name), Some("a/1".into()));
        hosts.finished("a");
        assert_eq!(hosts.start().map(|e| e.name), Some("a/0".into()));
        assert!(!hosts.has_delayed());
    }

    #[test]
    fn the_lookahead_is_bounded() {
        let mut hosts = Hosts::new(3, 1, 1);
        for line in 0..3 {
            assert!(hosts.wants_more());
            hosts.push(entry("h", line));
        }
        assert!(!hosts.wants_more());
        assert!(hosts.start().is_some());
        assert!(hosts.wants_more());
    }
}
