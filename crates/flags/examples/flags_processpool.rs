//! `flags_threadpool.py` with Python's one-word change: `ProcessPoolExecutor` instead of
//! `ThreadPoolExecutor`. In Rust the task is a plain `fn` (it crosses to another process),
//! `main` starts with the guard (Python's `if __name__ == '__main__':`), and the base URL
//! and directory, module constants in Python, reach the workers through the pool's
//! initializer.
//!
//! `cargo run -p flags --example flags_processpool`

use concurrent_futures::ProcessPoolExecutor;

#[path = "flags_threadpool.rs"]
#[allow(dead_code, reason = "only download_one is reused")]
mod flags_threadpool;
use flags_threadpool::flags;

fn download_one(cc: String) -> String {
    flags_threadpool::download_one(&cc)
}

fn download_many(cc_list: &[&'static str]) -> usize {
    let executor = ProcessPoolExecutor::builder()
        .initializer(flags::set_globals, flags::globals())
        .build()
        .unwrap();
    let mut cc_list: Vec<String> = cc_list.iter().map(|&cc| cc.to_owned()).collect();
    cc_list.sort_unstable();
    let res = executor.map(download_one, cc_list).unwrap();
    res.count()
}

fn main() {
    concurrent_futures::process_worker_main();
    flags::main_with(download_many);
}
