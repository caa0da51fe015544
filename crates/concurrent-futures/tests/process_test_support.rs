//! The process pool in ordinary `#[test]` functions (issue 13, point 9): this file is a
//! normal libtest binary, run in parallel by the harness, with no `main` of its own.

use std::collections::HashSet;

use concurrent_futures::{FutureError, ProcessPoolExecutor, StartMethod, as_completed};

concurrent_futures::process_test_support!();

fn square(x: u64) -> u64 {
    x * x
}

fn pid(_: ()) -> u32 {
    std::process::id()
}

fn fails(x: u32) -> u32 {
    assert!(x > 100, "too small: {x}");
    x
}

#[test]
fn issue_13_a_test_function_can_use_the_default_pool() {
    let pool = ProcessPoolExecutor::new();
    assert_eq!(pool.submit(square, 12).unwrap().result().unwrap(), 144);
    let squares: Vec<u64> = pool.map(square, 1..=5).unwrap().try_collect_vec().unwrap();
    assert_eq!(squares, [1, 4, 9, 16, 25]);
}

#[test]
fn issue_13_workers_run_tasks_not_the_other_tests() {
    // If a worker ran this binary's tests, it would build pools of its own and the
    // task below would never be reached; each pid is a worker, not this process.
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let handles: Vec<_> = (0..6).map(|_| pool.submit(pid, ()).unwrap()).collect();
    let pids: HashSet<u32> = as_completed(handles, None)
        .map(|h| h.unwrap().result().unwrap())
        .collect();
    assert!(!pids.contains(&std::process::id()));
    assert!(!pids.is_empty() && pids.len() <= 2);
}

#[test]
fn issue_13_the_spawn_start_method_works_in_tests_too() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    assert_eq!(pool.submit(square, 3).unwrap().result().unwrap(), 9);
}

#[test]
fn issue_13_a_panicking_task_is_its_handles_error_in_tests() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    match pool.submit(fails, 1).unwrap().result() {
        Err(FutureError::Panicked(p)) => assert!(p.message().contains("too small: 1")),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.submit(fails, 101).unwrap().result().unwrap(), 101);
}
