//! The wire protocol between the pool and its worker processes: length-prefixed frames
//! with a fixed header, bodies in postcard. See `README.md` beside this file.
//!
//! ```text
//! frame  = len:u32le  tag:u8  id:u64le  x:u64le  y:u64le  body[len - 25]
//! ```
//!
//! Frames are appended to a `Vec<u8>` and written many at a time (one `write` per batch);
//! they are read through a `BufReader`, so a batch costs one `read` on the other side too.

use std::io::{self, BufRead, Read};

use serde::{Deserialize, Serialize};

use crate::error::{FutureError, PanicError, PanicLocation, WorkerError, WorkerErrorKind};

/// Bumped whenever the frame layout or a body changes.
/// 2: the bodies of `TAG_PANICKED` and `TAG_FAILED`, and a chunk's failed items, are
/// [`Fault`]s (with the panic's location and the failure's kind) instead of text; the
/// worker answers `TAG_ACCEPTED` before its initializer runs; its pipes come over a
/// socket, not as stdin and stdout.
pub(super) const PROTOCOL_VERSION: u32 = 2;

/// Bytes after the length prefix that every frame has: tag, id, x, y.
const FIXED: usize = 1 + 8 + 8 + 8;
/// Bytes of a frame header, length prefix included.
pub(super) const HEADER_LEN: usize = 4 + FIXED;
/// The largest frame accepted; anything larger is a corrupt stream.
const MAX_FRAME: usize = 1 << 31;
/// The largest handshake answer (`ACCEPTED`, `REFUSED`, `READY`, `INIT_FAILED`: a pid or
/// a message) the pool reads: a worker that says more is not speaking the protocol.
pub(super) const MAX_HANDSHAKE_FRAME: usize = 1 << 20;

/// Pool → worker: the handshake ([`Hello`] in the body).
pub(super) const TAG_HELLO: u8 = 1;
/// Pool → worker: run a call. `id` = task id, `x` = trampoline offset, `y` = function
/// offset, body = the postcard-encoded argument (or chunk of arguments).
pub(super) const TAG_CALL: u8 = 2;
/// Worker → pool: handshake accepted, the initializer (if any) runs next; `id` = the
/// worker's pid. The pool's handshake deadline ends here.
pub(super) const TAG_ACCEPTED: u8 = 9;
/// Worker → pool: handshake accepted and initializer done; `id` = the worker's pid.
pub(super) const TAG_READY: u8 = 10;
/// Worker → pool: the initializer failed; body = its message (UTF-8).
pub(super) const TAG_INIT_FAILED: u8 = 11;
/// Worker → pool: the handshake was refused (not the same executable); body = why.
pub(super) const TAG_REFUSED: u8 = 12;
/// Worker → pool: a call returned; `x` = nanoseconds it ran, body = postcard result.
pub(super) const TAG_OK: u8 = 13;
/// Worker → pool: a call panicked; `x` = nanoseconds, body = a [`Fault::Panicked`].
pub(super) const TAG_PANICKED: u8 = 14;
/// Worker → pool: a call failed on the wire (argument not decodable, result not
/// encodable); `x` = nanoseconds, body = a [`Fault::Failed`].
pub(super) const TAG_FAILED: u8 = 15;

/// A frame's fixed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) tag: u8,
    pub(super) id: u64,
    pub(super) x: u64,
    pub(super) y: u64,
}

/// Appends a frame header with a placeholder length; returns where the frame starts, for
/// [`end_frame`]. The body is appended by the caller.
pub(super) fn begin_frame(out: &mut Vec<u8>, header: Header) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(header.tag);
    out.extend_from_slice(&header.id.to_le_bytes());
    out.extend_from_slice(&header.x.to_le_bytes());
    out.extend_from_slice(&header.y.to_le_bytes());
    start
}

/// Writes the length of the frame that starts at `start`, and optionally replaces its tag
/// and `x` (known only after a call ran).
///
/// # Errors
///
/// `InvalidData` when the frame is larger than the protocol allows; the frame is removed.
pub(super) fn end_frame(
    out: &mut Vec<u8>,
    start: usize,
    patch: Option<(u8, u64)>,
) -> io::Result<()> {
    let len = out.len() - start - 4;
    if len > MAX_FRAME {
        out.truncate(start);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message of {len} bytes is larger than the limit of {MAX_FRAME}"),
        ));
    }
    // `len <= MAX_FRAME < u32::MAX`, so the conversion cannot fail.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    if let Some((tag, x)) = patch {
        out[start + 4] = tag;
        out[start + 13..start + 21].copy_from_slice(&x.to_le_bytes());
    }
    Ok(())
}

/// Appends a whole frame.
pub(super) fn push_frame(out: &mut Vec<u8>, header: Header, body: &[u8]) -> io::Result<()> {
    let start = begin_frame(out, header);
    out.extend_from_slice(body);
    end_frame(out, start, None)
}

