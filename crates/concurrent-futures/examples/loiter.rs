//! After Fluent Python's `demo_executor_map.py`: three workers run `loiter(n)`, which
//! sleeps `n` seconds and returns `n * 10`; the timestamped lines show the tasks
//! interleaving while `map` hands the results back in input order.
//!
//! Run with `cargo run -p concurrent-futures --example loiter`.

use std::time::{Duration, Instant};

use concurrent_futures::ThreadPoolExecutor;

fn main() -> anyhow::Result<()> {
    let start = Instant::now();
    let display = move |text: String| {
        println!("[{:>5.2}s] {text}", start.elapsed().as_secs_f64());
    };
    let loiter = move |n: u64| {
        let indent = "\t".repeat(n as usize);
        display(format!("{indent}loiter({n}): doing nothing for {n}s..."));
        std::thread::sleep(Duration::from_secs(n));
        display(format!("{indent}loiter({n}): done."));
        n * 10
    };

    display("Script starting.".to_owned());
    let executor = ThreadPoolExecutor::builder().max_workers(3).build()?;
    let results = executor.map(loiter, 0..5)?;
    display(format!("results: {results:?}"));
    display("Waiting for individual results:".to_owned());
    for (i, result) in results.enumerate() {
        display(format!("result {i}: {}", result?));
    }
    Ok(())
}
