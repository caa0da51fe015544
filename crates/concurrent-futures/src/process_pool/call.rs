//! How a task function crosses to a worker process: as its address relative to an
//! anchor function, together with the relative address of a typed *trampoline* that
//! decodes the argument, calls the function and encodes the result.
//!
//! Turning an address back into a function pointer cannot be done safely (the crate's
//! other `unsafe` is listed in the workspace's `README.md`, "Unsafe"). The boundary is in
//! the types: the pool names a call with a [`Callee`] (two offsets, plain data) that only
//! [`one`], [`chunk`] and [`init`] make from a typed `fn`; the worker can call one only
//! through an [`Entry`], whose one constructor takes the [`SameImage`] proof that only
//! [`check_handshake`] gives out. It is sound because of three invariants:
//!
//! 1. **Same executable image.** Workers are started from `/proc/self/exe`, which names
//!    the pool's own executable file even if it was replaced on disk since. In the
//!    handshake the worker compares that file's identity (device, inode, size, mtime)
//!    and the anchor-relative offsets of several known functions with the pool's, and
//!    refuses to run anything on a mismatch ([`check_handshake`]). Within one image, the
//!    distance between two functions is fixed at link time, so `anchor + offset` is the
//!    same function in both processes, whatever address the loader chose (ASLR).
//! 2. **Own code only.** Before sending, the pool checks that the task function lies in
//!    the executable's own mapped code, not in a shared library (whose distance to the
//!    anchor may differ between processes); the worker checks both addresses again
//!    ([`Entry::resolve`]).
//! 3. **Matching types.** The pool only ever sends a trampoline offset taken from
//!    `call_one::<A, R>` (or `call_chunk`, `call_init`) together with the offset of a
//!    function of exactly the type that trampoline casts to (`fn(A) -> R`): [`one`],
//!    [`chunk`] and [`init`] take `f: fn(A) -> R` and derive both from it, and the frames
//!    travel only over the private pipes between the pool and its own child, which runs
//!    this same code (invariant 1).
//!
//! Why not a safe registry of named task functions? It would make every task function
//! need a registration line (and a link-time collection crate), where Python users
//! pass any module-level function; the handshake makes the address route safe in
//! practice, and it is contained here.

#![allow(
    unsafe_code,
    reason = "see the module docs: the one place functions cross processes"
)]

use crate::thread_pool::InitResult;

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::image;
use super::wire::{
    self, Append, Callee, ChunkReplyRef, FailKind, Fault, Hello, ItemFailure, Status,
};
use crate::error::{FutureError, PanicError, WorkerError, WorkerErrorKind, panic_message};
use crate::map::ChunkOutput;
use crate::panic_site;

/// A trampoline: decodes `input`, calls `function`, writes the encoded result (or a
/// message) to `out`.
///
/// # Safety
///
/// `function` must point to a function of the type the trampoline was instantiated
/// for, in this process.
type Trampoline = unsafe fn(function: *const (), input: &[u8], out: &mut Vec<u8>) -> Status;

/// The fixed point that offsets are measured from.
#[inline(never)]
fn anchor() -> u64 {
    0x00c0_ffee
}

fn anchor_ptr() -> *const () {
    anchor as fn() -> u64 as *const ()
}

/// The distance from the anchor to `code`, as it crosses the wire.
fn offset_of(code: *const ()) -> u64 {
    code.addr().wrapping_sub(anchor_ptr().addr()) as u64
}

/// The code at `offset` from the anchor in this process (the inverse of [`offset_of`]:
/// offsets are taken from addresses, so they fit in `usize` again).
fn at_offset(offset: u64) -> *const () {
    anchor_ptr().wrapping_byte_add(offset as usize)
}

