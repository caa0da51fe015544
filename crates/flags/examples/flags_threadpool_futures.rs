//! The listing after Example 20-3 in *Fluent Python* (2nd edition),
//! `flags_threadpool_futures.py`: `submit` and `as_completed` instead of `map`, on five
//! flags and three workers, printing each future when it is scheduled and when it is done.
//!
//! `cargo run -p flags --example flags_threadpool_futures`

use concurrent_futures::{ThreadPoolExecutor, as_completed};

#[path = "flags_threadpool.rs"]
#[allow(dead_code, reason = "only download_one is reused")]
mod flags_threadpool;
use flags_threadpool::{download_one, flags};

fn download_many(cc_list: &[&'static str]) -> usize {
    let mut cc_list = cc_list[..5].to_vec();
    cc_list.sort_unstable();
    let executor = ThreadPoolExecutor::builder()
        .max_workers(3)
        .build()
        .unwrap();
    let mut to_do = Vec::new();
    for cc in cc_list {
        let future = executor.submit(move || download_one(cc)).unwrap();
        println!("Scheduled for {cc}: {future:?}");
        to_do.push(future);
    }
    let mut count = 0;
    for future in as_completed(to_do, None) {
        let future = future.unwrap();
        let res = future.result_cloned().unwrap();
        println!("{future:?} result: '{res}'");
        count += 1;
    }
    count
}

fn main() {
    flags::main_with(download_many);
}
