//! Example 20-3 of *Fluent Python* (2nd edition), `flags_threadpool.py`: the sequential
//! script's `download_many` on a thread pool. `download_one` is the body of the
//! sequential loop turned into a function; the pool's drop is the end of the `with` block.
//!
//! `cargo run -p flags --example flags_threadpool`

use std::io::Write;

use concurrent_futures::ThreadPoolExecutor;

#[path = "flags.rs"]
pub(crate) mod flags;
use flags::{get_flag, main_with, save_flag};

pub(crate) fn download_one(cc: &str) -> String {
    let image = get_flag(cc).expect("download");
    save_flag(&image, &format!("{cc}.gif")).expect("save");
    print!("{cc} ");
    std::io::stdout().flush().ok();
    cc.to_owned()
}

fn download_many(cc_list: &[&'static str]) -> usize {
    let executor = ThreadPoolExecutor::new();
    let mut cc_list = cc_list.to_vec();
    cc_list.sort_unstable();
    let res = executor
        .map(download_one, cc_list)
        .expect("a new pool takes work");
    res.count()
}

fn main() {
    main_with(download_many);
}
