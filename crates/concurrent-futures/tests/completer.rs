//! Futures you complete yourself: `FutureHandle::pending()` and its `Completer`
//! (Python's `Future()` with `set_result`, `set_exception`,
//! `set_running_or_notify_cancel` and `InvalidStateError`).

use std::cell::Cell;
use std::time::Duration;

use concurrent_futures::{
    Completer, FutureError, FutureHandle, InvalidStateError, ReturnWhen, as_completed, wait,
};

#[test]
fn a_result_set_on_another_thread_reaches_the_handle() {
    let (completer, handle) = FutureHandle::pending();
    assert!(!handle.is_done());
    let setter = std::thread::spawn(move || completer.set_result(42u32));
    assert_eq!(handle.result().unwrap(), 42);
    setter.join().unwrap().unwrap();
}

#[test]
fn a_second_outcome_is_refused_and_the_first_kept() {
    let (completer, handle) = FutureHandle::pending();
    completer.set_result(String::from("first")).unwrap();
    let refused = completer.set_result(String::from("second")).unwrap_err();
    assert!(!refused.is_cancelled());
    assert_eq!(refused.to_string(), "the future has finished already");
    assert_eq!(refused.into_inner(), "second");
    let failure = completer.set_failure(FutureError::Cancelled).unwrap_err();
    assert!(matches!(failure.into_inner(), FutureError::Cancelled));
    assert!(completer.is_done());
    assert_eq!(handle.result().unwrap(), "first");
}

#[test]
fn a_cancellation_is_visible_to_the_completer() {
    let (completer, handle) = FutureHandle::<u32>::pending();
    assert!(handle.cancel());
    assert!(completer.is_cancelled());
    assert!(!completer.set_running(), "cancelled: do not start");
    let refused = completer.set_result(1).unwrap_err();
    assert!(refused.is_cancelled());
    assert_eq!(refused.to_string(), "the future was cancelled already");
    assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
}

#[test]
fn a_running_future_cannot_be_cancelled() {
    let (completer, handle) = FutureHandle::pending();
    assert!(completer.set_running());
    assert!(handle.is_running());
    assert!(!handle.cancel());
    completer.set_result(7u8).unwrap();
    assert_eq!(handle.result().unwrap(), 7);
}

#[test]
fn a_failure_reaches_the_handle() {
    let (completer, handle) = FutureHandle::<u32>::pending();
    completer.set_failure(FutureError::ResultTaken).unwrap();
    assert!(matches!(handle.result(), Err(FutureError::ResultTaken)));
}

#[test]
fn dropping_the_completer_fails_the_future() {
    let (completer, handle) = FutureHandle::<u32>::pending();
    drop(completer);
    match handle.result() {
        Err(FutureError::BrokenPool(why)) => assert!(why.is_task_dropped(), "{why}"),
        other => panic!("expected BrokenPool, got {other:?}"),
    }
}

#[test]
fn handles_of_completers_work_with_wait_and_as_completed() {
    let (completers, handles): (Vec<Completer<usize>>, Vec<FutureHandle<usize>>) =
        (0..3).map(|_| FutureHandle::pending()).unzip();
    let sets = wait(&handles, Some(Duration::ZERO), ReturnWhen::AllCompleted);
    assert_eq!(sets.not_done.len(), 3);
    for (i, completer) in completers.iter().enumerate().rev() {
        completer.set_result(i).unwrap();
    }
    let mut got: Vec<usize> = as_completed(handles, Some(Duration::from_secs(10)))
        .map(|h| h.unwrap().result().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
}

#[test]
fn a_handle_of_a_completer_can_be_awaited() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (completer, handle) = FutureHandle::pending();
    let setter = std::thread::spawn(move || completer.set_result("done"));
    assert_eq!(runtime.block_on(handle).unwrap(), "done");
    setter.join().unwrap().unwrap();
}

#[test]
fn completer_and_its_error_are_send_sync_and_work_with_question_mark() -> anyhow::Result<()> {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Completer<u32>>();
    // A value that is not `Sync` still gives a `Sync` error.
    assert_send_sync::<InvalidStateError<Cell<u32>>>();
    let (completer, _handle) = FutureHandle::pending();
    completer.set_result(Cell::new(1))?;
    let second = completer.set_result(Cell::new(2));
    assert!(second.is_err());
    let boxed: Result<(), Box<dyn std::error::Error + Send + Sync>> = second.map_err(Into::into);
    assert!(boxed.is_err());
    Ok(())
}
