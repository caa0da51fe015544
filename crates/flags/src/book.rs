//! What the chapter's listings (`examples/flags*.rs`) need besides the book's own code:
//! a server to download from and a directory to save into, from the command line.
//!
//! The book's scripts download from `https://www.fluentpython.com/data/flags` into
//! `./downloaded`; the examples use the built-in test server and a temporary directory by
//! default, so that they run anywhere, offline, and leave nothing in the repository.

use std::path::PathBuf;

use slow_server::{ServerConfig, ServerHandle};

/// Where an example downloads from and saves to; keeps the built-in server running for
/// as long as it lives.
#[derive(Debug)]
pub struct BookSetup {
    /// The flags' base URL: a flag is at `{base_url}/{cc}/{cc}.gif`.
    pub base_url: String,
    /// The directory the flags are saved in (created).
    pub dest: PathBuf,
    _server: Option<ServerHandle>,
}

impl BookSetup {
    /// Reads `-s BASE_URL` (or `FLAGS_SERVER`) and `-d DIR` (default: `flags-book` in the
    /// temporary directory) from the command line, starts the built-in server unless a
    /// URL was given, and creates the directory. Prints a usage line and exits with
    /// status 2 on a bad argument, and exits with status 1 when the server cannot start
    /// or the directory cannot be made.
    pub fn from_args() -> Self {
        let mut server = std::env::var("FLAGS_SERVER").ok();
        let mut dest = std::env::temp_dir().join("flags-book");
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match (arg.as_str(), args.next()) {
                ("-s", Some(url)) => server = Some(url),
                ("-d", Some(dir)) => dest = dir.into(),
                _ => exit(2, "usage: [-s BASE_URL] [-d DIR]"),
            }
        }
        let (base_url, server) = match server {
            Some(url) => (url.trim_end_matches('/').to_owned(), None),
            None => match slow_server::start(ServerConfig::new()) {
                Ok(server) => (server.flags_url(), Some(server)),
                Err(e) => exit(1, &format!("cannot start the built-in server: {e}")),
            },
        };
        if let Err(e) = std::fs::create_dir_all(&dest) {
            exit(1, &format!("cannot create {}: {e}", dest.display()));
        }
        Self {
            base_url,
            dest,
            _server: server,
        }
    }
}

fn exit(status: i32, message: &str) -> ! {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{message}");
    std::process::exit(status)
}