/// Reads one frame: its header, and its body into `body` (replacing what was there).
/// `Ok(None)` on a clean end of stream between frames.
///
/// # Errors
///
/// I/O errors, `UnexpectedEof` in the middle of a frame, `InvalidData` for a length
/// that cannot be a frame.
pub(super) fn read_frame<R: BufRead>(
    reader: &mut R,
    body: &mut Vec<u8>,
) -> io::Result<Option<Header>> {
    read_frame_within(reader, body, MAX_FRAME)
}

/// [`read_frame`] for a frame of at most `max_len` bytes (after the length prefix).
pub(super) fn read_frame_within<R: BufRead>(
    reader: &mut R,
    body: &mut Vec<u8>,
    max_len: usize,
) -> io::Result<Option<Header>> {
    if reader.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let mut head = [0u8; HEADER_LEN];
    reader.read_exact(&mut head)?;
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(FIXED..=max_len.min(MAX_FRAME)).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("invalid frame length {len}"),
        ));
    }
    let header = Header {
        tag: head[4],
        id: word(5),
        x: word(13),
        y: word(21),
    };
    body.clear();
    let want = len - FIXED;
    // `take` + `read_to_end` grows the buffer as bytes arrive, so a corrupt length
    // cannot make us allocate gigabytes up front.
    let got = reader.by_ref().take(want as u64).read_to_end(body)?;
    if got != want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended in the middle of a message",
        ));
    }
    Ok(Some(header))
}

/// A postcard output that appends to a `Vec` it borrows, with no intermediate buffer.
///
/// Postcard hands most values over as short slices (a varint is 1 to 10 bytes); those
/// are copied byte by byte, since a `memcpy` call per integer costs more than the copy.
pub(super) struct Append<'a>(pub(super) &'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() <= 16 {
            self.0.reserve(16);
            for &byte in bytes {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// A postcard output that owns its `Vec` (so the compiler may keep its length in a
/// register across a sequence's elements), for buffers made for one value.
///
/// Its `try_extend` repeats [`Append`]'s on purpose: the same code moved into a shared
/// `#[inline(always)]` function measured 33–42 M items/s at chunksize 1000 against 44–52 M
/// for the two copies (alternating `BENCH_ONLY=chunk1000` runs).
pub(super) struct Owned(pub(super) Vec<u8>);

impl postcard::ser_flavors::Flavor for Owned {
    type Output = Vec<u8>;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() <= 16 {
            self.0.reserve(16);
            for &byte in bytes {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Which file the worker runs: compared in the handshake, so that a worker started from
/// a binary replaced on disk (a rebuild) refuses to run anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ExeIdentity {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime: i64,
    pub(super) mtime_nsec: i64,
}

/// The body of [`TAG_HELLO`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Hello {
    pub(super) version: u32,
    pub(super) exe: ExeIdentity,
    /// Offsets of a few known functions from the anchor, as the pool computed them;
    /// the worker computes its own and refuses to run if any differs.
    pub(super) probes: Vec<u64>,
    /// The initializer: trampoline offset, function offset, encoded argument.
    pub(super) init: Option<(u64, u64, Vec<u8>)>,
    /// Tasks after which the worker exits (0: no limit).
    pub(super) max_tasks: u64,
}

/// A map chunk's outcome as it crosses the wire (the worker serializes it from slices).
#[derive(Debug, Serialize)]
pub(super) struct ChunkReplyRef<'a, R> {
    pub(super) values: &'a [R],
    pub(super) failures: &'a [ItemFailure],
    pub(super) nanos_per_item: u64,
}

/// [`ChunkReplyRef`] as the pool decodes it.
#[derive(Debug, Deserialize)]
pub(super) struct ChunkReply<R> {
    pub(super) values: Vec<R>,
    pub(super) failures: Vec<ItemFailure>,
    pub(super) nanos_per_item: u64,
}

/// One failed item of a chunk: its position and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ItemFailure {
    pub(super) position: u64,
    pub(super) fault: Fault,
}

/// Why a call, or one item of a chunk, has no value: the body of `TAG_PANICKED` and
/// `TAG_FAILED`. It carries data rather than a sentence so that the pool can hand the
/// caller a [`PanicError`] with its location, or a [`WorkerError`] with its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Fault {
    /// The function panicked.
    Panicked {
        message: String,
        /// `(file, line, column)`, when the worker's panic hook saw the panic.
        location: Option<(String, u32, u32)>,
    },
    /// The call could not be made or its result not sent back.
    Failed {
        kind: FailKind,
        message: String,
        /// The worker's own pid (the pool's reader knows it too, but the sink that
        /// turns this into an error does not).
        pid: u32,
    },
}

/// The kinds of [`Fault::Failed`], a wire-only copy of the [`WorkerErrorKind`]s that a
/// worker can report (the public enum stays free of serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum FailKind {
    NotInExecutable,
    ArgumentDecode,
    ResultEncode,
    ResultTooLarge,
}

