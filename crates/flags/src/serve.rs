//! `flags serve`: the test server from the command line.
//!
//! Without options it runs the book's three servers (LOCAL, DELAY and ERROR, on ports 8000 to
//! 8002); with `--port` it runs one server with the delays and error rate given. The servers
//! are [`slow_server::Server`]s on one tokio runtime, stopped by Ctrl-C (or SIGTERM).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use slow_server::{Server, ServerConfig, ServerError};
use tokio::sync::watch;

/// Options of `flags serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Run one server on port P (0: any free port) instead of the book's LOCAL (8000), DELAY
    /// (8001, 0.5–5 s delays) and ERROR (8002, 0.5 s delay, 25% 418 errors) servers
    #[arg(long, value_name = "P")]
    port: Option<u16>,

    /// Listen on ADDR
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,

    /// Serve the files under DIR at /flags/ (DIR/br/br.gif answers /flags/br/br.gif) instead of
    /// the built-in flag set
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Shortest delay before each response, in seconds (needs --port) [default: 0]
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    min_delay: Option<f64>,

    /// Longest delay before each response, in seconds (needs --port) [default: the minimum]
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    max_delay: Option<f64>,

    /// Answer "418 I'm a Teapot" with probability R, from 0 to 1 (needs --port) [default: 0]
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    error_rate: Option<f64>,

    /// Make each path's delay and error the same on every run (see slow_server::plan_for)
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

/// One server to run: its label for the banner and its settings.
#[derive(Debug)]
struct Spec {
    label: &'static str,
    config: ServerConfig,
}

/// Runs `flags serve` and returns the exit status: 0 after Ctrl-C, 2 for bad options (including
/// a port in use or a missing directory), 1 if the runtime fails.
pub(crate) fn main(args: ServeArgs) -> ExitCode {
    let specs = match specs(&args) {
        Ok(specs) => specs,
        Err(message) => return usage_error(&message),
    };
    // Before the first server starts, which sizes the servers' share of the descriptors from
    // the limit (issue 17). If the limit cannot be raised, the servers live within the old one.
    let _ = slow_server::raise_descriptor_limit();
    let mut servers = Vec::with_capacity(specs.len());
    for spec in specs {
        let summary = summary(&spec.config);
        match Server::bind(spec.config) {
            Ok(server) => servers.push((spec.label, summary, server)),
            Err(error) => return usage_error(&error.to_string()),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            diag!("error: {}", ServerError::Runtime(error));
            return ExitCode::FAILURE;
        }
    };
    {
        // A closed stdout loses the banner, not the servers.
        let mut out = std::io::stdout().lock();
        for (label, summary, server) in &servers {
            let _ = writeln!(out, "{label:<6} {}  ({summary})", server.flags_url());
        }
        let _ = out.flush();
    }
    diag!("Press Ctrl-C to stop.");
    let result = runtime.block_on(run(servers.into_iter().map(|(_, _, server)| server)));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            diag!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a one-line error and gives the exit status of bad options.
fn usage_error(message: &str) -> ExitCode {
    diag!("error: {message}");
    ExitCode::from(2)
}

/// The servers the options ask for, or why the options are wrong.
fn specs(args: &ServeArgs) -> Result<Vec<Spec>, String> {
    let common = |port: u16| {
        let mut config = ServerConfig::new().addr(SocketAddr::new(args.bind, port));
        if let Some(dir) = &args.dir {
            config = config.dir(dir.clone());
        }
        if let Some(seed) = args.seed {
            config = config.seed(seed);
        }
        config
    };
    let Some(port) = args.port else {
        let flag = [
            (args.min_delay.is_some(), "--min-delay"),
            (args.max_delay.is_some(), "--max-delay"),
            (args.error_rate.is_some(), "--error-rate"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag));
        if let Some(flag) = flag {
            return Err(format!(
                "{flag} needs --port (without it, flags serve runs the book's three servers)"
            ));
        }
        let half = Duration::from_millis(500);
        return Ok(vec![
            Spec {
                label: "LOCAL",
                config: common(8000),
            },
            Spec {
                label: "DELAY",
                config: common(8001).delay(half, Duration::from_secs(5)),
            },
            Spec {
                label: "ERROR",
                config: common(8002).delay(half, half).error_rate(0.25),
            },
        ]);
    };
    let min = seconds("--min-delay", args.min_delay.unwrap_or(0.0))?;
    let max = match args.max_delay {
        Some(max) => seconds("--max-delay", max)?,
        None => min,
    };
    let config = common(port)
        .delay(min, max)
        .error_rate(args.error_rate.unwrap_or(0.0));
    Ok(vec![Spec {
        label: "SERVER",
        config,
    }])
}

/// A delay given in seconds.
fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("invalid {flag} {value}: it must be a number of seconds, 0 or more"))
}

/// What a server does, for the banner: "no delay, no errors", "delay 0.5–5 s, 25% errors".
fn summary(config: &ServerConfig) -> String {
    let (min, max) = config.delay_range();
    let delay = if max.is_zero() {
        "no delay".to_owned()
    } else if min == max {
        format!("delay {} s", min.as_secs_f64())
    } else {
        format!("delay {}–{} s", min.as_secs_f64(), max.as_secs_f64())
    };
    let rate = config.error_probability();
    let errors = if rate > 0.0 {
        format!("{}% 418 I'm a Teapot", rate * 100.0)
    } else {
        "no errors".to_owned()
    };
    let mut summary = format!("{delay}, {errors}");
    if let Some(seed) = config.fixed_seed() {
        summary.push_str(&format!(", seed {seed}"));
    }
    if let Some(dir) = config.served_dir() {
        summary.push_str(&format!(", files of {}", dir.display()));
    }
    summary
}

/// Runs the servers until Ctrl-C or SIGTERM.
async fn run(servers: impl Iterator<Item = Server>) -> Result<(), ServerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = tokio::task::JoinSet::new();
    for server in servers {
        let mut stop = stop_rx.clone();
        running.spawn(server.run_until(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }));
    }
    let mut outcome = Ok(());
    tokio::select! {
        () = stop_signal() => {}
        // A server that ends on its own failed to start: stop the others too.
        Some(result) = running.join_next() => {
            if let Ok(Err(error)) = result {
                outcome = Err(error);
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(result) = running.join_next().await {
        if let Ok(Err(error)) = result {
            outcome = Err(error);
        }
    }
    outcome
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // If the handler cannot be installed, the default action (exit) still stops the server.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
