//! Issue 12, point 6: every public error is `Send + Sync + 'static`, so that `?` lifts it
//! into `anyhow::Error` and into `Box<dyn Error + Send + Sync>`, the two usual error
//! styles of applications. Most of this file guards at compile time: on a regression it
//! stops building, naming the error type that lost `Sync`.

use std::cell::Cell;
use std::error::Error;
use std::time::Duration;

use concurrent_futures::{
    AsCompletedTimeout, BrokenPoolError, BuildError, FutureError, FutureHandle, MapError,
    MapItemError, MapOptions, PanicError, ResultTimeoutError, SubmitError, ThreadPoolExecutor,
    TryResultError, WorkerError, as_completed,
};

type BoxedResult = Result<(), Box<dyn Error + Send + Sync>>;

fn assert_send_sync<T: Send + Sync + 'static>() {}

/// For types that cannot be named (a closure's).
fn assert_value_send_sync<T: Send + Sync + 'static>(_: &T) {}

/// `Send` but not `Sync`: a value like those closures often capture.
fn not_sync() -> Cell<u32> {
    Cell::new(7)
}

#[test]
fn every_public_error_type_is_send_sync_static() {
    assert_send_sync::<FutureError>();
    assert_send_sync::<PanicError>();
    assert_send_sync::<MapItemError>();
    assert_send_sync::<MapError>();
    assert_send_sync::<BuildError>();
    assert_send_sync::<AsCompletedTimeout>();
    assert_send_sync::<WorkerError>();
    assert_send_sync::<BrokenPoolError>();
    // The handle these give back is `Sync` for any `Send` value, `Sync` or not.
    assert_send_sync::<FutureHandle<Cell<u32>>>();
    assert_send_sync::<ResultTimeoutError<Cell<u32>>>();
    assert_send_sync::<TryResultError<Cell<u32>>>();
    // A refused task is given back inside the error; a task that is `Send` but not
    // `Sync` must not make the error `!Sync`.
    assert_send_sync::<SubmitError<Cell<u32>>>();
    assert_send_sync::<SubmitError<Box<dyn FnOnce() -> u32 + Send>>>();
    let pool = ThreadPoolExecutor::new();
    pool.shutdown(true, false);
    let counter = not_sync();
    let refused = pool
        .submit(move || counter.get())
        .expect_err("the pool is shut down");
    assert_value_send_sync(&refused);
}

/// Issue 12, point 7: the process errors are plain data, which `MapError` (and a
/// program's own error types) can derive `Clone` and `Eq` over.
#[test]
fn process_errors_are_plain_data() {
    fn assert_data<T: Clone + std::fmt::Debug + PartialEq + Eq + Error + Send + Sync + 'static>() {}
    assert_data::<WorkerError>();
    assert_data::<BrokenPoolError>();
    assert_data::<MapError>();
}

/// The same scenarios, once per error style: each `?` must compile and carry the
/// library's error through unchanged (checked by downcasting in the tests below).
macro_rules! scenarios {
    ($style:ident, $result:ty) => {
        mod $style {
            use super::*;

            pub(super) fn build_zero_workers() -> $result {
                ThreadPoolExecutor::builder().max_workers(0).build()?;
                Ok(())
            }

            pub(super) fn result_of_a_panic() -> $result {
                let pool = ThreadPoolExecutor::new();
                pool.submit(|| -> u32 { panic!("boom") })?.result()?;
                Ok(())
            }

            pub(super) fn result_timeout_of_a_blocked_task() -> $result {
                let pool = ThreadPoolExecutor::new();
                let (release, wait) = std::sync::mpsc::channel::<()>();
                let handle = pool.submit(move || {
                    let _ = wait.recv();
                    not_sync()
                })?;
                let outcome = handle.result_timeout(Duration::from_millis(1));
                drop(release);
                outcome?;
                Ok(())
            }

            pub(super) fn try_result_of_a_blocked_task() -> $result {
                let pool = ThreadPoolExecutor::new();
                let (release, wait) = std::sync::mpsc::channel::<()>();
                let handle = pool.submit(move || {
                    let _ = wait.recv();
                    not_sync()
                })?;
                let outcome = handle.try_result();
                drop(release);
                outcome?;
                Ok(())
            }

            pub(super) fn submit_a_non_sync_closure_after_shutdown() -> $result {
                let pool = ThreadPoolExecutor::new();
                pool.shutdown(true, false);
                let counter = not_sync();
                pool.submit(move || counter.get())?;
                Ok(())
            }

            pub(super) fn map_with_a_zero_window() -> $result {
                let pool = ThreadPoolExecutor::new();
                pool.map_with(|n: u32| n, 0..3, MapOptions::new().window(0))?;
                Ok(())
            }

            pub(super) fn map_item_that_panics() -> $result {
                let pool = ThreadPoolExecutor::new();
                for item in pool.map(|n: u32| if n == 1 { panic!("bad item") } else { n }, 0..3)? {
                    item?;
                }
                Ok(())
            }

            pub(super) fn as_completed_past_its_timeout() -> $result {
                let pool = ThreadPoolExecutor::new();
                let (release, wait) = std::sync::mpsc::channel::<()>();
                let handle = pool.submit(move || wait.recv().is_ok())?;
                let outcome: Result<Vec<_>, _> =
                    as_completed([&handle], Some(Duration::from_millis(1))).collect();
                drop(release);
                outcome?;
                Ok(())
            }
        }
    };
}

