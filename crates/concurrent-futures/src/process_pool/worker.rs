//! The worker process: the pool's executable started again with [`MARKER`] set, turned
//! into a worker by [`process_worker_main`](crate::process_worker_main).

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::call::{self, Entry};
use super::image;
use super::sys;
use super::wire::{self, Handshake, Status};

/// The environment variable that marks a worker process; its value is the pid of the
/// pool's process, so that a process started by a task (whose parent is the worker) is
/// not mistaken for a worker.
pub(super) const MARKER: &str = "CONCURRENT_FUTURES_PROCESS_WORKER";

/// Exit status of a worker whose handshake failed.
const EXIT_REFUSED: i32 = 70;
/// Exit status of a worker whose initializer failed.
const EXIT_INIT_FAILED: i32 = 71;
/// Exit status of a worker whose pipes failed (the pool went away or sent garbage).
const EXIT_IO: i32 = 74;

/// The pool's executable, to be started again as a worker (or as the fork server):
/// the same `argv[0]`, the marker naming this process, stderr shared, and a process
/// group of its own. The group keeps a Ctrl-C at the terminal (SIGINT to the foreground
/// group) for the pool's process only, which decides what to stop (Python's workers each
/// get a KeyboardInterrupt, gh-125886); forked workers inherit the fork server's group.
/// Workers whose pool is gone see their input close and exit.
pub(super) fn command() -> Command {
    let mut command = Command::new(image::SELF_EXE);
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    // In a test binary, libtest then runs only the test that serves as a worker.
    command.args(crate::test_support::WORKER_ARGS);
    command
        .process_group(0)
        .env(MARKER, std::process::id().to_string())
        // Forked workers inherit the fork server's marker: a pool built in one of them
        // must not turn its own workers into fork servers.
        .env_remove(super::fork_server::FORK_SERVER)
        .stderr(Stdio::inherit());
    command
}

/// Set once this process serves as a worker.
static SERVING: AtomicBool = AtomicBool::new(false);

/// True when this process was started as a pool worker (the marker names our parent).
pub(super) fn started_as_worker() -> bool {
    std::env::var(MARKER)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|parent| parent == std::os::unix::process::parent_id())
}

/// True once this process serves as a worker (a task that calls
/// `process_worker_main` again must not start a second serving loop).
pub(super) fn is_serving() -> bool {
    SERVING.load(Ordering::Relaxed)
}

/// True when this process was started as a worker but its `main` did not hand over to
/// `process_worker_main` before building a pool (which would start workers forever).
pub(super) fn is_unserved_worker() -> bool {
    started_as_worker() && !SERVING.load(Ordering::Relaxed)
}

/// Work that every worker would repeat, done once by the fork server before it forks
/// them: reading where the executable's code is mapped, and the standard library's CPU
/// feature detection (its `cpuid` instructions trap to the hypervisor in a VM; httparse,
/// for one, asks for AVX2 on its first parse), a visible share of short-lived workers'
/// CPU when each one detected for itself (see the crate's `BENCHMARKS.md`).
pub(super) fn prepare() {
    image::prepare();
    // A feature outside the x86-64 baseline: one the compiler cannot answer (`sse2` is
    // answered at compile time and runs no detection at all).
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    let _ = std::arch::is_x86_feature_detected!("avx2");
}

/// Serves the pool on the pipes it sends over the socket on fd 0 (a worker started
/// from the executable) and returns the exit status.
pub(super) fn serve() -> i32 {
    serve_on(Pipes::receive())
}

/// Serves the pool on the pipes the fork server received for this forked worker (its
/// stdin is already `/dev/null`) and returns the exit status.
pub(super) fn serve_forked(tasks: OwnedFd, results: OwnedFd) -> i32 {
    serve_on(Pipes::given(tasks, results))
}

fn serve_on(pipes: io::Result<Pipes>) -> i32 {
    SERVING.store(true, Ordering::Relaxed);
    match pipes {
        Ok(pipes) => pipes.run(),
        Err(e) => {
            eprintln!("concurrent_futures worker {}: {e}", std::process::id());
            EXIT_IO
        }
    }
}

struct Pipes {
    input: BufReader<File>,
    output: File,
    out: Vec<u8>,
}

