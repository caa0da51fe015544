//! How a task function crosses to a worker process: as its address relative to an
//! anchor function, together with the relative address of a typed *trampoline* that
//! decodes the argument, calls the function and encodes the result.
//!
//! This is the crate's only `unsafe`: turning an address back into a function pointer
//! cannot be done safely. It is sound because of three invariants, each checked:
//!
//! 1. **Same executable image.** Workers are started from `/proc/self/exe`, which names
//!    the pool's own executable file even if it was replaced on disk since. In the
//!    handshake the worker compares that file's identity (device, inode, size, mtime)
//!    and the anchor-relative offsets of several known functions with the pool's, and
//!    refuses to run anything on a mismatch. Within one image, the distance between two
//!    functions is fixed at link time, so `anchor + offset` is the same function in
//!    both processes, whatever address the loader chose (ASLR).
//! 2. **Own code only.** Before sending, the pool checks that the task function lies in
//!    the executable's own mapped code, not in a shared library (whose distance to the
//!    anchor may differ between processes); the worker checks both addresses again.
//! 3. **Matching types.** The pool only ever sends a trampoline offset taken from
//!    `call_one::<A, R>` (or `call_chunk`, `call_init`) together with the offset of a
//!    function of exactly the type that trampoline casts to (`fn(A) -> R`): the public
//!    API takes `f: fn(A) -> R` and derives both from it, and the frames travel only
//!    over the private pipes between the pool and its own child.
//!
//! Why not a safe registry of named task functions? It would make every task function
//! need a registration line (and a link-time collection crate), where Python users
//! pass any module-level function; the handshake makes the address route safe in
//! practice, and it is contained here.

#![allow(
    unsafe_code,
    reason = "see the module docs: the one place functions cross processes"
)]

use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::image;
use super::wire::{Append, Callee, ChunkReplyRef, FailKind, Fault, ItemFailure, Status};
use crate::error::{FutureError, PanicError, WorkerError, WorkerErrorKind, panic_message};
use crate::map::ChunkOutput;
use crate::panic_site;

/// A trampoline: decodes `input`, calls the function at address `func`, writes the
/// encoded result (or a message) to `out`.
///
/// # Safety
///
/// `func` must be the address of a function of the type the trampoline was
/// instantiated for, in this process.
type Trampoline = unsafe fn(func: usize, input: &[u8], out: &mut Vec<u8>) -> Status;

/// The fixed point that offsets are measured from.
#[inline(never)]
fn anchor() -> u64 {
    0x00c0_ffee
}

fn anchor_addr() -> usize {
    anchor as fn() -> u64 as usize
}

fn offset_of(addr: usize) -> u64 {
    addr.wrapping_sub(anchor_addr()) as u64
}

fn addr_at(offset: u64) -> usize {
    // Offsets are taken from `usize` addresses, so they fit in `usize` again.
    anchor_addr().wrapping_add(offset as usize)
}

/// Checks that `func` can be called in a worker, and names it with `trampoline`.
fn callee(trampoline: Trampoline, func: usize) -> Result<Callee, FutureError> {
    if !image::in_own_code(func) {
        return Err(FutureError::WorkerFailed(WorkerError::new(
            WorkerErrorKind::NotInExecutable,
            "the task function is not in the executable's own code (is it in a shared \
             library?), so it cannot be called in a worker process",
        )));
    }
    Ok(Callee::new(offset_of(trampoline as usize), offset_of(func)))
}

/// `f` called on one argument, its result sent back.
pub(super) fn one<A, R>(f: fn(A) -> R) -> Result<Callee, FutureError>
where
    A: DeserializeOwned,
    R: Serialize,
{
    callee(call_one::<A, R>, f as usize)
}

/// `f` called on each argument of a chunk (a `map` task).
pub(super) fn chunk<A, R>(f: fn(A) -> R) -> Result<Callee, FutureError>
where
    A: DeserializeOwned,
    R: Serialize,
{
    callee(call_chunk::<A, R>, f as usize)
}

