//! The scheduler of `flags get`: a bounded look-ahead of the list in per-host queues.
//!
//! Entries are read from the list only while fewer than `lookahead` wait in the queues, so
//! memory does not grow with the list. An entry starts when fewer than `max_req` downloads
//! run in all and fewer than `max_per_host` on its host; hosts with room take turns, so a
//! slow host holds at most `max_per_host` slots and the rest of the look-ahead keeps the
//! others busy.

use std::collections::{HashMap, VecDeque};

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
        let name = self.ready.pop_front()?;
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
        } else if !state.ready && !state.queue.is_empty() && state.running < self.max_per_host {
            state.ready = true;
            self.ready.push_back(host.to_owned());
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
