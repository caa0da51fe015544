//! The fork server (Python's `forkserver` start method): one process started from the
//! executable like any worker, which then *forks* every worker the pool asks for.
//!
//! Starting the executable again costs a few milliseconds of CPU per worker (`execve`,
//! the dynamic loader's relocations and CPU-feature probes, the page faults of a fresh
//! image); a fork of a small process that has done nothing but reach
//! `process_worker_main` costs a fraction of that, and the worker it makes is in the
//! same fresh state as a started one: same executable image, same code layout, nothing
//! of the pool's memory.
//!
//! Protocol, over a Unix socket pair (the server's end is its fd 0):
//!
//! 1. the server checks it is single-threaded and answers one byte: [`READY`] or
//!    [`NOT_SINGLE_THREADED`] (then exits);
//! 2. per worker, the pool sends one byte with two descriptors attached (`SCM_RIGHTS`):
//!    the read end of the worker's task pipe and the write end of its result pipe;
//! 3. the server forks with `CLONE_PARENT`, so the worker is the **pool's** child, not
//!    the server's: the pool signals and reaps it exactly like a started worker (a
//!    signal never reaches a reused pid, exit statuses are the pool's to read); it
//!    answers the worker's pid as an `i32` (little endian), or minus an `errno`;
//! 4. when the pool closes its end, the server exits.
//!
//! Any failure of the server (it cannot start, refuses, dies) only makes the pool start
//! later workers the slow way, from the executable; so does a target where
//! [`sys::fork_sibling`] cannot fork.
//!
//! The fork itself is [`sys::fork_sibling`], an `unsafe fn` whose promise (one thread)
//! only this module's server loop can keep; its call here is this module's one `unsafe`
//! block (the crate's `unsafe` is listed in the workspace's `README.md`).

#![allow(
    unsafe_code,
    reason = "the call of sys::fork_sibling, whose one-thread contract is kept here"
)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::fcntl::OFlag;

use super::{sys, worker};

/// The environment variable that, next to [`MARKER`](worker::MARKER), makes a worker process the fork
/// server.
pub(super) const FORK_SERVER: &str = "CONCURRENT_FUTURES_FORK_SERVER";

/// The server's first answer: it forks workers on request.
const READY: u8 = b'R';
/// The server's first answer: another thread runs in it, so forking is not safe.
const NOT_SINGLE_THREADED: u8 = b'T';
/// Exit status of a fork server that refused to serve.
const EXIT_REFUSED: i32 = 70;

/// True in a worker process started to be the fork server.
pub(super) fn started_as_fork_server() -> bool {
    std::env::var_os(FORK_SERVER).is_some()
}

/// The pool's handle on its fork server.
#[derive(Debug)]
pub(super) struct ForkServer {
    process: Child,
    control: UnixStream,
}

/// A worker forked by the server: the pool's child.
#[derive(Debug)]
pub(super) struct Forked {
    pub(super) pid: u32,
    /// Where the pool writes tasks.
    pub(super) tasks: File,
    /// Where the pool reads results.
    pub(super) results: File,
}