scenarios!(anyhow_style, anyhow::Result<()>);
scenarios!(boxed_style, BoxedResult);

/// Runs one scenario in both styles and checks that each failed with an `E`.
macro_rules! fails_with {
    ($scenario:ident, $error:ty) => {{
        let a = anyhow_style::$scenario().expect_err("the scenario fails");
        assert!(a.downcast_ref::<$error>().is_some(), "anyhow: {a:?}");
        let b = boxed_style::$scenario().expect_err("the scenario fails");
        assert!(b.downcast_ref::<$error>().is_some(), "boxed: {b:?}");
        (a, b)
    }};
}

#[test]
fn build_error_passes_through_question_mark() {
    fails_with!(build_zero_workers, BuildError);
}

#[test]
fn future_error_of_a_panic_passes_through_question_mark() {
    let (a, _) = fails_with!(result_of_a_panic, FutureError);
    assert!(
        a.downcast_ref::<FutureError>()
            .is_some_and(FutureError::is_panic)
    );
}

#[test]
fn result_timeout_error_passes_through_question_mark() {
    let (a, _) = fails_with!(
        result_timeout_of_a_blocked_task,
        ResultTimeoutError<Cell<u32>>
    );
    let timeout = a.downcast::<ResultTimeoutError<Cell<u32>>>().unwrap();
    assert!(timeout.is_timeout());
    // The handle inside is still usable after travelling through anyhow.
    let handle = timeout
        .into_handle()
        .expect("a timeout gives the handle back");
    assert_eq!(handle.result().unwrap().get(), 7);
}

#[test]
fn try_result_error_passes_through_question_mark() {
    fails_with!(try_result_of_a_blocked_task, TryResultError<Cell<u32>>);
}

#[test]
fn submit_error_with_a_non_sync_closure_passes_through_question_mark() {
    let a = anyhow_style::submit_a_non_sync_closure_after_shutdown().unwrap_err();
    assert_eq!(a.to_string(), "cannot schedule new futures after shutdown");
    let b = boxed_style::submit_a_non_sync_closure_after_shutdown().unwrap_err();
    assert_eq!(b.to_string(), "cannot schedule new futures after shutdown");
}

#[test]
fn map_error_passes_through_question_mark() {
    fails_with!(map_with_a_zero_window, MapError);
}

#[test]
fn map_item_error_passes_through_question_mark() {
    fails_with!(map_item_that_panics, MapItemError);
}

#[test]
fn as_completed_timeout_passes_through_question_mark() {
    fails_with!(as_completed_past_its_timeout, AsCompletedTimeout);
}

/// Every task's future record holds a `Result<T, FutureError>`: the error stays two words
/// (its payloads are boxed), so richer errors cost the tiny-task benchmarks nothing.
#[test]
fn future_error_stays_two_words() {
    assert!(std::mem::size_of::<concurrent_futures::FutureError>() <= 16);
    assert!(std::mem::size_of::<Result<u64, concurrent_futures::FutureError>>() <= 16);
}
