//! The wire protocol between the pool and its worker processes: every message is a
//! typed frame, and this module is the only one that knows a tag byte or where a field
//! sits in a frame. See `README.md` beside this file for the table of messages.
//!
//! ```text
//! frame = len:u32le  tag:u8  fields  body        (len counts tag, fields and body)
//! ```
//!
//! Each message has its own fixed fields (a call its task id and the two offsets of
//! its [`Callee`], a reply its task id and run time, the handshake messages none); the
//! body is postcard or text. Frames are appended to a `Vec<u8>` and written many at a
//! time (one `write` per batch); they are read through a `BufReader`, so a batch costs
//! one `read` on the other side too.

use std::borrow::Cow;
use std::io::{self, BufRead, Read};

use serde::{Deserialize, Serialize};

use crate::error::{FutureError, PanicError, PanicLocation, WorkerError, WorkerErrorKind};

/// Bumped whenever the frame layout or a body changes.
/// 2: the bodies of `Reply::Panicked` and `Reply::Failed`, and a chunk's failed items,
/// are [`Fault`]s (with the panic's location and the failure's kind) instead of text;
/// the worker answers `Accepted` before its initializer runs; its pipes come over a
/// socket, not as stdin and stdout.
/// 3: each message has its own fixed fields instead of two words shared by all whose
/// meaning changed with the tag; the handshake answers carry no pid.
pub(super) const PROTOCOL_VERSION: u32 = 3;

/// The largest frame accepted; anything larger is a corrupt stream.
const MAX_FRAME: usize = 1 << 31;
/// The largest handshake answer the pool reads: a worker that says more is not speaking
/// the protocol.
const MAX_HANDSHAKE_FRAME: usize = 1 << 20;

/// The tag byte of each message, and the size of its fixed fields.
mod tag {
    /// Pool → worker: [`Hello`](super::Hello) in the body.
    pub(super) const HELLO: u8 = 1;
    /// Pool → worker: [`Call`](super::Call): id, trampoline offset, function offset;
    /// the argument in the body.
    pub(super) const CALL: u8 = 2;
    /// Worker → pool: the handshake was accepted; the initializer (if any) runs next.
    pub(super) const ACCEPTED: u8 = 9;
    /// Worker → pool: the initializer is done; calls may come.
    pub(super) const READY: u8 = 10;
    /// Worker → pool: the initializer failed; its message in the body.
    pub(super) const INIT_FAILED: u8 = 11;
    /// Worker → pool: the handshake was refused; why, in the body.
    pub(super) const REFUSED: u8 = 12;
    /// Worker → pool: the replies to a call: id and nanoseconds, then the body.
    pub(super) const OK: u8 = 13;
    pub(super) const PANICKED: u8 = 14;
    pub(super) const FAILED: u8 = 15;

    /// Bytes of a call's fixed fields: id, trampoline offset, function offset.
    pub(super) const CALL_FIELDS: usize = 24;
    /// Bytes of a reply's fixed fields: id, nanoseconds.
    pub(super) const REPLY_FIELDS: usize = 16;

    /// The size of a message's fixed fields; `None` for a tag that is no message.
    pub(super) fn fields(tag: u8) -> Option<usize> {
        match tag {
            HELLO | ACCEPTED | READY | INIT_FAILED | REFUSED => Some(0),
            CALL => Some(CALL_FIELDS),
            OK | PANICKED | FAILED => Some(REPLY_FIELDS),
            _ => None,
        }
    }
}

/// Which function a call runs: the offsets, from the anchor function in `call.rs`, of a
/// typed trampoline and of the task function. Plain data as far as this module is
/// concerned; `call.rs` makes it (from a typed `fn`) and resolves it back into
/// something callable (after a passed handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Callee {
    trampoline: u64,
    function: u64,
}

impl Callee {
    pub(super) const fn new(trampoline: u64, function: u64) -> Self {
        Self {
            trampoline,
            function,
        }
    }

    /// The trampoline's offset from the anchor.
    pub(super) const fn trampoline(self) -> u64 {
        self.trampoline
    }

    /// The task function's offset from the anchor.
    pub(super) const fn function(self) -> u64 {
        self.function
    }
}