impl ForkServer {
    /// Starts the server from the executable and waits for its first answer, at most
    /// `timeout` (the pool's handshake deadline).
    pub(super) fn start(timeout: Duration) -> io::Result<Self> {
        if !sys::CAN_FORK_SIBLING {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no fork server on this target",
            ));
        }
        let (ours, theirs) = UnixStream::pair()?;
        let process = {
            let mut command = worker::command();
            command
                .env(FORK_SERVER, "1")
                .stdin(Stdio::from(OwnedFd::from(theirs)));
            command.spawn()?
            // The command holds the server's end of the socket until it is dropped here:
            // kept, it would hide the server's exit (no end of stream) from the read below.
        };
        let mut server = Self {
            process,
            control: ours,
        };
        // A server that neither answers nor exits (a `main` without `process_worker_main`
        // that runs on) must not hold up the pool for good: it is then killed and the pool
        // starts its workers from the executable.
        server
            .control
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut answer = [0u8];
        let answered = server.control.read_exact(&mut answer);
        server.control.set_read_timeout(None)?;
        match answered {
            Ok(()) if answer[0] == READY => Ok(server),
            Ok(()) if answer[0] == NOT_SINGLE_THREADED => Err(io::Error::other(
                "the fork server runs more than one thread (process_worker_main() must come \
                 first in main)",
            )),
            Ok(()) => Err(io::Error::other("the fork server answered nonsense")),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::other(
                "the fork server ended before it answered (does main() call \
                 concurrent_futures::process_worker_main() first?)",
            )),
            Err(e) => Err(e),
        }
        // On an error `server` drops here: its process is killed and reaped.
    }

    /// Asks the server for a new worker.
    pub(super) fn fork(&mut self) -> io::Result<Forked> {
        let WorkerPipes {
            tasks,
            results,
            theirs,
        } = WorkerPipes::new()?;
        sys::send_fds(&self.control, theirs)?;
        let mut answer = [0u8; 4];
        self.control.read_exact(&mut answer)?;
        let pid = i32::from_le_bytes(answer);
        match u32::try_from(pid) {
            Ok(pid) if pid > 0 => Ok(Forked {
                pid,
                tasks,
                results,
            }),
            _ if pid < 0 => Err(io::Error::from_raw_os_error(pid.saturating_neg())),
            _ => Err(io::Error::other("the fork server answered pid 0")),
        }
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        // Closing our end tells the server to exit; the kill makes sure of it (a
        // server that failed may be running something else, e.g. a `main` that skipped
        // `process_worker_main`).
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// The fork server's side: answers requests on fd 0 until the pool closes it, and
/// returns the exit status. In a forked worker it never returns (the worker exits).
pub(super) fn serve() -> i32 {
    let control = match io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("concurrent_futures fork server: {e}");
            return EXIT_REFUSED;
        }
    };
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null);
    }
    if thread_count().is_none_or(|n| n != 1) {
        let _ = (&control).write_all(&[NOT_SINGLE_THREADED]);
        return EXIT_REFUSED;
    }
    // Work every worker would repeat, done once before the forks.
    worker::prepare();
    if (&control).write_all(&[READY]).is_err() {
        return 0;
    }
    loop {
        let Ok(Some([tasks, results])) = sys::recv_fds(&control) else {
            // The pool closed its end (or is gone): no more workers.
            return 0;
        };
        // SAFETY: `fork_sibling`'s contract: this process has one thread (checked above,
        // and it starts none: this loop only reads, forks and writes), and it holds no
        // buffered stdio data (requests are read with `recvmsg`).
        let forked = unsafe { sys::fork_sibling() };
        let answer = match forked {
            Ok(None) => {
                drop(control);
                std::process::exit(worker::serve_forked(tasks, results));
            }
            Ok(Some(pid)) => i32::try_from(pid).unwrap_or(-nix::libc::EOVERFLOW),
            Err(e) => -e.raw_os_error().unwrap_or(nix::libc::EIO),
        };
        drop((tasks, results));
        if (&control).write_all(&answer.to_le_bytes()).is_err() {
            return 0;
        }
    }
}

/// A new worker's two pipes: the pool's ends, and the worker's ends to hand over.
pub(super) struct WorkerPipes {
    /// Where the pool writes tasks.
    pub(super) tasks: File,
    /// Where the pool reads results.
    pub(super) results: File,
    /// The worker's ends: the read end of the task pipe, the write end of the result
    /// pipe.
    pub(super) theirs: [OwnedFd; 2],
}

impl WorkerPipes {
    /// Two close-on-exec pipes: no other child of this process inherits them.
    pub(super) fn new() -> io::Result<Self> {
        let (task_read, tasks) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (results, result_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        Ok(Self {
            tasks: File::from(tasks),
            results: File::from(results),
            theirs: [task_read, result_write],
        })
    }
}

/// The number of threads of this process (`/proc/self/status`).
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}
