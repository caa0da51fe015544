//! Helpers shared by the integration tests: gates and start signals built on channels,
//! so that tests hold tasks in known states without sleeping.

#![allow(dead_code, unreachable_pub, reason = "each test binary uses a subset")]

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// How long a test waits for something that should happen promptly; only reached when
/// the code under test is broken (turning a hang into a failure).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A gate that tasks wait at until it is opened (its sender dropped).
#[derive(Debug)]
pub struct Gate {
    open: Option<Sender<()>>,
    waiting: Receiver<()>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        let (open, waiting) = crossbeam_channel::bounded(0);
        Self {
            open: Some(open),
            waiting,
        }
    }

    /// What a task holds to wait at the gate.
    pub fn waiter(&self) -> GateWaiter {
        GateWaiter(self.waiting.clone())
    }

    pub fn open(&mut self) {
        self.open = None;
    }
}

/// The task's side of a [`Gate`].
#[derive(Debug, Clone)]
pub struct GateWaiter(Receiver<()>);

impl GateWaiter {
    /// Blocks until the gate opens.
    pub fn wait(&self) {
        let _ = self.0.recv_timeout(PATIENCE);
    }
}

/// Counts task starts: tasks send, the test waits for n of them.
#[derive(Debug)]
pub struct Starts {
    tx: mpsc::Sender<String>,
    rx: mpsc::Receiver<String>,
}

impl Default for Starts {
    fn default() -> Self {
        Self::new()
    }
}

impl Starts {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Self { tx, rx }
    }

    pub fn sender(&self) -> mpsc::Sender<String> {
        self.tx.clone()
    }

    /// Waits for `n` starts and returns the distinct thread names they reported.
    pub fn wait_for(&self, n: usize) -> HashSet<String> {
        (0..n)
            .map(|_| self.rx.recv_timeout(PATIENCE).expect("a task should start"))
            .collect()
    }
}

/// The name of the current thread.
/// A thread pool of `workers` threads.
pub fn pool(workers: usize) -> concurrent_futures::ThreadPoolExecutor {
    concurrent_futures::ThreadPoolExecutor::builder()
        .max_workers(workers)
        .build()
        .expect("a valid worker count")
}

pub fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}
