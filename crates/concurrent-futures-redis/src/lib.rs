//! The futures of [`concurrent_futures`] across many hosts: a [`ClusterExecutor`] sends
//! tasks to [`Worker`]s through a Redis broker (Redis Streams: a consumer group per
//! queue, leases kept by heartbeats, commits fenced by a server-side script) and hands
//! back the same [`FutureHandle`](concurrent_futures::FutureHandle)s as the thread and
//! process pools, so [`as_completed`](concurrent_futures::as_completed()) and
//! [`wait`](concurrent_futures::wait()) mix them.
//!
//! # Tasks
//!
//! A task is a plain function with a serde argument and result, known by a stable name:
//! a [`Task`] constant, registered by the workers and submitted by clients. Workers
//! look names up in their own registry and check a fingerprint of the argument and
//! result types before they decode anything, so nothing written into the broker can
//! make a worker run anything but a registered function.
//!
//! ```no_run
//! use concurrent_futures_redis::{ClusterExecutor, Task, Worker};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//! pub const SQUARE: Task<u64, u64> = Task::new("square", square);
//!
//! fn main() -> anyhow::Result<()> {
//!     concurrent_futures::process_worker_main(); // workers' children stop here
//!     if std::env::args().nth(1).as_deref() == Some("worker") {
//!         // On each worker host:
//!         Worker::builder().broker("redis://10.0.0.5/0").register(SQUARE).build()?.run()?;
//!         return Ok(());
//!     }
//!     // On the client:
//!     let cluster = ClusterExecutor::builder().broker("redis://10.0.0.5/0").build()?;
//!     assert_eq!(cluster.submit(SQUARE, 12)?.result()?, 144);
//!     Ok(())
//! }
//! ```
//!
//! # Failures
//!
//! | what happens | what the future gets |
//! |---|---|
//! | the task returns `Err(e)` | the value `Err(e)` (never retried) |
//! | the task panics | [`FutureError::Panicked`](concurrent_futures::FutureError::Panicked) with the message and location (never retried) |
//! | the child process running it dies | nothing yet: the task is delivered again at once; after `max_deliveries` deaths, [`TaskError::DeliveriesExhausted`] listing each [`Attempt`] |
//! | the whole worker vanishes | another worker claims the task after its lease; counted as a delivery |
//! | no worker knows the task, or knows it with other types | [`TaskError::UnknownTask`], [`TaskError::SignatureMismatch`]: never run |
//! | a worker cannot read the task message (another version of this crate) | [`TaskError::Undecodable`]: never run, dead-lettered |
//! | `cancel()` | cancelled at once; removed from the stream, or its child killed |
//! | the broker restarts (with persistence) | nothing: clients and workers reconnect |
//! | the broker comes back empty | resubmitted, or [`TaskError::BrokerDataLost`] ([`OnDataLoss`]) |
//!
//! Read a cluster failure with [`TaskError::of`].

#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod broker;
mod client;
mod error;
mod scripts;
mod sink;
mod task;
mod wire;
mod worker;

pub use crate::client::{
    ClusterExecutor, ClusterExecutorBuilder, ClusterMap, ClusterStats, OnDataLoss,
};
pub use crate::error::{Attempt, BuildError, RunError, SubmitError, TaskError};
pub use crate::task::Task;
pub use crate::worker::{StopHandle, Worker, WorkerBuilder};

/// A random 16-bit tag for a consumer name.
pub(crate) fn client_tag() -> u16 {
    // Truncation is the point: a short tag.
    (client::random_id() >> 48) as u16
}
