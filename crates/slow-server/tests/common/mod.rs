//! A raw HTTP/1.1 client over `std::net::TcpStream`: it sends paths exactly as written (no
//! normalisation), which the traversal tests need, and sees status lines and headers as sent.

#![allow(dead_code, unreachable_pub)] // Each test binary uses part of it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Generous: only a broken server makes a test wait this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of a header (names compared without regard to case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Opens a connection with timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the test server");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    stream
}

/// Sends `method path` with `Connection: close` and returns the parsed answer.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    let bytes = exchange(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    parse(&bytes, method == "HEAD")
        .expect("a well-formed response")
        .0
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path)
}

/// Writes `raw` and reads until the server closes.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut stream = connect(addr);
    stream.write_all(raw).expect("send");
    let mut bytes = Vec::new();
    // A reset after a complete answer still leaves the answer in `bytes`.
    let _ = stream.read_to_end(&mut bytes);
    bytes
}

/// Parses one response from the start of `bytes`; returns it and the bytes it used.
pub fn parse(bytes: &[u8], head: bool) -> Option<(Response, usize)> {
    let end = bytes.windows(4).position(|window| window == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next()?;
    let status = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    let start = end + 4;
    let length = match response.header("content-length") {
        Some(length) if !head => length.parse::<usize>().ok()?,
        _ => 0,
    };
    let body = bytes.get(start..start + length)?;
    response.body = body.to_vec();
    Some((response, start + length))
}

/// The path of the image of a country code, as the downloader asks for it.
pub fn gif_path(cc: &str) -> String {
    let lower = cc.to_ascii_lowercase();
    format!("/flags/{lower}/{lower}.gif")
}