impl Pipes {
    /// Receives the pipes the pool sends over the Unix socket on fd 0: the protocol
    /// never runs on stdin or stdout, so whatever `main` printed or read before
    /// `process_worker_main` cannot be taken for a frame, and a task that prints or
    /// starts a program cannot disturb it. Then stdin is emptied (`/dev/null`); stdout
    /// stays the pool's, as Python's workers print to their parent's stdout.
    fn receive() -> io::Result<Self> {
        let control = UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
        nix::unistd::dup2_stdin(File::open("/dev/null")?).map_err(io::Error::from)?;
        let [tasks, results] =
            sys::recv_fds(&control)?.ok_or_else(|| io::Error::other("the pool sent no pipes"))?;
        drop(control);
        Self::given(tasks, results)
    }

    /// The pipes as close-on-exec descriptors already.
    fn given(input: OwnedFd, output: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            input: BufReader::with_capacity(256 * 1024, File::from(input)),
            output: File::from(output),
            out: Vec::with_capacity(64 * 1024),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.output.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    fn run(mut self) -> i32 {
        match self.serve() {
            Ok(code) => code,
            Err(e) => {
                // A broken pipe means the pool is gone: nothing to report to.
                if e.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("concurrent_futures worker {}: {e}", std::process::id());
                }
                EXIT_IO
            }
        }
    }

    /// Sends a handshake answer at once.
    fn answer(&mut self, answer: &Handshake<'_>) -> io::Result<()> {
        wire::push_handshake(&mut self.out, answer)?;
        self.flush()
    }

    fn serve(&mut self) -> io::Result<i32> {
        let mut body = Vec::new();
        let hello = match wire::read_hello(&mut self.input, &mut body)? {
            None => return Ok(0),
            Some(Ok(hello)) => hello,
            Some(Err(why)) => {
                self.answer(&Handshake::Refused(why.into()))?;
                return Ok(EXIT_REFUSED);
            }
        };
        let image = match call::check_handshake(&hello) {
            Ok(image) => image,
            Err(why) => {
                self.answer(&Handshake::Refused(why.into()))?;
                return Ok(EXIT_REFUSED);
            }
        };
        // Ends the pool's handshake deadline: the initializer may take its time.
        self.answer(&Handshake::Accepted)?;
        if let Some((callee, arg)) = &hello.init {
            let mut message = Vec::new();
            let ran = match Entry::resolve(*callee, &image) {
                Ok(entry) => entry.invoke(arg, &mut message) == Status::Ok,
                Err(why) => {
                    message = why.into_bytes();
                    false
                }
            };
            if !ran {
                let message = String::from_utf8_lossy(&message);
                self.answer(&Handshake::InitFailed(message))?;
                return Ok(EXIT_INIT_FAILED);
            }
        }
        self.answer(&Handshake::Ready)?;

        let mut done: u64 = 0;
        loop {
            // Every finished result is written before the next call starts (and before
            // a read that could block): if this process dies, the pool has all results
            // of the tasks before, so the task it lost is exactly the one running.
            // Tasks still arrive many per read, so the pool's side stays batched.
            self.flush()?;
            let Some(call) = wire::read_call(&mut self.input, &mut body)? else {
                self.flush()?;
                return Ok(0);
            };
            let reply = wire::begin_reply(&mut self.out, call.id);
            let began = Instant::now();
            let status = match Entry::resolve(call.callee, &image) {
                Ok(entry) => entry.invoke(call.argument, &mut self.out),
                Err(why) => {
                    let fault = wire::Fault::failed(wire::FailKind::NotInExecutable, why);
                    self.out.extend_from_slice(&fault.encode());
                    Status::Failed
                }
            };
            let nanos = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if let Err(e) = reply.finish(&mut self.out, status, nanos) {
                // Too large to send: report that instead.
                let message = format!("the worker could not send the result: {e}");
                let fault = wire::Fault::failed(wire::FailKind::ResultTooLarge, message);
                wire::push_reply(
                    &mut self.out,
                    call.id,
                    Status::Failed,
                    nanos,
                    &fault.encode(),
                )?;
            }
            done += 1;
            if hello.max_tasks != 0 && done >= hello.max_tasks {
                self.flush()?;
                return Ok(0);
            }
        }
    }
}