/// Checks that `function` can be called in a worker, and names it with `trampoline`.
fn callee(trampoline: Trampoline, function: *const ()) -> Result<Callee, FutureError> {
    if !image::in_own_code(function) {
        return Err(FutureError::WorkerFailed(WorkerError::new(
            WorkerErrorKind::NotInExecutable,
            "the task function is not in the executable's own code (is it in a shared \
             library?), so it cannot be called in a worker process",
        )));
    }
    Ok(Callee::new(
        offset_of(trampoline as *const ()),
        offset_of(function),
    ))
}

/// `f` called on one argument, its result sent back.
pub(super) fn one<A, R>(f: fn(A) -> R) -> Result<Callee, FutureError>
where
    A: DeserializeOwned,
    R: Serialize,
{
    callee(call_one::<A, R>, f as *const ())
}

/// `f` called on each argument of a chunk (a `map` task).
pub(super) fn chunk<A, R>(f: fn(A) -> R) -> Result<Callee, FutureError>
where
    A: DeserializeOwned,
    R: Serialize,
{
    callee(call_chunk::<A, R>, f as *const ())
}

/// A worker initializer.
pub(super) fn init<A, R>(f: fn(A) -> R) -> Result<Callee, FutureError>
where
    A: DeserializeOwned,
    R: InitResult,
{
    callee(call_init::<A, R>, f as *const ())
}

/// A worker initializer without an argument (its argument on the wire is `()`).
pub(super) fn init_no_arg<R: InitResult>(f: fn() -> R) -> Result<Callee, FutureError> {
    callee(call_init_no_arg::<R>, f as *const ())
}

/// Offsets of known functions, compared in the handshake: they differ when the worker
/// is not the pool's executable image.
pub(super) fn probes() -> Vec<u64> {
    vec![
        offset_of(call_one::<u64, u64> as Trampoline as *const ()),
        offset_of(call_chunk::<u64, String> as Trampoline as *const ()),
        offset_of(call_init::<(), Result<(), String>> as Trampoline as *const ()),
        offset_of(call_init_no_arg::<()> as Trampoline as *const ()),
        offset_of(super::process_worker_main as fn() as *const ()),
    ]
}

/// Proof that this process passed the handshake: it runs the pool's executable image,
/// with the pool's code layout (invariant 1). Only [`check_handshake`] makes one (its
/// field is private to this module), and [`Entry::resolve`] asks for it.
#[derive(Debug)]
pub(super) struct SameImage {
    _checked: (),
}

/// The handshake's checks, in the worker: same protocol, same executable file, same
/// code layout as the pool that sent `hello`. The error says why not.
pub(super) fn check_handshake(hello: &Hello) -> Result<SameImage, String> {
    if hello.version != wire::PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} but the worker speaks {}",
            hello.version,
            wire::PROTOCOL_VERSION
        ));
    }
    let exe = image::identity().map_err(|e| format!("cannot identify the executable: {e}"))?;
    if exe != hello.exe {
        return Err("the worker runs a different executable file than the pool".to_owned());
    }
    if probes() != hello.probes {
        return Err("the worker's code layout differs from the pool's".to_owned());
    }
    Ok(SameImage { _checked: () })
}

/// A call the worker can make: a [`Callee`] resolved into this process's trampoline and
/// task function.
///
/// The fields are private and [`resolve`](Self::resolve), the one constructor, takes a
/// [`SameImage`]: holding an `Entry` means both pointers are in this executable's own
/// code and are the pair the pool derived from one typed `fn` (invariants 1 to 3). That
/// is what makes [`invoke`](Self::invoke) safe to call.
#[derive(Debug)]
pub(super) struct Entry {
    trampoline: Trampoline,
    function: *const (),
}

