//! Every endpoint of the built-in flag set and of the directory mode: status, headers, bodies,
//! listings, redirects, HEAD, 405, keep-alive, shutdown.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{connect, get, gif_path, parse, request};
use slow_server::{ServerConfig, country_codes, country_name, start};

#[test]
fn every_flag_and_metadata_of_the_builtin_set() {
    let server = start(ServerConfig::new()).expect("start");
    let addr = server.local_addr();
    let mut gifs = std::collections::HashSet::new();
    for cc in country_codes() {
        let lower = cc.to_ascii_lowercase();
        let gif = get(addr, &gif_path(cc));
        assert_eq!(gif.status, 200, "{cc}");
        assert_eq!(gif.header("content-type"), Some("image/gif"));
        assert_eq!(
            gif.header("content-length"),
            Some(gif.body.len().to_string().as_str())
        );
        assert!(gif.body.starts_with(b"GIF89a"), "{cc}");
        assert!(gifs.insert(gif.body), "{cc} has the image of another code");

        let meta = get(addr, &format!("/flags/{lower}/metadata.json"));
        assert_eq!(meta.status, 200);
        assert_eq!(meta.header("content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_slice(&meta.body).expect("JSON");
        assert_eq!(json["iso_cc"], *cc);
        assert_eq!(json["tld_cc"], format!(".{lower}"));
        assert_eq!(json["country"], country_name(cc).expect("a name"));
        assert!(json["gec_cc"].is_string());
    }
}

#[test]
fn images_are_the_same_on_every_server() {
    let a = start(ServerConfig::new()).expect("start");
    let b = start(ServerConfig::new()).expect("start");
    let path = gif_path("BR");
    assert_eq!(
        get(a.local_addr(), &path).body,
        get(b.local_addr(), &path).body
    );
}

#[test]
fn listings_link_to_every_entry() {
    let server = start(ServerConfig::new()).expect("start");
    let addr = server.local_addr();

    let root = get(addr, "/");
    assert_eq!(root.status, 200);
    assert!(root.text().contains(r#"<a href="flags/">flags/</a>"#));

    let flags = get(addr, "/flags/");
    assert_eq!(flags.status, 200);
    assert_eq!(
        flags.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = flags.text();
    assert!(html.contains("<title>Directory listing for /flags/</title>"));
    assert_eq!(html.matches("<li><a href=").count(), 194);
    for cc in country_codes() {
        let lower = cc.to_ascii_lowercase();
        assert!(
            html.contains(&format!(r#"<a href="{lower}/">{lower}/</a>"#)),
            "{cc}"
        );
    }

    let br = get(addr, "/flags/br/").text();
    assert!(br.contains(r#"<a href="br.gif">br.gif</a>"#));
    assert!(br.contains(r#"<a href="metadata.json">metadata.json</a>"#));
    assert_eq!(br.matches("<li>").count(), 2);
}

#[test]
fn directories_without_their_slash_redirect() {
    let server = start(ServerConfig::new()).expect("start");
    let addr = server.local_addr();
    for (path, location) in [("/flags", "/flags/"), ("/flags/br", "/flags/br/")] {
        let response = get(addr, path);
        assert_eq!(response.status, 301, "{path}");
        assert_eq!(response.header("location"), Some(location));
    }
}

#[test]
fn absent_things_are_404() {
    let server = start(ServerConfig::new()).expect("start");
    let addr = server.local_addr();
    for path in [
        "/flags/xx/xx.gif",
        "/flags/br/de.gif",
        "/flags/BR/BR.gif",
        "/flags/br/br.png",
        "/flags/br/br.gif/",
        "/flags/br/metadata.json/x",
        "/flagsbr",
        "/index.html",
        "/favicon.ico",
    ] {
        let response = get(addr, path);
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(
            response.header("content-length"),
            Some(response.body.len().to_string().as_str())
        );
    }
}

#[test]
fn query_strings_are_ignored() {
    let server = start(ServerConfig::new()).expect("start");
    assert_eq!(get(server.local_addr(), "/flags/br/br.gif?x=1").status, 200);
}

#[test]
fn head_sends_the_headers_of_get_without_the_body() {
    let server = start(ServerConfig::new()).expect("start");
    let addr = server.local_addr();
    for path in [
        "/flags/br/br.gif",
        "/flags/br/metadata.json",
        "/flags/",
        "/nothing",
    ] {
        let got = get(addr, path);
        let head = request(addr, "HEAD", path);
        assert_eq!(head.status, got.status, "{path}");
        assert_eq!(head.header("content-type"), got.header("content-type"));
        assert_eq!(head.header("content-length"), got.header("content-length"));
        assert!(head.body.is_empty());
    }
    // Nothing follows the head on the wire.
    let raw = common::exchange(
        addr,
        b"HEAD /flags/br/br.gif HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(raw.ends_with(b"\r\n\r\n"));
}

#[test]
fn other_methods_are_405_with_allow() {
    let server = start(ServerConfig::new()).expect("start");
    let addr = server.local_addr();
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW"] {
        let response = request(addr, method, "/flags/br/br.gif");
        assert_eq!(response.status, 405, "{method}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"));
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or any request with two, is a 400 (as
/// nginx answers), and the connection is closed after it.
#[test]
fn issue_17_a_missing_or_repeated_host_is_400() {
    let server = start(ServerConfig::new()).expect("start");
    let addr = server.local_addr();
    for (raw, why) in [
        (
            &b"GET /flags/br/br.gif HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
            "HTTP/1.1 needs a Host header",
        ),
        (
            b"GET /flags/br/br.gif HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            "more than one Host header",
        ),
        (
            b"GET /flags/br/br.gif HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n",
            "more than one Host header",
        ),
        (
            b"GET /flags/br/br.gif HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            "more than one Host header",
        ),
        // Without `Connection: close`: the server closes anyway, so `exchange` returns.
        (
            b"HEAD /flags/br/br.gif HTTP/1.1\r\n\r\n",
            "HTTP/1.1 needs a Host header",
        ),
    ] {
        let bytes = common::exchange(addr, raw);
        let label = String::from_utf8_lossy(raw);
        let head = raw.starts_with(b"HEAD");
        let (response, used) = parse(&bytes, head).unwrap_or_else(|| panic!("{label}: no answer"));
        assert_eq!(response.status, 400, "{label}");
        assert_eq!(response.header("connection"), Some("close"), "{label}");
        assert_eq!(used, bytes.len(), "{label}: more than one answer");
        if !head {
            assert!(
                response.text().contains(why),
                "{label}: {}",
                response.text()
            );
        }
    }
    // HTTP/1.0 does not need the header; HTTP/1.1 with one is served.
    let bytes = common::exchange(addr, b"GET /flags/br/br.gif HTTP/1.0\r\n\r\n");
    assert_eq!(parse(&bytes, false).expect("an answer").0.status, 200);
    assert_eq!(get(addr, "/flags/br/br.gif").status, 200);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = start(ServerConfig::new()).expect("start");
    let mut stream = connect(server.local_addr());
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    for path in ["/flags/br/br.gif", "/flags/de/metadata.json", "/flags/"] {
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("send");
        let response = loop {
            if let Some((response, used)) = parse(&bytes, false) {
                bytes.drain(..used);
                break response;
            }
            let n = stream.read(&mut buffer).expect("receive");
            assert!(n > 0, "the server closed a kept-alive connection");
            bytes.extend_from_slice(&buffer[..n]);
        };
        assert_eq!(response.status, 200, "{path}");
        assert_ne!(response.header("connection"), Some("close"));
    }
}

#[test]
fn shutdown_stops_listening_and_flags_url_has_no_trailing_slash() {
    let server = start(ServerConfig::new()).expect("start");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    assert_eq!(server.flags_url(), format!("http://{addr}/flags"));
    server.shutdown();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after shutdown"
    );
}

#[test]
fn dropping_the_handle_stops_the_server() {
    let addr = start(ServerConfig::new()).expect("start").local_addr();
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn a_directory_is_served_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::create_dir(root.join("br")).expect("mkdir");
    let gif: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    std::fs::write(root.join("br/br.gif"), &gif).expect("write");
    std::fs::write(root.join("br/metadata.json"), br#"{"country": "Brazil"}"#).expect("write");
    std::fs::write(root.join("notes.txt"), "hello").expect("write");
    std::fs::write(root.join("a b.bin"), [0u8, 1, 2]).expect("write");

    let server = start(ServerConfig::new().dir(root)).expect("start");
    let addr = server.local_addr();

    let response = get(addr, "/flags/br/br.gif");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, gif);
    assert_eq!(response.header("content-type"), Some("image/gif"));
    assert_eq!(response.header("content-length"), Some("5000"));
    assert_eq!(
        get(addr, "/flags/br/metadata.json").header("content-type"),
        Some("application/json")
    );
    assert_eq!(get(addr, "/flags/notes.txt").text(), "hello");
    let spaced = get(addr, "/flags/a%20b.bin");
    assert_eq!(spaced.body, [0, 1, 2]);
    assert_eq!(
        spaced.header("content-type"),
        Some("application/octet-stream")
    );

    let listing = get(addr, "/flags/").text();
    assert!(listing.contains(r#"<a href="a%20b.bin">a b.bin</a>"#));
    assert!(listing.contains(r#"<a href="br/">br/</a>"#));
    assert!(listing.contains(r#"<a href="notes.txt">notes.txt</a>"#));
    assert!(
        get(addr, "/flags/br/")
            .text()
            .contains(r#"<a href="br.gif">br.gif</a>"#)
    );
    assert_eq!(
        get(addr, "/flags/br").header("location"),
        Some("/flags/br/")
    );
    assert_eq!(get(addr, "/flags/de/de.gif").status, 404);
    assert_eq!(get(addr, "/flags/notes.txt/").status, 404);
    let head = request(addr, "HEAD", "/flags/br/br.gif");
    assert_eq!(head.header("content-length"), Some("5000"));
    assert!(head.body.is_empty());
}

#[test]
fn a_changed_file_is_served_anew() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("note.txt");
    std::fs::write(&file, "first").expect("write");
    let config = ServerConfig::new()
        .dir(dir.path())
        .file_check_interval(std::time::Duration::ZERO);
    let server = start(config).expect("start");
    let addr = server.local_addr();
    assert_eq!(get(addr, "/flags/note.txt").text(), "first");
    assert_eq!(get(addr, "/flags/note.txt").text(), "first");
    // A new file under the same name (a new inode, as editors and `mv` make).
    let fresh = dir.path().join("note.new");
    std::fs::write(&fresh, "second, longer").expect("write");
    std::fs::rename(&fresh, &file).expect("rename");
    assert_eq!(get(addr, "/flags/note.txt").text(), "second, longer");
    std::fs::remove_file(&file).expect("remove");
    assert_eq!(get(addr, "/flags/note.txt").status, 404);
}

/// Sends a keep-alive `method path` on `stream` and reads its whole answer.
fn keep_alive_exchange(stream: &mut TcpStream, method: &str, path: &str) -> common::Response {
    stream
        .write_all(format!("{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .expect("send");
    let mut bytes = Vec::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        if let Some((response, used)) = parse(&bytes, method == "HEAD") {
            assert_eq!(used, bytes.len(), "bytes past the announced length");
            return response;
        }
        let n = stream.read(&mut buffer).expect("receive");
        assert!(n > 0, "closed before the end of the answer");
        bytes.extend_from_slice(&buffer[..n]);
    }
}

/// Files too large for the cache are sent as they are read (issue 17, point 7): byte for byte,
/// with the length announced, for `GET` and `HEAD`, and the connection stays usable.
#[test]
fn a_large_file_is_streamed_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("big")).expect("mkdir");
    // 3 MiB and a bit: several chunks, the last one short; a pattern that shows misplaced bytes.
    let len = 3 * 1024 * 1024 + 12_345;
    let data: Vec<u8> = (0..len).map(|i: usize| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big/big.bin"), &data).expect("write");
    let server = start(ServerConfig::new().dir(dir.path())).expect("start");
    let mut stream = connect(server.local_addr());
    for _ in 0..2 {
        let response = keep_alive_exchange(&mut stream, "GET", "/flags/big/big.bin");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-length"), Some(&*len.to_string()));
        assert!(response.body == data, "the body differs from the file");
        let head = keep_alive_exchange(&mut stream, "HEAD", "/flags/big/big.bin");
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-length"), Some(&*len.to_string()));
    }
}

/// A file truncated while it is sent ends the connection early: the client sees fewer bytes
/// than announced, never a padded or shortened body that looks whole.
#[test]
fn a_file_truncated_while_sent_cuts_the_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("big")).expect("mkdir");
    let path = dir.path().join("big/big.bin");
    // Sparse, and far larger than any socket buffers the server could fill before the cut.
    let len: u64 = 1 << 30;
    std::fs::File::create(&path)
        .and_then(|file| file.set_len(len))
        .expect("sparse file");
    let server = start(ServerConfig::new().dir(dir.path())).expect("start");
    let mut stream = connect(server.local_addr());
    stream
        .write_all(b"GET /flags/big/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let mut first = [0u8; 1024];
    let n = stream.read(&mut first).expect("the head");
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    // The server is at most a chunk and the socket buffers ahead of this client.
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|file| file.set_len(0))
        .expect("truncate");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(((n + rest.len()) as u64) < len, "a whole body was sent");
}
