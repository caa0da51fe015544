//! A `#[test]` that builds a process pool in a binary without `process_test_support!()`
//! gets a clear error naming the macro, never a hang (issue 13, point 9).

use concurrent_futures::{FutureError, ProcessPoolExecutor};

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn issue_13_without_the_macro_a_task_fails_with_a_hint_not_a_hang() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    let outcome = pool.submit(square, 3).map(|h| h.result());
    let message = match outcome {
        Ok(Err(FutureError::BrokenPool(e))) => e.to_string(),
        Ok(Err(FutureError::WorkerFailed(e))) => e.to_string(),
        Err(refused) => refused.to_string(),
        other => panic!("unexpected {other:?}"),
    };
    assert!(message.contains("process_test_support!"), "{message}");
}