impl Fault {
    /// A failure in this (worker) process.
    pub(super) fn failed(kind: FailKind, message: impl Into<String>) -> Self {
        Self::Failed {
            kind,
            message: message.into(),
            pid: std::process::id(),
        }
    }

    /// A panic caught in this (worker) process.
    pub(super) fn panicked(panic: &PanicError) -> Self {
        Self::Panicked {
            message: panic.message().to_owned(),
            location: panic
                .location()
                .map(|at| (at.file().to_owned(), at.line(), at.column())),
        }
    }

    /// The fault as a frame body.
    pub(super) fn encode(&self) -> Vec<u8> {
        // A fault is strings and integers: postcard cannot fail on it.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes a `TAG_PANICKED` or `TAG_FAILED` body, sent by a worker process.
    pub(super) fn decode(body: &[u8]) -> Result<Self, WorkerError> {
        postcard::from_bytes(body).map_err(|e| {
            WorkerError::new(
                WorkerErrorKind::Protocol,
                format!("the pool could not decode the worker's report of a failure: {e}"),
            )
        })
    }
}

impl From<Fault> for FutureError {
    fn from(fault: Fault) -> Self {
        match fault {
            Fault::Panicked { message, location } => Self::Panicked(PanicError::from_parts(
                message,
                location.map(|(file, line, column)| PanicLocation::new(file, line, column)),
            )),
            Fault::Failed { kind, message, pid } => {
                let kind = match kind {
                    FailKind::NotInExecutable => WorkerErrorKind::NotInExecutable,
                    FailKind::ArgumentDecode => WorkerErrorKind::ArgumentDecode,
                    FailKind::ResultEncode => WorkerErrorKind::ResultEncode,
                    FailKind::ResultTooLarge => WorkerErrorKind::ResultTooLarge,
                };
                // The worker is alive and goes on: it has a pid but no exit status.
                Self::WorkerFailed(WorkerError::new(kind, message).with_process(pid, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        let h1 = Header {
            tag: TAG_CALL,
            id: 7,
            x: 1,
            y: u64::MAX,
        };
        push_frame(&mut out, h1, b"abc").unwrap();
        let start = begin_frame(
            &mut out,
            Header {
                tag: 0,
                id: 8,
                x: 0,
                y: 0,
            },
        );
        out.extend_from_slice(b"hello");
        end_frame(&mut out, start, Some((TAG_OK, 99))).unwrap();

        let mut reader = io::BufReader::new(&out[..]);
        let mut body = Vec::new();
        assert_eq!(read_frame(&mut reader, &mut body).unwrap(), Some(h1));
        assert_eq!(body, b"abc");
        let h2 = read_frame(&mut reader, &mut body).unwrap().unwrap();
        assert_eq!((h2.tag, h2.id, h2.x), (TAG_OK, 8, 99));
        assert_eq!(body, b"hello");
        assert_eq!(read_frame(&mut reader, &mut body).unwrap(), None);
    }

    #[test]
    fn faults_round_trip_into_errors() {
        let panic = Fault::Panicked {
            message: "boom".to_owned(),
            location: Some(("src/lib.rs".to_owned(), 7, 9)),
        };
        let decoded = Fault::decode(&panic.encode()).unwrap();
        assert_eq!(decoded, panic);
        match FutureError::from(decoded) {
            FutureError::Panicked(p) => {
                assert_eq!(p.message(), "boom");
                assert_eq!(
                    p.location().map(ToString::to_string).as_deref(),
                    Some("src/lib.rs:7:9")
                );
            }
            other => panic!("expected a panic, got {other:?}"),
        }
        let failed = Fault::failed(FailKind::ArgumentDecode, "bad argument");
        match FutureError::from(Fault::decode(&failed.encode()).unwrap()) {
            FutureError::WorkerFailed(e) => {
                assert_eq!(e.kind(), WorkerErrorKind::ArgumentDecode);
                assert_eq!(e.pid(), Some(std::process::id()));
                assert_eq!(e.exit_status(), None);
                assert_eq!(e.to_string(), "bad argument");
            }
            other => panic!("expected a worker failure, got {other:?}"),
        }
        let garbage = Fault::decode(b"\xff\xff\xff").unwrap_err();
        assert!(garbage.is_protocol());
    }

    #[test]
    fn truncated_and_corrupt_streams_are_errors() {
        let mut out = Vec::new();
        push_frame(
            &mut out,
            Header {
                tag: 1,
                id: 1,
                x: 1,
                y: 1,
            },
            b"body",
        )
        .unwrap();
        let mut body = Vec::new();
        let cut = &out[..out.len() - 1];
        let err = read_frame(&mut io::BufReader::new(cut), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut bad = out.clone();
        bad[..4].copy_from_slice(&3u32.to_le_bytes());
        let err = read_frame(&mut io::BufReader::new(&bad[..]), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
