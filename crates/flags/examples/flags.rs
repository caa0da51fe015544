//! Example 20-2 of *Fluent Python* (2nd edition), `flags.py`: download the flags of the 20
//! most populous countries, one after another. The concurrent examples reuse its
//! functions, as the book's scripts `from flags import save_flag, get_flag, main`.
//!
//! `cargo run -p flags --example flags` (against the built-in test server; `-s URL` for
//! another, `-d DIR` for where the flags go).

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

/// The book's `POP20_CC`.
pub(crate) const POP20_CC: [&str; 20] = flags_engine::countries::POP20;

/// The book's `BASE_URL` and `DEST_DIR`: set once by `main` (in a worker process, by
/// the pool's initializer: see `flags_processpool.rs`).
static BASE_URL: OnceLock<String> = OnceLock::new();
static DEST_DIR: OnceLock<PathBuf> = OnceLock::new();

pub(crate) fn save_flag(img: &[u8], filename: &str) -> std::io::Result<()> {
    std::fs::write(DEST_DIR.get_or_init(std::env::temp_dir).join(filename), img)
}

pub(crate) fn get_flag(cc: &str) -> Result<Vec<u8>, ureq::Error> {
    let url = format!("{}/{cc}/{cc}.gif", base_url()).to_lowercase();
    ureq::get(url).call()?.body_mut().read_to_vec()
}

#[allow(
    dead_code,
    reason = "the sequential one; the other examples bring their own"
)]
fn download_many(cc_list: &[&'static str]) -> usize {
    let mut cc_list = cc_list.to_vec();
    cc_list.sort_unstable();
    for cc in &cc_list {
        let image = get_flag(cc).expect("download");
        save_flag(&image, &format!("{cc}.gif")).expect("save");
        print!("{cc} ");
        std::io::stdout().flush().ok();
    }
    cc_list.len()
}

/// The book's `main(downloader)`: times one run of `downloader` over `POP20_CC`.
pub(crate) fn main_with(downloader: fn(&[&'static str]) -> usize) {
    let setup = flags_engine::book::BookSetup::from_args(); // a server and a directory
    set_globals((setup.base_url.clone(), setup.dest.clone()));
    let t0 = Instant::now();
    let count = downloader(&POP20_CC);
    let elapsed = t0.elapsed().as_secs_f64();
    println!("\n{count} downloads in {elapsed:.2}s");
}

/// Sets `BASE_URL` and `DEST_DIR` (in worker processes, as the pool's initializer).
pub(crate) fn set_globals((base_url, dest): (String, PathBuf)) {
    let _ = BASE_URL.set(base_url);
    let _ = DEST_DIR.set(dest);
}

/// `BASE_URL` and `DEST_DIR`, for worker processes that need them handed over.
#[allow(dead_code, reason = "used by the process-pool example")]
pub(crate) fn globals() -> (String, PathBuf) {
    (base_url(), DEST_DIR.get_or_init(std::env::temp_dir).clone())
}

pub(crate) fn base_url() -> String {
    BASE_URL.get().cloned().unwrap_or_default()
}

#[allow(
    dead_code,
    reason = "included by the other examples, which have their own main"
)]
fn main() {
    main_with(download_many);
}
