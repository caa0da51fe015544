//! Checks the 20 numbers of the book's `primes.py` for primality in worker processes,
//! largest first, after `proc_pool.py`:
//!
//! ```text
//! cargo run --release -p concurrent-futures --example primes [WORKERS]
//! ```
//!
//! Each line shows a number, `P` when it is prime, and how long its check took inside
//! the worker; results print in input order as they arrive (Python's `executor.map`).

use std::process::ExitCode;
use std::time::Instant;

use concurrent_futures::{MapOptions, ProcessPoolExecutor};

#[path = "common/primes.rs"]
mod primes;

use primes::{NUMBERS, is_prime};

/// The task: the number, whether it is prime, and the seconds the check took.
fn check(n: u64) -> (u64, bool, f64) {
    let start = Instant::now();
    let prime = is_prime(n);
    (n, prime, start.elapsed().as_secs_f64())
}

fn main() -> ExitCode {
    concurrent_futures::process_worker_main();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("primes: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut builder = ProcessPoolExecutor::builder();
    if let Some(arg) = std::env::args().nth(1) {
        let workers: usize = arg
            .parse()
            .map_err(|e| anyhow::anyhow!("WORKERS must be a positive number, not {arg:?}: {e}"))?;
        builder = builder.max_workers(workers);
    }
    let pool = builder.build()?;
    println!(
        "Checking {} numbers with {} processes:",
        NUMBERS.len(),
        pool.max_workers()
    );
    let start = Instant::now();
    let mut numbers = NUMBERS;
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    for result in pool.map_with(check, numbers, MapOptions::new().chunksize(1))? {
        let (n, prime, elapsed) = result?;
        let label = if prime { 'P' } else { ' ' };
        println!("{n:16}  {label} {elapsed:9.6}s");
    }
    drop(pool);
    println!("Total time: {:.2}s", start.elapsed().as_secs_f64());
    Ok(())
}