/// Pool → worker: run a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Call<'a> {
    pub(super) id: u64,
    pub(super) callee: Callee,
    /// The postcard-encoded argument (a `Vec<A>` for a `map` chunk).
    pub(super) argument: &'a [u8],
}

/// Worker → pool: the answers of the handshake, in this order: `Accepted` (or
/// `Refused`), then `Ready` (or `InitFailed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Handshake<'a> {
    /// The [`Hello`] checked out; the initializer (if any) runs next. The pool's
    /// handshake deadline ends here.
    Accepted,
    /// The initializer is done: calls may come.
    Ready,
    /// The initializer returned an error or panicked: its message.
    InitFailed(Cow<'a, str>),
    /// The [`Hello`] did not check out (another executable or protocol): why.
    Refused(Cow<'a, str>),
}

/// How a call ended in the worker: which reply carries its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// The result (postcard) was written.
    Ok,
    /// The function panicked; a [`Fault::Panicked`] was written (the initializer's
    /// trampoline writes its message as text instead, for [`Handshake::InitFailed`]).
    Panicked,
    /// The argument could not be decoded or the result encoded; a [`Fault::Failed`] was
    /// written (or the initializer returned an error: its message as text).
    Failed,
}

impl Status {
    fn tag(self) -> u8 {
        match self {
            Self::Ok => tag::OK,
            Self::Panicked => tag::PANICKED,
            Self::Failed => tag::FAILED,
        }
    }
}

/// Worker → pool: the answer to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReplyFrame<'a> {
    /// The task id of the call answered.
    pub(super) id: u64,
    /// How long the call ran in the worker.
    pub(super) nanos: u64,
    pub(super) reply: Reply<'a>,
}

/// What a call produced, with its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply<'a> {
    /// The postcard result (a chunk: a [`ChunkReply`]).
    Ok(&'a [u8]),
    /// A [`Fault::Panicked`].
    Panicked(&'a [u8]),
    /// A [`Fault::Failed`].
    Failed(&'a [u8]),
}

// ---------------------------------------------------------------- writing

/// Appends the length placeholder and the tag of a frame; returns where it starts.
fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(tag);
    start
}

/// Writes the length of the frame that starts at `start`.
///
/// # Errors
///
/// `InvalidData` when the frame is larger than the protocol allows; the frame is removed.
fn finish(out: &mut Vec<u8>, start: usize) -> io::Result<()> {
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
    Ok(())
}

/// The handshake frame, which the pool sends first to every worker.
///
/// # Errors
///
/// `InvalidData` when `hello` cannot be encoded.
pub(super) fn hello_frame(hello: &Hello) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let start = begin(&mut out, tag::HELLO);
    postcard::serialize_with_flavor(hello, Append(&mut out))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    finish(&mut out, start)?;
    Ok(out)
}

/// Appends a call.
///
/// # Errors
///
/// `InvalidData` when the argument makes the frame too large (the frame is removed).
pub(super) fn push_call(out: &mut Vec<u8>, call: &Call<'_>) -> io::Result<()> {
    let start = begin(out, tag::CALL);
    out.extend_from_slice(&call.id.to_le_bytes());
    out.extend_from_slice(&call.callee.trampoline.to_le_bytes());
    out.extend_from_slice(&call.callee.function.to_le_bytes());
    out.extend_from_slice(call.argument);
    finish(out, start)
}

/// Appends a handshake answer.
///
/// # Errors
///
/// `InvalidData` when its message makes the frame too large (the frame is removed).
pub(super) fn push_handshake(out: &mut Vec<u8>, answer: &Handshake<'_>) -> io::Result<()> {
    let (tag, message) = match answer {
        Handshake::Accepted => (tag::ACCEPTED, ""),
        Handshake::Ready => (tag::READY, ""),
        Handshake::InitFailed(message) => (tag::INIT_FAILED, &**message),
        Handshake::Refused(why) => (tag::REFUSED, &**why),
    };
    let start = begin(out, tag);
    out.extend_from_slice(message.as_bytes());
    finish(out, start)
}

