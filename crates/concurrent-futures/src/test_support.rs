//! [`process_test_support!`](crate::process_test_support): the process pool in ordinary `#[test]` functions.
//!
//! A worker is this executable started again. In a test binary that means libtest's
//! `main`, which would run every test again in each worker (or, with output captured,
//! hang the pool). So workers are started with arguments that make libtest run one test
//! only: the one this macro defines, which hands the process over to
//! [`process_worker_main`](crate::process_worker_main) and never returns there. A
//! program whose `main` calls `process_worker_main` first never looks at them.

/// The test the macro defines: the filter workers are started with.
pub(crate) const WORKER_TEST: &str = "__concurrent_futures_process_worker";

/// What a worker is started with, after `argv[0]`: libtest runs only [`WORKER_TEST`],
/// on one thread, without capturing the tasks' output.
pub(crate) const WORKER_ARGS: [&str; 4] = [WORKER_TEST, "--nocapture", "--test-threads=1", "-q"];

/// Lets `#[test]` functions of this test binary (or of a crate's unit tests) use
/// [`ProcessPoolExecutor`](crate::ProcessPoolExecutor): invoke it once, at the top level
/// of the test file or module. It defines a test named `__concurrent_futures_process_worker`
/// that the pool's workers run instead of the other tests; in a normal test run it
/// passes at once. procspawn's `enable_test_support!()` is the model.
///
/// Without it, a pool built in a `#[test]` fails each task with a
/// [`BrokenPool`](crate::FutureError::BrokenPool) whose message names this macro. A
/// `harness = false` test binary whose `main` calls
/// [`process_worker_main`](crate::process_worker_main) first needs no macro.
///
/// # Examples
///
/// ```
/// # #![allow(dead_code)] // a doctest compiles the #[test] functions out
/// // tests/pool.rs
/// concurrent_futures::process_test_support!();
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[test]
/// fn squares_in_worker_processes() {
///     let pool = concurrent_futures::ProcessPoolExecutor::new();
///     assert_eq!(pool.submit(square, 7).unwrap().result().unwrap(), 49);
/// }
/// # fn main() {}
/// ```
// The example shows a test file; the crate's own `tests/process_test_support.rs` runs it.
#[allow(clippy::test_attr_in_doctest)]
#[macro_export]
macro_rules! process_test_support {
    () => {
        #[test]
        fn __concurrent_futures_process_worker() {
            $crate::process_worker_main();
        }
    };
}
