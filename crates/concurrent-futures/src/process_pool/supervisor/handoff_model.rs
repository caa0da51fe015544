//! An exhaustive model of the hand-off between the pool's writer threads, its reader
//! threads, worker starts and `shutdown`, run on the real [`State`] and the real
//! decisions ([`Inner::writer_step`], [`State::took_result`], [`Inner::shutdown`]).
//!
//! Each thread is one action that runs under the state lock, as in the pool. A writer
//! that decided to wait may move again only after its [`Wake`] was notified while it
//! waited: a notification given before it waits is lost, as with a condition variable.
//! That is the interleaving that hung `shutdown(wait)` (issue 12): a writer asleep with
//! a full pipe, the queue drained by another writer, and its reader waking it only
//! while work was queued. Every interleaving is explored (depth first, replayed from
//! the start, pruned on states already seen), and every state where nothing can move
//! must be quiet: no task queued or in a pipe, and after a shutdown every writer done.

use std::collections::HashSet;
use std::sync::atomic::Ordering as AtomicOrdering;

use super::pipeline::PIPELINE_NANOS;
use super::writer::WriterStep;
use super::*;
use crate::process_pool::wire::Reply;

/// A task's future, for the model: always runs, never cancelled.
struct NullSink;

impl Sink for NullSink {
    fn set_running(&self) -> bool {
        true
    }
    fn set_stopper(&self, _: Arc<dyn StopRunning>) -> bool {
        true
    }
    fn is_cancelled(&self) -> bool {
        false
    }
    fn deliver(self: Box<Self>, _: Reply<'_>) {}
    fn fail(self: Box<Self>, _: FutureError) {}
    fn cancel_pending(self: Box<Self>) {}
    fn cancel_unstarted(self: Box<Self>) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    /// Worker `key`'s writer takes its next step.
    Writer(u64),
    /// Worker `key` answers its front task.
    Result(u64),
    /// `shutdown(wait = false, cancel_futures = false)`; the waiting part of
    /// `shutdown(wait = true)` only watches.
    Shutdown,
    /// A worker being started is up (`start_worker`'s bookkeeping).
    Started,
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    ready: usize,
    starting: usize,
    tasks: u64,
    /// How long each task runs, as its worker reports it (sets the pipeline depth).
    nanos: u64,
}

/// One writer thread's own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Writer {
    key: u64,
    done: bool,
    /// The notification count when it began to wait.
    seen: usize,
}

struct Run {
    inner: Arc<Inner>,
    writers: Vec<Writer>,
    starting: usize,
    shut_down: bool,
}

fn new_worker(key: u64) -> Worker {
    Worker {
        key,
        // Already "reaped": a signal to it is a no-op, never a real `kill`.
        process: Arc::new(Process::reaped()),
        in_flight: VecDeque::new(),
        sent: 0,
        waiting: false,
        wake: Arc::new(Wake::default()),
        closed: false,
        killed_for_cancel: false,
        killed_at_deadline: false,
        front_since: None,
    }
}

impl Run {
    fn new(scenario: Scenario) -> Self {
        let inner = Inner::new(Config {
            max_workers: scenario.ready + scenario.starting,
            max_tasks_per_child: None,
            start_method: StartMethod::Spawn,
            hello: Vec::new(),
            handshake_timeout: Duration::from_secs(1),
        });
        let mut writers = Vec::new();
        {
            let mut state = inner.state.lock();
            for id in 0..scenario.tasks {
                state.queue.push_back(Job {
                    id,
                    callee: Callee::new(0, 0),
                    payload: Vec::new(),
                    sink: Box::new(NullSink),
                    dispatched: false,
                });
            }
            state.next_id = scenario.tasks;
            state.starting = scenario.starting;
            for _ in 0..scenario.ready {
                writers.push(add(&mut state));
            }
        }
        Self {
            inner,
            writers,
            starting: scenario.starting,
            shut_down: false,
        }
    }

    fn enabled(&self) -> Vec<Action> {
        let state = self.inner.state.lock();
        let mut actions = Vec::new();
        for writer in self.writers.iter().filter(|w| !w.done) {
            let free = state.index(writer.key).is_none_or(|i| {
                let worker = &state.workers[i];
                !worker.waiting || worker.wake.notified.load(AtomicOrdering::Relaxed) > writer.seen
            });
            if free {
                actions.push(Action::Writer(writer.key));
            }
        }
        for worker in &state.workers {
            if !worker.in_flight.is_empty() {
                actions.push(Action::Result(worker.key));
            }
        }
        if !self.shut_down {
            actions.push(Action::Shutdown);
        }
        if self.starting > 0 {
            actions.push(Action::Started);
        }
        actions
    }

