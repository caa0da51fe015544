//! Issue 12, point 7 (threads): a task's panic error says where the task panicked.
//!
//! Its own binary: the location comes from a process-wide panic hook, and one test here
//! checks that the hook a program set before building a pool still runs.

use std::panic;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use concurrent_futures::{FutureError, MapItemError, PanicError, ThreadPoolExecutor};

/// Panics with this message are counted by the program's own hook.
const PROBE: &str = "probe for the program's hook";
static PROBES_SEEN: AtomicUsize = AtomicUsize::new(0);

/// Sets a hook of the program's own before any pool is built (every test calls this
/// first), as an application would in `main`.
fn program_hook() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        let std_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if info.payload_as_str() == Some(PROBE) {
                PROBES_SEEN.fetch_add(1, Ordering::SeqCst);
            }
            std_hook(info);
        }));
    });
}

fn panic_of(outcome: Result<u32, FutureError>) -> PanicError {
    match outcome {
        Err(FutureError::Panicked(p)) => p,
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[test]
fn a_thread_task_panic_carries_its_file_and_line() {
    program_hook();
    let pool = ThreadPoolExecutor::new();
    let (line, handle) = (line!(), pool.submit(|| -> u32 { panic!("boom") }).unwrap());
    let p = panic_of(handle.result());
    assert_eq!(p.message(), "boom", "message() stays the bare message");
    assert_eq!(p.to_string(), "boom", "Display too");
    let at = p.location().expect("a thread task's panic has a location");
    assert!(at.file().ends_with("panic_location.rs"), "{at}");
    assert_eq!(at.line(), line);
    assert!(at.column() > 1, "{at}");
    assert_eq!(
        at.to_string(),
        format!("{}:{}:{}", at.file(), line, at.column())
    );
    assert!(format!("{p:?}").contains(&format!("line: {line}")), "{p:?}");
}

#[test]
fn a_formatted_panic_message_still_finds_its_location() {
    program_hook();
    let pool = ThreadPoolExecutor::new();
    let n = 3;
    let task = move || -> u32 { panic!("bad {n}") };
    let line = line!() - 1;
    let handle = pool.submit(task).unwrap();
    let p = panic_of(handle.result());
    assert_eq!(p.message(), "bad 3");
    assert_eq!(p.location().map(|at| at.line()), Some(line));
}

#[test]
fn future_error_display_names_the_location_and_exception_keeps_it() {
    program_hook();
    let pool = ThreadPoolExecutor::new();
    let (line, handle) = (line!(), pool.submit(|| -> u32 { panic!("boom") }).unwrap());
    handle.wait();
    let copy = handle.exception().expect("the task failed");
    let FutureError::Panicked(p) = &copy else {
        panic!("expected a panic, got {copy:?}");
    };
    let at = p.location().expect("exception() keeps the location");
    assert_eq!(at.line(), line);
    assert_eq!(copy.to_string(), format!("the task panicked at {at}: boom"));
}

#[test]
fn a_map_item_panic_carries_its_file_and_line() {
    program_hook();
    let pool = ThreadPoolExecutor::new();
    let line = line!() + 3;
    let square = |n: u32| {
        if n == 2 {
            panic!("bad item {n}");
        }
        n * n
    };
    let items: Vec<_> = pool.map(square, 0..4).unwrap().collect();
    assert_eq!(items.len(), 4);
    let Err(MapItemError::Failed(FutureError::Panicked(p))) = &items[2] else {
        panic!("expected item 2 to have panicked, got {:?}", items[2]);
    };
    assert_eq!(p.message(), "bad item 2");
    let at = p.location().expect("a map item's panic has a location");
    assert!(at.file().ends_with("panic_location.rs"), "{at}");
    assert_eq!(at.line(), line);
    assert!(items.iter().enumerate().all(|(i, r)| (i == 2) != r.is_ok()));
}

#[test]
fn a_resumed_payload_does_not_take_an_earlier_panics_location() {
    program_hook();
    // One worker, so both tasks run on the same thread.
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .build()
        .unwrap();
    // The first task panics and catches its own panic: the hook saw it on this worker.
    let caught = pool
        .submit(|| panic::catch_unwind(|| panic!("boom")).is_err())
        .unwrap();
    assert!(caught.result().unwrap());
    // `resume_unwind` runs no hook; even with the same message, the earlier location
    // is not this panic's.
    let resumed = pool
        .submit(|| -> u32 { panic::resume_unwind(Box::new("boom")) })
        .unwrap();
    let p = panic_of(resumed.result());
    assert_eq!(p.message(), "boom");
    assert_eq!(p.location(), None);
    // Within one task, a message that differs from the recorded one is refused too.
    let within = pool
        .submit(|| -> u32 {
            let _ = panic::catch_unwind(|| panic!("first"));
            panic::resume_unwind(Box::new("second"))
        })
        .unwrap();
    let p = panic_of(within.result());
    assert_eq!(p.message(), "second");
    assert_eq!(p.location(), None);
}

#[test]
fn the_programs_own_panic_hook_still_runs() {
    program_hook();
    let pool = ThreadPoolExecutor::new();
    let before = PROBES_SEEN.load(Ordering::SeqCst);
    let handle = pool.submit(|| -> u32 { panic!("{}", PROBE) }).unwrap();
    let p = panic_of(handle.result());
    assert!(p.location().is_some());
    assert_eq!(PROBES_SEEN.load(Ordering::SeqCst), before + 1);
}
