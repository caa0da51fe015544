//! Response bodies: bytes already in memory, or a file sent a chunk at a time.
//!
//! A file body holds one chunk at most: the next one is read (on the blocking pool) only when
//! hyper asks for it, and hyper asks only while what it holds for the socket is below its
//! buffer size (`CONNECTION_BUFFER` in `server.rs`). So a client that stops reading a large
//! file costs a chunk and hyper's buffer, not the file.

use std::fs::File;
use std::io::{self, Read};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::descriptors::Descriptor;

/// How many bytes of a file are read at once.
const CHUNK: usize = 64 * 1024;

/// The body of a response.
#[derive(Debug)]
pub(crate) enum Body {
    /// Bytes in memory, sent as one frame (`None` once sent).
    Bytes(Option<Bytes>),
    /// A file, read as it is sent.
    File(FileBody),
}

impl Body {
    pub(crate) fn bytes(bytes: Bytes) -> Self {
        Self::Bytes(Some(bytes))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Self::Bytes(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Self::File(file) => file.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Bytes(bytes) => bytes.is_none(),
            Self::File(file) => file.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Bytes(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Self::File(file) => SizeHint::with_exact(file.remaining),
        }
    }
}

/// An open regular file sent from its current position, exactly `len` bytes of it: the length
/// announced in `Content-Length`.
#[derive(Debug)]
pub(crate) struct FileBody {
    /// Bytes still to send.
    remaining: u64,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Waiting for hyper to ask for the next chunk.
    Idle(Open),
    /// A chunk is being read on the blocking pool; the file comes back with it.
    Reading(JoinHandle<io::Result<(Open, Bytes)>>),
    /// Everything was sent, or reading failed.
    Done,
}

impl FileBody {
    /// Sends `len` bytes of `file` from its current position; the file's descriptor is counted
    /// by `descriptor` until the file is closed.
    pub(crate) fn new(file: File, descriptor: Descriptor, len: u64) -> Self {
        Self {
            remaining: len,
            state: State::Idle(Open {
                file,
                _descriptor: descriptor,
            }),
        }
    }

    /// The next chunk: `None` once `len` bytes were sent; an error if the file ends sooner (it
    /// was truncated while being sent), which makes hyper abort the connection rather than
    /// send fewer bytes than it announced.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Idle(open) => {
                    if self.remaining == 0 {
                        return Poll::Ready(None);
                    }
                    let want = usize::try_from(self.remaining).map_or(CHUNK, |n| n.min(CHUNK));
                    self.state =
                        State::Reading(tokio::task::spawn_blocking(move || read_chunk(open, want)));
                }
                State::Reading(mut reading) => {
                    let read = match Pin::new(&mut reading).poll(cx) {
                        Poll::Pending => {
                            self.state = State::Reading(reading);
                            return Poll::Pending;
                        }
                        Poll::Ready(read) => read,
                    };
                    let (open, chunk) = match read {
                        Ok(Ok(read)) => read,
                        Ok(Err(error)) => return Poll::Ready(Some(Err(error))),
                        Err(join) => return Poll::Ready(Some(Err(io::Error::other(join)))),
                    };
                    if chunk.is_empty() {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the file shrank while it was sent",
                        ))));
                    }
                    self.remaining -= chunk.len() as u64;
                    self.state = State::Idle(open);
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
            }
        }
    }
}

/// A file being sent, with the permit that counts its descriptor: they go together, so that
/// the permit returns only when the file is closed, wherever that happens.
#[derive(Debug)]
struct Open {
    file: File,
    _descriptor: Descriptor,
}

/// Reads up to `want` bytes (fewer only at the end of the file).
fn read_chunk(mut open: Open, want: usize) -> io::Result<(Open, Bytes)> {
    let mut buffer = vec![0; want];
    let mut filled = 0;
    while filled < want {
        match open.file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buffer.truncate(filled);
    Ok((open, Bytes::from(buffer)))
}
