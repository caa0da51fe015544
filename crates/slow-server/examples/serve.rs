//! Runs one server from the command line, for trying it out or load tests:
//! `cargo run --release -p slow-server --example serve -- [PORT] [DIR]`.
//! (`flags serve` is the full command line.)

use std::net::{Ipv4Addr, SocketAddr};

fn main() -> Result<(), slow_server::ServerError> {
    let mut args = std::env::args().skip(1);
    let port = args.next().and_then(|port| port.parse().ok()).unwrap_or(0);
    let mut config =
        slow_server::ServerConfig::new().addr(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    if let Some(dir) = args.next() {
        config = config.dir(dir);
    }
    let server = slow_server::start(config)?;
    println!("{}", server.flags_url());
    // Serve until stdin closes.
    let _ = std::io::stdin().read_line(&mut String::new());
    server.shutdown();
    Ok(())
}
