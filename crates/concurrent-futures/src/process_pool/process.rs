//! Worker processes as the pool holds them: how one comes to exist (forked by the fork
//! server, or the executable started again), how it is signalled, waited for and
//! reaped, and how its end is described.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

use super::StartMethod;
use super::fork_server::{ForkServer, WorkerPipes};
use super::{sys, worker};
use crate::sync::Mutex;

/// A new worker process and the pool's ends of its pipes.
pub(super) struct Started {
    pub(super) process: Process,
    /// Where the pool writes tasks.
    pub(super) tasks: File,
    /// Where the pool reads results.
    pub(super) results: File,
}

/// How a pool starts its workers: with its fork server, started with the first worker,
/// while that works; else from the executable.
pub(super) struct Launcher {
    start_method: StartMethod,
    /// How long the fork server may take to answer when it starts.
    handshake_timeout: Duration,
    /// Taken by one starting worker at a time, never with the pool's state lock.
    fork_server: Mutex<ForkServerSlot>,
}

/// The pool's fork server.
enum ForkServerSlot {
    Unstarted,
    Running(ForkServer),
    /// It could not start, failed or the pool is done: workers are started from the
    /// executable.
    Unusable,
}

impl Launcher {
    pub(super) fn new(start_method: StartMethod, handshake_timeout: Duration) -> Self {
        Self {
            start_method,
            handshake_timeout,
            fork_server: Mutex::new(ForkServerSlot::Unstarted),
        }
    }

    /// A new worker process with its task and result pipes: forked by the fork server
    /// if the pool uses one and it works, else started from the executable.
    pub(super) fn launch(&self) -> io::Result<Started> {
        if self.start_method == StartMethod::ForkServer {
            let mut slot = self.fork_server.lock();
            if matches!(*slot, ForkServerSlot::Unstarted) {
                *slot = ForkServer::start(self.handshake_timeout)
                    .map_or(ForkServerSlot::Unusable, ForkServerSlot::Running);
            }
            if let ForkServerSlot::Running(server) = &mut *slot {
                match server.fork() {
                    Ok(forked) => {
                        return Ok(Started {
                            process: Process::new(forked.pid),
                            tasks: forked.tasks,
                            results: forked.results,
                        });
                    }
                    // The server is gone or cannot fork: stop it and start workers
                    // from the executable from now on.
                    Err(_) => *slot = ForkServerSlot::Unusable,
                }
            }
        }
        spawn()
    }

    /// No worker will start again: stops the fork server (its drop reaps it).
    pub(super) fn stop_fork_server(&self) {
        let server = std::mem::replace(&mut *self.fork_server.lock(), ForkServerSlot::Unusable);
        drop(server);
    }
}

/// A worker process, signalled and reaped under one lock so that a signal never
/// reaches a reused pid.
///
/// Every worker is this process's child, a forked one too (the fork server forks with
/// `CLONE_PARENT`), so its pid stays ours until we reap it: both kinds are signalled
/// with `kill` and reaped with `waitpid`.
pub(super) struct Process {
    pid: u32,
    /// Set, under this lock, once the pid was reaped (it may belong to another process
    /// from then on); a signal is sent only under this lock while it is false.
    reaped: Mutex<bool>,
}

impl Process {
    fn new(pid: u32) -> Self {
        Self {
            pid,
            reaped: Mutex::new(false),
        }
    }

    /// A process that was reaped already: signalling it does nothing (for the
    /// supervisor's hand-off model, which has no real processes).
    #[cfg(all(test, not(cf_loom)))]
    pub(super) fn reaped() -> Self {
        Self {
            pid: 0,
            reaped: Mutex::new(true),
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(self.pid.cast_signed())
    }

    pub(super) fn signal(&self, signal: Signal) {
        let reaped = self.reaped.lock();
        if !*reaped {
            // An error means the process is already gone (a zombie until we reap it).
            let _ = nix::sys::signal::kill(self.nix_pid(), signal);
        }
    }

    /// Waits for the process, which closed its result pipe and so is exiting, and
    /// returns how it ended. A process that does not exit within `grace` (zero: at
    /// once) is killed first; the returned flag says whether the pool killed it, so its
    /// own exit status or signal is never mistaken for the pool's SIGKILL.
    ///
    /// The wait for the exit does not hold the `reaped` lock (a `signal` must not block
    /// for the grace period): `waitid(WNOWAIT)` watches without reaping, so the pid
    /// stays ours until the final `waitpid` under the lock.
    pub(super) fn reap(&self, grace: Duration) -> (io::Result<ExitStatus>, bool) {
        let exited = grace > Duration::ZERO && self.exits_within(grace);
        let mut reaped = self.reaped.lock();
        let killed = !exited && nix::sys::signal::kill(self.nix_pid(), Signal::SIGKILL).is_ok();
        let status = wait_for(self.nix_pid());
        *reaped = true;
        // A process that was already a zombie ignores the signal: it ended by itself.
        let killed =
            killed && matches!(&status, Ok(s) if s.signal() == Some(Signal::SIGKILL as i32));
        (status, killed)
    }

    /// Polls (without reaping) until the process has ended or `limit` passed.
    fn exits_within(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_micros(50);
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::Pid(self.nix_pid()), flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                // Ended (or not ours to wait for, which `wait_for` reports).
                Ok(_) | Err(_) => return true,
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }
}

/// `waitpid`, with the status in `ExitStatus`'s raw form.
fn wait_for(pid: Pid) -> io::Result<ExitStatus> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::from_raw((code & 0xff) << 8)),
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                let core = if core { 0x80 } else { 0 };
                return Ok(ExitStatus::from_raw(signal as i32 | core));
            }
            // Stops and continues are not reported without WUNTRACED/WCONTINUED.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
pub(super) fn describe_status(pid: u32, status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("(pid {pid}) exited with status {code}"),
            (None, Some(signal)) => {
                let name = Signal::try_from(signal).map_or("unknown signal", Signal::as_str);
                let core = if s.core_dumped() { ", core dumped" } else { "" };
                format!("(pid {pid}) was killed by signal {signal} ({name}{core})")
            }
            (None, None) => format!("(pid {pid}) ended with {s}"),
        },
        Err(e) => format!("(pid {pid}) ended; its status is unknown: {e}"),
    }
}

/// Starts the pool's executable again as a worker. Its pipes travel over a Unix socket
/// on its stdin (as to the fork server), never as stdin and stdout: a `main` that
/// prints before `process_worker_main`, or a task that prints, writes to the pool's
/// stdout (as Python's workers do), not into the protocol.
fn spawn() -> io::Result<Started> {
    let (control, theirs) = UnixStream::pair()?;
    let pipes = WorkerPipes::new()?;
    let child = {
        let mut command = worker::command();
        command.stdin(Stdio::from(OwnedFd::from(theirs)));
        command.spawn()?
        // The command holds the worker's end of the socket until it is dropped here.
    };
    // A worker that ended before it could read this (a `main` without the guard) has
    // closed its socket: the message and its descriptors go with it, the reader sees
    // the result pipe end, and says what the exit status was.
    let _ = sys::send_fds(&control, pipes.theirs);
    // Dropping `child` neither kills nor waits: `Process` reaps the pid itself.
    Ok(Started {
        process: Process::new(child.id()),
        tasks: pipes.tasks,
        results: pipes.results,
    })
}