impl Entry {
    /// Resolves `callee` in this process, which `_image` proves runs the pool's image.
    /// The error is why it cannot be called: an address outside our own code.
    pub(super) fn resolve(callee: Callee, _image: &SameImage) -> Result<Self, String> {
        let trampoline = at_offset(callee.trampoline());
        let function = at_offset(callee.function());
        if !image::in_own_code(trampoline) || !image::in_own_code(function) {
            return Err(format!(
                "the call's addresses are outside the worker's code (offsets {:#x}, {:#x})",
                callee.trampoline(),
                callee.function()
            ));
        }
        // SAFETY: invariants 1 and 3 of the module docs: `_image` proves this process runs
        // the pool's executable image with its code layout, so `anchor + trampoline
        // offset` is the very trampoline the pool took the offset from in `callee()`,
        // and it has the `Trampoline` signature; the address is in our own code (checked
        // just above). A fn pointer and `*const ()` have the same size and
        // representation on every target the crate builds for.
        let trampoline = unsafe { std::mem::transmute::<*const (), Trampoline>(trampoline) };
        Ok(Self {
            trampoline,
            function,
        })
    }

    /// Runs this call: decodes `input`, calls the function and writes the result or a
    /// [`Fault`] to `out` (an initializer writes its failure as text).
    pub(super) fn invoke(self, input: &[u8], out: &mut Vec<u8>) -> Status {
        // SAFETY: the trampoline's contract: `resolve` took both pointers from one
        // `Callee`, which the pool made in `callee()` from a single typed `fn(A) -> R`
        // (or initializer) and the matching trampoline (invariant 3), in the same image
        // as ours (invariant 1, which `resolve` required proof of).
        unsafe { (self.trampoline)(self.function, input, out) }
    }
}

/// Turns a pointer to code into the task function.
///
/// # Safety
///
/// `function` must point to a `fn(A) -> R` in this process.
unsafe fn task_fn<A, R>(function: *const ()) -> fn(A) -> R {
    // SAFETY: the caller's contract; a fn pointer and `*const ()` have the same size.
    unsafe { std::mem::transmute::<*const (), fn(A) -> R>(function) }
}

/// Encodes `value` at the end of `out`; on failure leaves `out` as it was and returns
/// the message.
fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), String> {
    let start = out.len();
    match postcard::serialize_with_flavor(value, Append(out)) {
        Ok(()) => Ok(()),
        Err(e) => {
            out.truncate(start);
            Err(e.to_string())
        }
    }
}

/// Writes an initializer's failure, as text.
fn fail(out: &mut Vec<u8>, status: Status, message: &str) -> Status {
    out.extend_from_slice(message.as_bytes());
    status
}

/// Writes a call's failure.
fn fault(out: &mut Vec<u8>, status: Status, fault: &Fault) -> Status {
    out.extend_from_slice(&fault.encode());
    status
}

/// # Safety
///
/// `function` must point to a `fn(A) -> R` in this process.
unsafe fn call_one<A: DeserializeOwned, R: Serialize>(
    function: *const (),
    input: &[u8],
    out: &mut Vec<u8>,
) -> Status {
    // SAFETY: our own contract.
    let f = unsafe { task_fn::<A, R>(function) };
    let arg: A = match postcard::from_bytes(input) {
        Ok(arg) => arg,
        Err(e) => {
            let message = format!("the worker could not decode the argument: {e}");
            return fault(
                out,
                Status::Failed,
                &Fault::failed(FailKind::ArgumentDecode, message),
            );
        }
    };
    // A panic that an earlier task caught itself must not lend its location to this one.
    panic_site::forget();
    match catch_unwind(AssertUnwindSafe(move || f(arg))) {
        Ok(value) => match encode(&value, out) {
            Ok(()) => Status::Ok,
            Err(e) => {
                let message = format!("the worker could not encode the result: {e}");
                fault(
                    out,
                    Status::Failed,
                    &Fault::failed(FailKind::ResultEncode, message),
                )
            }
        },
        Err(payload) => fault(
            out,
            Status::Panicked,
            &Fault::panicked(&PanicError::new(payload)),
        ),
    }
}

