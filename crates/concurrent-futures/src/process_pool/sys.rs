//! The process pool's calls into the kernel that neither std nor nix make for us: the
//! fork server's raw `clone`, and passing descriptors over a Unix socket (`SCM_RIGHTS`),
//! whose receiving end must adopt the descriptors the kernel installed.
//!
//! The crate's `unsafe` is listed in the workspace's `README.md` ("Unsafe"); here it is
//! the `clone` itself and the adoption of received descriptors.

#![allow(
    unsafe_code,
    reason = "the raw clone(2) and descriptors received over SCM_RIGHTS; see the SAFETY comments"
)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// True where [`fork_sibling`] can fork: the targets whose `clone` argument order it
/// assumes. Elsewhere the pool starts every worker from the executable
/// (`StartMethod::Spawn`), whatever start method was asked for.
pub(super) const CAN_FORK_SIBLING: bool = cfg!(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
));

/// `fork(2)`, except that the child's parent is this process's parent (`CLONE_PARENT`):
/// the fork server makes each worker the pool's own child. Returns `None` in the child
/// and the child's pid in this process.
///
/// Unlike glibc's `fork()` it runs no `pthread_atfork` handlers, and the child keeps
/// glibc's cached thread id of this process's main thread: `getpid` (uncached since
/// glibc 2.25) and `raise`/`abort` (which ask the kernel since 2.34) are right in the
/// child, but `pthread_*` calls naming `pthread_self()` and error-checking, robust or
/// priority-inheritance mutexes would see the caller's thread id (the process pool's
/// README lists this).
///
/// # Safety
///
/// The calling process must have exactly one thread, and start none until this returns:
/// the child gets a copy of the memory, in which another thread's locks and half-done
/// work would stay as they were, never to be finished.
///
/// # Errors
///
/// The `errno` of a failed `clone`.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub(super) unsafe fn fork_sibling() -> io::Result<Option<u32>> {
    // SAFETY: `clone` with `CLONE_PARENT | SIGCHLD`, no new stack, no `CLONE_VM` and no
    // tid or TLS pointers is `fork(2)` with our parent as the child's: both processes
    // return here, each on its own copy of the stack (with `CLONE_PARENT` the child's
    // exit signal is our own, SIGCHLD; the flag is passed for clarity). The flags are the
    // first argument and the new stack the second on both x86_64 (flags, stack,
    // parent_tid, child_tid, tls) and aarch64 (flags, stack, parent_tid, tls, child_tid),
    // and the other three are zero, so their order does not matter; s390 puts the stack
    // first, which is why this is compiled only for the two. The caller guarantees a
    // single thread (this function's contract), so the child's memory holds no other
    // thread's state.
    let pid = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_clone,
            nix::libc::CLONE_PARENT | nix::libc::SIGCHLD,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        0 => Ok(None),
        pid if pid > 0 => u32::try_from(pid)
            .map(Some)
            .map_err(|_| io::Error::from_raw_os_error(nix::libc::EOVERFLOW)),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Where the raw `clone`'s argument order is not known to be right, there is no fork:
/// the pool never starts a fork server ([`CAN_FORK_SIBLING`]).
///
/// # Safety
///
/// None needed; the signature matches the forking version's.
///
/// # Errors
///
/// Always `Unsupported`.
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
pub(super) unsafe fn fork_sibling() -> io::Result<Option<u32>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the fork server's clone is built only for x86_64 and aarch64 Linux",
    ))
}

/// Sends two descriptors over `control` (one byte with `SCM_RIGHTS`), which the other
/// process reads with [`recv_fds`]. Our copies are closed: the message holds its own.
pub(super) fn send_fds(control: &UnixStream, fds: [OwnedFd; 2]) -> io::Result<()> {
    let raw = [fds[0].as_raw_fd(), fds[1].as_raw_fd()];
    let sent = loop {
        match sendmsg::<()>(
            control.as_raw_fd(),
            &[IoSlice::new(&[1])],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(Errno::EINTR) => {}
            sent => break sent?,
        }
    };
    if sent != 1 {
        return Err(io::Error::other("the other process took no request"));
    }
    Ok(())
}

/// Reads one message of [`send_fds`]: its two descriptors (close-on-exec); `None` at the
/// end of the stream.
pub(super) fn recv_fds(control: &UnixStream) -> io::Result<Option<[OwnedFd; 2]>> {
    let mut byte = [0u8];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let message = loop {
        match recvmsg::<()>(
            control.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => {}
            message => break message?,
        }
    };
    let mut received = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for this
                // message; nothing else refers to it, so it is ours to own and close.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if message.bytes == 0 {
        return Ok(None);
    }
    match <[OwnedFd; 2]>::try_from(received) {
        Ok(fds) => Ok(Some(fds)),
        Err(_) => Err(io::Error::other("a request without its two descriptors")),
    }
}
