//! The command line: `flags [OPTIONS] [CC]...` and its subcommands.

use clap::{Parser, Subcommand};

/// Download flags of countries, as in Fluent Python's flags2 examples.
#[derive(Debug, Parser)]
#[command(name = "flags", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    /// A subcommand; without one, `flags` downloads.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the test HTTP server (the book's LOCAL, DELAY and ERROR servers by default).
    Serve(crate::serve::ServeArgs),
}