/// A reply being written in place: its body is appended to the buffer after
/// [`begin_reply`], and [`finish`](Self::finish) fills in what is known only once the
/// call ran. The buffer holds a partial frame until then.
#[must_use = "a reply must be finished, or the buffer holds a partial frame"]
#[derive(Debug)]
pub(super) struct ReplyStart {
    start: usize,
}

/// Begins the reply to call `id` at the end of `out`.
pub(super) fn begin_reply(out: &mut Vec<u8>, id: u64) -> ReplyStart {
    let start = begin(out, tag::OK);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    ReplyStart { start }
}

impl ReplyStart {
    /// Completes the reply: which it is, and how long the call ran.
    ///
    /// # Errors
    ///
    /// `InvalidData` when the body makes the frame too large; the whole reply is removed
    /// (the caller sends a smaller one, saying so).
    pub(super) fn finish(self, out: &mut Vec<u8>, status: Status, nanos: u64) -> io::Result<()> {
        let fields = self.start + 5;
        out[self.start + 4] = status.tag();
        out[fields + 8..fields + 16].copy_from_slice(&nanos.to_le_bytes());
        finish(out, self.start)
    }
}

/// Appends a whole reply.
///
/// # Errors
///
/// `InvalidData` when the body makes the frame too large (the frame is removed).
pub(super) fn push_reply(
    out: &mut Vec<u8>,
    id: u64,
    status: Status,
    nanos: u64,
    body: &[u8],
) -> io::Result<()> {
    let reply = begin_reply(out, id);
    out.extend_from_slice(body);
    reply.finish(out, status, nanos)
}

// ---------------------------------------------------------------- reading

/// A frame's tag and fixed fields, its body read into the caller's buffer.
struct Frame {
    tag: u8,
    fields: [u8; tag::CALL_FIELDS],
}

impl Frame {
    /// The `n`-th little-endian `u64` of the fixed fields.
    fn word(&self, n: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.fields[n * 8..n * 8 + 8]);
        u64::from_le_bytes(bytes)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads one frame of at most `max_len` bytes (after the length prefix): its tag and
/// fields, and its body into `body` (replacing what was there). `Ok(None)` on a clean
/// end of stream between frames.
///
/// # Errors
///
/// I/O errors, `UnexpectedEof` in the middle of a frame, `InvalidData` for a length
/// that cannot be a frame or a tag that is no message.
fn read_frame<R: BufRead>(
    reader: &mut R,
    body: &mut Vec<u8>,
    max_len: usize,
) -> io::Result<Option<Frame>> {
    if reader.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let mut head = [0u8; 5];
    reader.read_exact(&mut head)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let tag = head[4];
    let fields = tag::fields(tag).ok_or_else(|| invalid(format!("unknown message tag {tag}")))?;
    if !(1 + fields..=max_len.min(MAX_FRAME)).contains(&len) {
        return Err(invalid(format!("invalid frame length {len}")));
    }
    let mut frame = Frame {
        tag,
        fields: [0; tag::CALL_FIELDS],
    };
    reader.read_exact(&mut frame.fields[..fields])?;
    body.clear();
    let want = len - 1 - fields;
    // `take` + `read_to_end` grows the buffer as bytes arrive, so a corrupt length
    // cannot make us allocate gigabytes up front.
    let got = reader.by_ref().take(want as u64).read_to_end(body)?;
    if got != want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended in the middle of a message",
        ));
    }
    Ok(Some(frame))
}

/// The worker reads the pool's first message: `Ok(Err(why))` when it is not a
/// [`Hello`] this worker can decode (it refuses the handshake with `why`).
///
/// # Errors
///
/// As for a frame that cannot be read at all.
pub(super) fn read_hello<R: BufRead>(
    reader: &mut R,
    body: &mut Vec<u8>,
) -> io::Result<Option<Result<Hello, String>>> {
    let Some(frame) = read_frame(reader, body, MAX_FRAME)? else {
        return Ok(None);
    };
    if frame.tag != tag::HELLO {
        return Ok(Some(
            Err("the first message was not a handshake".to_owned()),
        ));
    }
    Ok(Some(
        postcard::from_bytes(body).map_err(|e| format!("undecodable handshake: {e}")),
    ))
}

