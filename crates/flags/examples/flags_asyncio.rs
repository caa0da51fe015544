//! Example 21-2 of *Fluent Python* (2nd edition), `flags_asyncio.py`, the async version
//! chapter 20 is compared against: one task per flag on one thread, gathered.
//!
//! `cargo run -p flags --example flags_asyncio`

use std::io::Write;

#[path = "flags.rs"]
#[allow(
    dead_code,
    reason = "get_flag is the blocking one; this example has its own"
)]
mod flags;
use flags::{main_with, save_flag};

async fn get_flag(client: &reqwest::Client, cc: &str) -> reqwest::Result<Vec<u8>> {
    let cc = cc.to_lowercase();
    let url = format!("{}/{cc}/{cc}.gif", flags::base_url());
    Ok(client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?
        .to_vec())
}

async fn download_one(client: reqwest::Client, cc: &'static str) -> &'static str {
    let image = get_flag(&client, cc).await.expect("download");
    save_flag(&image, &format!("{cc}.gif")).expect("save");
    print!("{cc} ");
    std::io::stdout().flush().ok();
    cc
}

async fn supervisor(cc_list: &[&'static str]) -> usize {
    let client = reqwest::Client::new();
    let mut cc_list = cc_list.to_vec();
    cc_list.sort_unstable();
    let to_do: Vec<_> = cc_list
        .into_iter()
        .map(|cc| tokio::spawn(download_one(client.clone(), cc)))
        .collect();
    let mut res = Vec::new();
    for task in to_do {
        res.push(task.await.expect("a download task"));
    }
    res.len()
}

fn download_many(cc_list: &[&'static str]) -> usize {
    // reqwest is built without a default TLS provider; `flags` picks ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(supervisor(cc_list))
}

fn main() {
    main_with(download_many);
}