/// # Safety
///
/// `function` must point to a `fn(A) -> R` in this process.
unsafe fn call_chunk<A: DeserializeOwned, R: Serialize>(
    function: *const (),
    input: &[u8],
    out: &mut Vec<u8>,
) -> Status {
    // SAFETY: our own contract.
    let f = unsafe { task_fn::<A, R>(function) };
    let items: Vec<A> = match postcard::from_bytes(input) {
        Ok(items) => items,
        Err(e) => {
            let message = format!("the worker could not decode the chunk: {e}");
            return fault(
                out,
                Status::Failed,
                &Fault::failed(FailKind::ArgumentDecode, message),
            );
        }
    };
    let len = items.len();
    panic_site::forget();
    let output = ChunkOutput::run(items, &f);
    let mut failures: Vec<ItemFailure> = output
        .failures
        .iter()
        .map(|(position, error)| ItemFailure {
            position: *position as u64,
            // `ChunkOutput::run` reports nothing but panics.
            fault: match error {
                FutureError::Panicked(p) => Fault::panicked(p),
                other => Fault::Panicked {
                    message: other.to_string(),
                    location: None,
                },
            },
        })
        .collect();
    let reply = ChunkReplyRef {
        values: &output.values,
        failures: &failures,
        nanos_per_item: output.nanos_per_item,
    };
    if encode(&reply, out).is_ok() {
        return Status::Ok;
    }
    // Some value does not encode: find which, and fail those items only.
    let mut values = Vec::with_capacity(output.values.len());
    let mut scratch = Vec::new();
    let mut panics = std::mem::take(&mut failures).into_iter().peekable();
    let mut ok_values = output.values.into_iter();
    for position in 0..len as u64 {
        if panics.peek().is_some_and(|f| f.position == position) {
            failures.extend(panics.next());
            continue;
        }
        let Some(value) = ok_values.next() else { break };
        scratch.clear();
        match encode(&value, &mut scratch) {
            Ok(()) => values.push(value),
            Err(e) => failures.push(ItemFailure {
                position,
                fault: Fault::failed(
                    FailKind::ResultEncode,
                    format!("the worker could not encode the result: {e}"),
                ),
            }),
        }
    }
    let reply = ChunkReplyRef {
        values: &values,
        failures: &failures,
        nanos_per_item: output.nanos_per_item,
    };
    match encode(&reply, out) {
        Ok(()) => Status::Ok,
        Err(e) => {
            let message = format!("the worker could not encode the chunk: {e}");
            fault(
                out,
                Status::Failed,
                &Fault::failed(FailKind::ResultEncode, message),
            )
        }
    }
}

/// # Safety
///
/// `function` must point to a `fn(A) -> R` in this process.
unsafe fn call_init<A: DeserializeOwned, R: InitResult>(
    function: *const (),
    input: &[u8],
    out: &mut Vec<u8>,
) -> Status {
    // SAFETY: our own contract.
    let f = unsafe { task_fn::<A, R>(function) };
    let arg: A = match postcard::from_bytes(input) {
        Ok(arg) => arg,
        Err(e) => {
            let message = format!("could not decode the initializer's argument: {e}");
            return fail(out, Status::Failed, &message);
        }
    };
    init_outcome(out, move || f(arg).into_result())
}

/// # Safety
///
/// `function` must point to a `fn() -> R` in this process.
unsafe fn call_init_no_arg<R: InitResult>(
    function: *const (),
    _input: &[u8],
    out: &mut Vec<u8>,
) -> Status {
    // SAFETY: our own contract; a fn pointer and `*const ()` have the same size.
    let f = unsafe { std::mem::transmute::<*const (), fn() -> R>(function) };
    init_outcome(out, move || f().into_result())
}

/// Runs an initializer and writes its failure (an `Err` or a panic) as text.
fn init_outcome(out: &mut Vec<u8>, init: impl FnOnce() -> Result<(), String>) -> Status {
    match catch_unwind(AssertUnwindSafe(init)) {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(e)) => fail(out, Status::Failed, &e),
        Err(payload) => fail(
            out,
            Status::Panicked,
            &format!("the initializer panicked: {}", panic_message(&*payload)),
        ),
    }
}