    fn apply(&mut self, action: Action, nanos: u64) {
        match action {
            Action::Writer(key) => {
                let mut state = self.inner.state.lock();
                if let Some(i) = state.index(key) {
                    state.workers[i].waiting = false; // woken, as after `wait`
                }
                let mut out = Vec::new();
                let step = self.inner.writer_step(&mut state, key, &mut out);
                let writer = self.writers.iter_mut().find(|w| w.key == key).unwrap();
                match step {
                    WriterStep::Wait => {
                        let i = state.index(key).unwrap();
                        writer.seen = state.workers[i].wake.notified.load(AtomicOrdering::Relaxed);
                    }
                    WriterStep::Write => {}
                    WriterStep::Close { respawn } => {
                        assert!(!respawn, "no replacement is needed: no worker retires here");
                        writer.done = true;
                    }
                    WriterStep::Gone => writer.done = true,
                }
            }
            Action::Result(key) => {
                let mut state = self.inner.state.lock();
                let i = state.index(key).unwrap();
                let _ = state.took_result(i, nanos);
            }
            Action::Shutdown => {
                self.inner.shutdown(false, false);
                self.shut_down = true;
            }
            Action::Started => {
                let mut state = self.inner.state.lock();
                state.starting -= 1;
                state.wake_writers();
                let writer = add(&mut state);
                self.writers.push(writer);
                self.starting -= 1;
            }
        }
    }

    /// Everything that decides what happens next.
    fn fingerprint(&self) -> Vec<u64> {
        let state = self.inner.state.lock();
        let mut print = vec![
            state.queue.len() as u64,
            state.starting as u64,
            state.phase as u64,
        ];
        print.extend(state.pipeline.fingerprint());
        for writer in &self.writers {
            print.push(u64::from(writer.done));
            if let Some(i) = state.index(writer.key) {
                let worker = &state.workers[i];
                let notified = worker.wake.notified.load(AtomicOrdering::Relaxed) > writer.seen;
                print.extend([
                    worker.in_flight.len() as u64,
                    worker.sent,
                    u64::from(worker.waiting),
                    u64::from(notified),
                    u64::from(worker.closed),
                ]);
            }
        }
        print
    }

    /// A state where nothing can move must be quiet.
    fn check_quiet(&self, path: &[Action]) {
        let state = self.inner.state.lock();
        let stranded = state.queue.len()
            + state
                .workers
                .iter()
                .map(|w| w.in_flight.len())
                .sum::<usize>();
        assert_eq!(stranded, 0, "tasks stranded after {path:?}");
        if self.shut_down {
            assert!(
                self.writers.iter().all(|w| w.done),
                "a writer never closed its worker's input after {path:?}"
            );
        }
    }
}

/// Registers a started worker, as `add_worker` does (without its threads).
fn add(state: &mut State) -> Writer {
    let key = state.next_key;
    state.next_key += 1;
    state.workers.push(new_worker(key));
    Writer {
        key,
        done: false,
        seen: 0,
    }
}

/// Explores every interleaving of `scenario`; returns how many states it saw.
fn explore(scenario: Scenario) -> usize {
    fn visit(scenario: Scenario, path: &mut Vec<Action>, seen: &mut HashSet<Vec<u64>>) {
        let mut run = Run::new(scenario);
        for action in path.iter() {
            run.apply(*action, scenario.nanos);
        }
        if !seen.insert(run.fingerprint()) {
            return;
        }
        let actions = run.enabled();
        if actions.is_empty() {
            run.check_quiet(path);
            return;
        }
        drop(run);
        for action in actions {
            path.push(action);
            visit(scenario, path, seen);
            path.pop();
        }
    }
    let mut seen = HashSet::new();
    visit(scenario, &mut Vec::new(), &mut seen);
    seen.len()
}

#[test]
fn handoff_model_no_writer_is_stranded_at_shutdown() {
    // Tiny tasks (deep pipelines) and slow ones (one at a time), two workers running.
    for nanos in [PIPELINE_NANOS / 4, PIPELINE_NANOS] {
        let states = explore(Scenario {
            ready: 2,
            starting: 0,
            tasks: 5,
            nanos,
        });
        eprintln!("{states} states");
        assert!(states > 100, "the model explored only {states} states");
    }
}

#[test]
fn handoff_model_no_task_waits_for_a_worker_being_started() {
    // One worker up, one being started: the busy one holds back for it
    // (`writer_step` with `starting` counted), and must be woken when it comes up.
    for nanos in [PIPELINE_NANOS / 4, PIPELINE_NANOS] {
        let states = explore(Scenario {
            ready: 1,
            starting: 1,
            tasks: 4,
            nanos,
        });
        eprintln!("{states} states");
        assert!(states > 100, "the model explored only {states} states");
    }
}
