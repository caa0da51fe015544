//! `flags`: the Fluent Python flags downloader (chapter 20), in Rust.
//!
//! `flags [CC...]` downloads flag images; `flags serve` runs the test server.
//! See the workspace README for the tour.

mod cli;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(args)) => serve::main(args),
        None => {
            eprintln!("the downloader is not built yet");
            ExitCode::from(2)
        }
    }
}
