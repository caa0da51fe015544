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

/// The numbers of `primes.py`.
const NUMBERS: [u64; 20] = [
    2,
    142_702_110_479_723,
    299_593_572_317_531,
    3_333_333_333_333_301,
    3_333_333_333_333_333,
    3_333_335_652_092_209,
    4_444_444_444_444_423,
    4_444_444_444_444_444,
    4_444_444_488_888_889,
    5_555_553_133_149_889,
    5_555_555_555_555_503,
    5_555_555_555_555_555,
    6_666_666_666_666_666,
    6_666_666_666_666_719,
    6_666_667_141_414_921,
    7_777_777_536_340_681,
    7_777_777_777_777_753,
    7_777_777_777_777_777,
    9_999_999_999_999_917,
    9_999_999_999_999_999,
];

/// Trial division by odd numbers up to the square root, as `primes.py` does.
fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n == 2 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let root = n.isqrt();
    (3..=root).step_by(2).all(|i| !n.is_multiple_of(i))
}

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
            eprintln!("primes: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = ProcessPoolExecutor::builder();
    if let Some(arg) = std::env::args().nth(1) {
        let workers: usize = arg
            .parse()
            .map_err(|e| format!("WORKERS must be a positive number, not {arg:?}: {e}"))?;
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
