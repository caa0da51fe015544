//! Protection from slow and greedy clients, and the errors of bad settings.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{connect, get, parse};
use slow_server::{ServerConfig, ServerError, start};

/// Sends one keep-alive request on `stream` and reads its answer.
fn keep_alive_get(stream: &mut std::net::TcpStream, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .expect("send");
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        if let Some((response, _)) = parse(&bytes, false) {
            return response.status;
        }
        let n = stream.read(&mut buffer).expect("receive");
        assert!(n > 0, "closed before the answer");
        bytes.extend_from_slice(&buffer[..n]);
    }
}

/// Reads until the server closes the connection; true if it did.
fn closed_by_server(stream: &mut std::net::TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_slowloris_client_is_cut_off_and_others_are_served() {
    let timeout = Duration::from_millis(300);
    let server = start(ServerConfig::new().header_read_timeout(timeout)).expect("start");
    let addr = server.local_addr();
    let mut slow = connect(addr);
    let started = Instant::now();
    slow.write_all(b"GET /flags/br/br.gif HTTP/1.1\r\nHost: t\r\n")
        .expect("send");
    // While the slow client dawdles, another is served at once.
    assert_eq!(get(addr, "/flags/br/br.gif").status, 200);
    let _ = slow.write_all(b"X-Slow: 1\r\n");
    assert!(
        closed_by_server(&mut slow),
        "the slow connection was left open"
    );
    assert!(started.elapsed() >= timeout);
}

#[test]
fn a_client_that_sends_nothing_is_cut_off() {
    let timeout = Duration::from_millis(300);
    let server = start(ServerConfig::new().header_read_timeout(timeout)).expect("start");
    let started = Instant::now();
    let mut silent = connect(server.local_addr());
    assert!(
        closed_by_server(&mut silent),
        "the silent connection was left open"
    );
    assert!(started.elapsed() >= timeout);
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let server =
        start(ServerConfig::new().header_read_timeout(Duration::from_millis(300))).expect("start");
    let mut stream = connect(server.local_addr());
    assert_eq!(keep_alive_get(&mut stream, "/flags/"), 200);
    assert!(closed_by_server(&mut stream));
}

#[test]
fn past_the_connection_cap_clients_get_503() {
    let server = start(ServerConfig::new().max_connections(2)).expect("start");
    let addr = server.local_addr();
    // Two kept-alive connections that have been served hold both slots.
    let mut held: Vec<_> = (0..2).map(|_| connect(addr)).collect();
    for stream in &mut held {
        assert_eq!(keep_alive_get(stream, "/flags/br/br.gif"), 200);
    }
    let response = get(addr, "/flags/br/br.gif");
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(response.text().contains("too many connections"));
    // The held connections still work.
    for stream in &mut held {
        assert_eq!(keep_alive_get(stream, "/flags/de/de.gif"), 200);
    }
}

#[test]
fn a_client_that_never_reads_does_not_stop_others() {
    let server = start(ServerConfig::new()).expect("start");
    let addr = server.local_addr();
    let mut greedy = connect(addr);
    // Pipeline many requests for the largest page and never read the answers: the server's
    // writes to this connection stall once the socket buffers are full.
    let request = b"GET /flags/ HTTP/1.1\r\nHost: t\r\n\r\n";
    greedy
        .set_write_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    for _ in 0..2000 {
        if greedy.write_all(request).is_err() {
            break;
        }
    }
    for cc in ["br", "de", "fr", "jp"] {
        assert_eq!(get(addr, &format!("/flags/{cc}/{cc}.gif")).status, 200);
    }
}

fn error_of(config: ServerConfig) -> ServerError {
    match start(config) {
        Ok(handle) => panic!("started on {} with bad settings", handle.local_addr()),
        Err(error) => error,
    }
}

fn assert_one_line(error: &ServerError, expected: &str) {
    let message = error.to_string();
    assert!(!message.contains('\n'), "{message:?}");
    assert!(message.contains(expected), "{message:?} lacks {expected:?}");
}

#[test]
fn bad_settings_are_refused_with_one_line_messages() {
    let second = Duration::from_secs(1);
    let error = error_of(ServerConfig::new().delay(second * 2, second));
    assert!(matches!(error, ServerError::DelayRange { .. }));
    assert_one_line(&error, "minimum (2 s) is greater than the maximum (1 s)");
    for rate in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
        let error = error_of(ServerConfig::new().error_rate(rate));
        assert!(matches!(error, ServerError::ErrorRate(_)));
        assert_one_line(&error, "between 0 and 1");
    }
    assert_one_line(
        &error_of(ServerConfig::new().max_connections(0)),
        "connection limit",
    );
    assert_one_line(
        &error_of(ServerConfig::new().header_read_timeout(Duration::ZERO)),
        "header read timeout",
    );
}

#[test]
fn a_port_in_use_is_refused() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let error = error_of(ServerConfig::new().addr(addr));
    assert!(matches!(error, ServerError::Bind { .. }));
    assert_one_line(&error, &format!("cannot listen on {addr}"));
}

#[test]
fn a_missing_directory_or_a_file_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing");
    let error = error_of(ServerConfig::new().dir(&missing));
    assert!(matches!(error, ServerError::Dir { .. }));
    assert_one_line(&error, "cannot serve directory");
    let file = dir.path().join("file");
    std::fs::write(&file, "x").expect("write");
    let error = error_of(ServerConfig::new().dir(&file));
    assert!(matches!(error, ServerError::NotADirectory { .. }));
    assert_one_line(&error, "not a directory");
}

#[test]
fn ipv6_loopback_works_where_available() {
    let addr: SocketAddr = "[::1]:0".parse().expect("address");
    let Ok(server) = start(ServerConfig::new().addr(addr)) else {
        return; // No IPv6 on this machine.
    };
    assert!(server.flags_url().starts_with("http://[::1]:"));
    assert_eq!(get(server.local_addr(), "/flags/br/br.gif").status, 200);
}