/// The worker reads its next call; the argument stays in `body`.
///
/// # Errors
///
/// As for a frame that cannot be read, and `InvalidData` for any message but a call.
pub(super) fn read_call<'b, R: BufRead>(
    reader: &mut R,
    body: &'b mut Vec<u8>,
) -> io::Result<Option<Call<'b>>> {
    let Some(frame) = read_frame(reader, body, MAX_FRAME)? else {
        return Ok(None);
    };
    if frame.tag != tag::CALL {
        return Err(invalid(format!("unexpected message tag {}", frame.tag)));
    }
    Ok(Some(Call {
        id: frame.word(0),
        callee: Callee::new(frame.word(1), frame.word(2)),
        argument: body,
    }))
}

/// The pool reads a worker's next handshake answer. Handshake answers are small: a
/// larger frame is not the protocol.
///
/// # Errors
///
/// As for a frame that cannot be read, and `InvalidData` for a message that is no
/// handshake answer.
pub(super) fn read_handshake<'b, R: BufRead>(
    reader: &mut R,
    body: &'b mut Vec<u8>,
) -> io::Result<Option<Handshake<'b>>> {
    let Some(frame) = read_frame(reader, body, MAX_HANDSHAKE_FRAME)? else {
        return Ok(None);
    };
    Ok(Some(match frame.tag {
        tag::ACCEPTED => Handshake::Accepted,
        tag::READY => Handshake::Ready,
        tag::INIT_FAILED => Handshake::InitFailed(String::from_utf8_lossy(body)),
        tag::REFUSED => Handshake::Refused(String::from_utf8_lossy(body)),
        other => {
            return Err(invalid(format!(
                "a message with tag {other} during the handshake"
            )));
        }
    }))
}

/// The pool reads a worker's next reply.
///
/// # Errors
///
/// As for a frame that cannot be read, and `InvalidData` for a message that is no
/// reply.
pub(super) fn read_reply<'b, R: BufRead>(
    reader: &mut R,
    body: &'b mut Vec<u8>,
) -> io::Result<Option<ReplyFrame<'b>>> {
    let Some(frame) = read_frame(reader, body, MAX_FRAME)? else {
        return Ok(None);
    };
    let reply = match frame.tag {
        tag::OK => Reply::Ok(body),
        tag::PANICKED => Reply::Panicked(body),
        tag::FAILED => Reply::Failed(body),
        other => return Err(invalid(format!("unexpected message (tag {other})"))),
    };
    Ok(Some(ReplyFrame {
        id: frame.word(0),
        nanos: frame.word(1),
        reply,
    }))
}

// ---------------------------------------------------------------- bodies

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

/// The handshake, the first message to every worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Hello {
    pub(super) version: u32,
    pub(super) exe: ExeIdentity,
    /// Offsets of a few known functions from the anchor, as the pool computed them;
    /// the worker computes its own and refuses to run if any differs.
    pub(super) probes: Vec<u64>,
    /// The initializer and its encoded argument.
    pub(super) init: Option<(Callee, Vec<u8>)>,
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

