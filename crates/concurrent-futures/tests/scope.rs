//! Scoped tasks that borrow from the caller's stack (issue 13, point 4).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use concurrent_futures::{FutureError, ReturnWhen, ThreadPoolExecutor, as_completed, wait};

const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn issue_13_scoped_tasks_borrow_and_are_joined_before_scope_returns() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(4)
        .build()
        .unwrap();
    let words: Vec<String> = ["alpha", "beta", "gamma"].map(String::from).to_vec();
    let mut lengths = vec![0; words.len()];
    let finished = AtomicUsize::new(0);
    let total = pool.scope(|s| {
        let handles: Vec<_> = words
            .iter()
            .map(|w| {
                s.submit(|| {
                    std::thread::sleep(Duration::from_millis(5));
                    finished.fetch_add(1, Ordering::SeqCst);
                    w.len()
                })
                .unwrap()
            })
            .collect();
        let done = wait(&handles, Some(PATIENCE), ReturnWhen::AllCompleted);
        assert_eq!(done.done.len(), 3);
        for (slot, h) in lengths.iter_mut().zip(handles) {
            *slot = h.result().unwrap();
        }
        // Tasks whose handles are dropped or leaked are joined all the same.
        for _ in 0..5 {
            let leaked = s
                .submit(|| {
                    std::thread::sleep(Duration::from_millis(2));
                    finished.fetch_add(1, Ordering::SeqCst)
                })
                .unwrap();
            std::mem::forget(leaked);
        }
        lengths.iter().sum::<usize>()
    });
    assert_eq!(total, 14);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        8,
        "every task ended before scope returned"
    );
}

#[test]
fn issue_13_as_completed_works_inside_a_scope_and_tasks_may_write_through_borrows() {
    let pool = ThreadPoolExecutor::new();
    let mut cells = [0u64; 8];
    pool.scope(|s| {
        let handles: Vec<_> = cells
            .iter_mut()
            .enumerate()
            .map(|(i, cell)| {
                s.submit(move || {
                    *cell = (i as u64) * 10;
                    i
                })
                .unwrap()
            })
            .collect();
        let mut seen: Vec<usize> = as_completed(handles, Some(PATIENCE))
            .map(|h| h.unwrap().result().unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..8).collect::<Vec<_>>());
    });
    assert_eq!(cells, [0, 10, 20, 30, 40, 50, 60, 70]);
}

#[test]
fn issue_13_a_panic_in_the_scope_body_waits_for_the_tasks_then_resumes() {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .build()
        .unwrap();
    let ended = AtomicUsize::new(0);
    let (tx, rx) = mpsc::sync_channel::<()>(0);
    let rx = std::sync::Mutex::new(rx);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.scope(|s| {
            s.submit(|| {
                rx.lock()
                    .unwrap()
                    .recv_timeout(Duration::from_millis(20))
                    .ok();
                ended.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            panic!("the scope body fails");
        })
    }));
    assert!(caught.is_err());
    assert_eq!(
        ended.load(Ordering::SeqCst),
        1,
        "joined before the panic went on"
    );
    drop(tx);
}

#[test]
fn issue_13_a_panicking_scoped_task_fails_only_its_handle() {
    let pool = ThreadPoolExecutor::new();
    let local = String::from("kept");
    pool.scope(|s| {
        let bad = s.submit(|| -> usize { panic!("scoped boom") }).unwrap();
        let good = s.submit(|| local.len()).unwrap();
        assert!(matches!(bad.result(), Err(FutureError::Panicked(_))));
        assert_eq!(good.result().unwrap(), 4);
    });
}

#[test]
fn issue_13_a_scope_on_a_shut_down_pool_gives_the_task_back() {
    let pool = ThreadPoolExecutor::new();
    pool.shutdown(true, false);
    let local = 5;
    pool.scope(|s| {
        let refused = s.submit(|| local + 1);
        assert!(refused.is_err());
    });
}
