//! A test HTTP server for the flags downloader: the book's LOCAL, DELAY and ERROR servers in
//! one library, fast enough never to be the bottleneck and deterministic on request.
//!
//! Fluent Python's chapter 20 tests its downloaders against `python -m http.server` and
//! `slow_server.py`. This crate serves the same paths with the same faults:
//!
//! - `/flags/{cc}/{cc}.gif` (`image/gif`) and `/flags/{cc}/metadata.json`
//!   (`{"tld_cc": ".br", "iso_cc": "BR", "country": "Brazil", "gec_cc": "BR"}`) for the 194
//!   countries of [`country_codes`], with `cc` in lower case, from a built-in flag set (a
//!   generated GIF of a few KB per country, names from the ISO 3166 crate), or the files of a
//!   directory ([`ServerConfig::dir`]);
//! - HTML directory listings at `/`, `/flags/` and `/flags/{cc}/`, like `http.server`'s, and a
//!   `301` to the slashed path for a directory asked for without its `/`;
//! - `404` for anything else, `HEAD` as `GET` without the body, `405` for other methods;
//!   `400` (and the connection closed) for an HTTP/1.1 request without `Host` or any request
//!   with two, as RFC 9112 §3.2 asks;
//! - a delay drawn uniformly from [`ServerConfig::delay`] before every `GET` or `HEAD` response
//!   (errors and 404s included), and `418 I'm a Teapot` with the probability of
//!   [`ServerConfig::error_rate`]; with a [seed](ServerConfig::seed) both are a function of the
//!   request path, given by [`plan_for`].
//!
//! It runs on tokio and hyper (HTTP/1.1 with keep-alive), listens with a large backlog, closes
//! connections whose client is too slow to send its headers or stops reading, and caps the
//! connections served at once, answering `503` past the cap.
//!
//! # Examples
//!
//! Start a server on a free port, fetch a flag, stop it:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//!
//! let server = slow_server::start(slow_server::ServerConfig::new())?;
//! let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
//! stream
//!     .write_all(b"GET /flags/br/metadata.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
//!     .expect("send");
//! let mut response = String::new();
//! stream.read_to_string(&mut response).expect("receive");
//! assert!(response.starts_with("HTTP/1.1 200 OK"));
//! assert!(response.ends_with(r#""country": "Brazil", "gec_cc": "BR"}"#));
//! server.shutdown();
//! # Ok::<(), slow_server::ServerError>(())
//! ```
//!
//! The book's ERROR server, with a seed: a client's ideal run time is known in advance.
//!
//! ```
//! use std::time::Duration;
//! use slow_server::{ServerConfig, plan_for};
//!
//! let half = Duration::from_millis(500);
//! let config = ServerConfig::new().delay(half, half).error_rate(0.25).seed(1);
//! let failures = slow_server::country_codes()
//!     .iter()
//!     .map(|cc| format!("/flags/{0}/{0}.gif", cc.to_ascii_lowercase()))
//!     .filter(|path| plan_for(&config, path).error)
//!     .count();
//! assert!(failures > 20 && failures < 80);
//! let server = slow_server::start(config)?; // answers exactly those paths with 418
//! # drop(server);
//! # Ok::<(), slow_server::ServerError>(())
//! ```
//!
//! Inside an existing runtime, [`Server::bind`] and [`Server::run_until`] run a server as a
//! future, so one runtime can run several (as `flags serve` does).
//!
//! # Determinism
//!
//! With a seed, the delay and the verdict of a request depend only on the seed, the
//! configured delays and rate, and the request path as sent (without the query string); the
//! formula is given in [`plan_for`]. Without a seed each request draws anew.
//!
//! # Limits
//!
//! Small files of a served directory are read whole and kept in memory (up to 1 MiB a file and
//! 64 MiB in all); larger files, and those the cache has no room for, are sent as they are
//! read, 64 KiB at a time and only as fast as the client takes them, so a connection holds
//! about a chunk and hyper's 64 KiB buffer whatever the file's size. A cached file is served without touching the disk for up to
//! [`ServerConfig::file_check_interval`] (1 s) after its last check; the check makes sure,
//! with one `lstat` per path segment, that the path has no symbolic link and that the file has
//! not changed (device, inode, length, modification time). Paths through links are resolved
//! and checked against the root every time; the file is then opened without blocking and only
//! served if the open descriptor is a regular file (never a FIFO or a device). The server is
//! meant for small files such as flags.
//!
//! A client has 10 s to send its first byte, a request's headers, or to start its
//! next request on a kept-alive connection ([`ServerConfig::header_read_timeout`]), and 30 s
//! for a stalled response write; at most 16,384 connections are served at once
//! ([`ServerConfig::max_connections`]), and fewer if the descriptor limit does not allow as
//! many: past either cap a connection gets `503` with `Retry-After`, it is not left waiting.
//! [`raise_descriptor_limit`] raises the soft limit to the hard one before the first server
//! starts.

#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod body;
mod config;
mod content;
mod countries;
mod descriptors;
mod error;
mod image;
mod listing;
mod plan;
mod server;
mod stall;
mod target;
mod trim;

pub use config::ServerConfig;
pub use countries::{country_codes, country_name};
pub use descriptors::raise_descriptor_limit;
pub use error::ServerError;
pub use plan::{ResponsePlan, plan_for};
pub use server::{Server, ServerHandle, start};