/// A worker initializer.
pub(super) fn init<A, E>(f: fn(A) -> Result<(), E>) -> Result<Callee, FutureError>
where
    A: DeserializeOwned,
    E: Display,
{
    callee(call_init::<A, E>, f as usize)
}

/// A call as the worker runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    trampoline: u64,
    func: u64,
}

impl Entry {
    pub(super) fn new(callee: Callee) -> Self {
        Self {
            trampoline: callee.trampoline(),
            func: callee.function(),
        }
    }

    /// Runs this call in the worker process: resolves both addresses and calls the
    /// trampoline. Writes the result or a [`Fault`] to `out`.
    pub(super) fn invoke(self, input: &[u8], out: &mut Vec<u8>) -> Status {
        let trampoline = addr_at(self.trampoline);
        let func = addr_at(self.func);
        if !image::in_own_code(trampoline) || !image::in_own_code(func) {
            // Written as a `Fault` even for an initializer (whose failures are text): the
            // handshake has just compared the code layout, so this cannot happen to one.
            let message = format!(
                "the call's addresses are outside the worker's code (offsets {:#x}, {:#x})",
                self.trampoline, self.func
            );
            return fault(
                out,
                Status::Failed,
                &Fault::failed(FailKind::NotInExecutable, message),
            );
        }
        // SAFETY: invariants 1 and 3 of the module docs: this process runs the pool's
        // executable image (checked in the handshake before any call is read), so
        // `anchor + trampoline offset` is the address of the very trampoline the pool
        // took the offset from, and it has the `Trampoline` signature; a fn pointer is
        // address-sized. The address is in our own code (checked just above).
        let trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(trampoline) };
        // SAFETY: `func` is, by the same invariants, the address in this process of the
        // function of type `fn(A) -> R` (or the initializer type) that the pool paired
        // with this trampoline, which is the trampoline's contract.
        unsafe { trampoline(func, input, out) }
    }
}

/// Offsets of known functions, compared in the handshake: they differ when the worker
/// is not the pool's executable image.
pub(super) fn probes() -> Vec<u64> {
    vec![
        offset_of(call_one::<u64, u64> as Trampoline as usize),
        offset_of(call_chunk::<u64, String> as Trampoline as usize),
        offset_of(call_init::<(), String> as Trampoline as usize),
        offset_of(super::process_worker_main as fn() as usize),
    ]
}

/// Turns an address into the task function.
///
/// # Safety
///
/// `func` must be the address of a `fn(A) -> R` in this process.
unsafe fn task_fn<A, R>(func: usize) -> fn(A) -> R {
    // SAFETY: the caller's contract; a fn pointer is address-sized.
    unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) }
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
/// `func` must be the address of a `fn(A) -> R` in this process.
unsafe fn call_one<A: DeserializeOwned, R: Serialize>(
    func: usize,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Status {
    // SAFETY: our own contract.
    let f = unsafe { task_fn::<A, R>(func) };
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
/// `func` must be the address of a `fn(A) -> R` in this process.
unsafe fn call_chunk<A: DeserializeOwned, R: Serialize>(
    func: usize,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Status {
    // SAFETY: our own contract.
    let f = unsafe { task_fn::<A, R>(func) };
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
/// `func` must be the address of a `fn(A) -> Result<(), E>` in this process.
unsafe fn call_init<A: DeserializeOwned, E: Display>(
    func: usize,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Status {
    // SAFETY: our own contract.
    let f = unsafe { task_fn::<A, Result<(), E>>(func) };
    let arg: A = match postcard::from_bytes(input) {
        Ok(arg) => arg,
        Err(e) => {
            let message = format!("could not decode the initializer's argument: {e}");
            return fail(out, Status::Failed, &message);
        }
    };
    match catch_unwind(AssertUnwindSafe(move || f(arg))) {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(e)) => fail(out, Status::Failed, &e.to_string()),
        Err(payload) => fail(
            out,
            Status::Panicked,
            &format!("the initializer panicked: {}", panic_message(&*payload)),
        ),
    }
}