/// Why a call, or one item of a chunk, has no value: the body of [`Reply::Panicked`]
/// and [`Reply::Failed`]. It carries data rather than a sentence so that the pool can hand the
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

    /// Decodes a [`Reply::Panicked`] or [`Reply::Failed`] body, sent by a worker process.
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

    fn reader(bytes: &[u8]) -> io::BufReader<&[u8]> {
        io::BufReader::new(bytes)
    }

    #[test]
    fn calls_round_trip() {
        let mut out = Vec::new();
        let first = Call {
            id: 7,
            callee: Callee::new(1, u64::MAX),
            argument: b"abc",
        };
        let second = Call {
            id: 8,
            callee: Callee::new(u64::MAX - 1, 0),
            argument: b"",
        };
        push_call(&mut out, &first).unwrap();
        push_call(&mut out, &second).unwrap();
        let mut input = reader(&out);
        let mut body = Vec::new();
        assert_eq!(read_call(&mut input, &mut body).unwrap(), Some(first));
        assert_eq!(read_call(&mut input, &mut body).unwrap(), Some(second));
        assert_eq!(read_call(&mut input, &mut body).unwrap(), None);
    }

    #[test]
    fn replies_round_trip_written_in_place() {
        let mut out = Vec::new();
        let reply = begin_reply(&mut out, 8);
        out.extend_from_slice(b"hello");
        reply.finish(&mut out, Status::Panicked, 99).unwrap();
        push_reply(&mut out, 9, Status::Failed, 5, b"fault").unwrap();
        push_reply(&mut out, 10, Status::Ok, 0, b"").unwrap();
        let mut input = reader(&out);
        let mut body = Vec::new();
        let expect = |id, nanos, reply| Some(ReplyFrame { id, nanos, reply });
        assert_eq!(
            read_reply(&mut input, &mut body).unwrap(),
            expect(8, 99, Reply::Panicked(b"hello"))
        );
        assert_eq!(
            read_reply(&mut input, &mut body).unwrap(),
            expect(9, 5, Reply::Failed(b"fault"))
        );
        assert_eq!(
            read_reply(&mut input, &mut body).unwrap(),
            expect(10, 0, Reply::Ok(b""))
        );
        assert_eq!(read_reply(&mut input, &mut body).unwrap(), None);
    }

    #[test]
    fn handshakes_round_trip() {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            exe: ExeIdentity {
                dev: 1,
                ino: 2,
                size: 3,
                mtime: -4,
                mtime_nsec: 5,
            },
            probes: vec![6, 7],
            init: Some((Callee::new(8, 9), vec![10])),
            max_tasks: 11,
        };
        let frame = hello_frame(&hello).unwrap();
        let mut body = Vec::new();
        let read = read_hello(&mut reader(&frame), &mut body).unwrap();
        assert_eq!(read.unwrap().unwrap().init, hello.init);

        let answers = [
            Handshake::Accepted,
            Handshake::Refused("another executable".into()),
            Handshake::Ready,
            Handshake::InitFailed("no config".into()),
        ];
        let mut out = Vec::new();
        for answer in &answers {
            push_handshake(&mut out, answer).unwrap();
        }
        let mut input = reader(&out);
        for answer in answers {
            assert_eq!(read_handshake(&mut input, &mut body).unwrap(), Some(answer));
        }
        assert_eq!(read_handshake(&mut input, &mut body).unwrap(), None);
    }

    #[test]
    fn a_message_out_of_place_is_refused_or_an_error() {
        let mut call = Vec::new();
        push_call(
            &mut call,
            &Call {
                id: 1,
                callee: Callee::new(2, 3),
                argument: b"",
            },
        )
        .unwrap();
        let mut body = Vec::new();
        // The worker refuses a handshake that is something else.
        let first = read_hello(&mut reader(&call), &mut body).unwrap();
        assert!(first.unwrap().is_err());
        // The pool takes neither a call for a handshake answer nor one for a reply.
        let err = read_handshake(&mut reader(&call), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let err = read_reply(&mut reader(&call), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Nor the worker a reply for a call.
        let mut reply = Vec::new();
        push_reply(&mut reply, 1, Status::Ok, 2, b"").unwrap();
        let err = read_call(&mut reader(&reply), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A handshake answer larger than any real one is not the protocol.
        let mut large = Vec::new();
        let message = "x".repeat(MAX_HANDSHAKE_FRAME);
        push_handshake(&mut large, &Handshake::Refused(message.into())).unwrap();
        let err = read_handshake(&mut reader(&large), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
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
        push_reply(&mut out, 1, Status::Ok, 1, b"body").unwrap();
        let mut body = Vec::new();
        let cut = &out[..out.len() - 1];
        let err = read_reply(&mut reader(cut), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // A length too short for the reply's own fields.
        let mut bad = out.clone();
        bad[..4].copy_from_slice(&3u32.to_le_bytes());
        let err = read_reply(&mut reader(&bad), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // Text where a frame should be ("star" read as a length).
        let err = read_reply(&mut reader(b"starting up"), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A tag that is no message.
        let mut unknown = out.clone();
        unknown[4] = 200;
        let err = read_reply(&mut reader(&unknown), &mut body).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
