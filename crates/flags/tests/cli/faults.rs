//! Faults `slow-server` cannot produce: resets, truncated bodies, stalls past the timeout,
//! redirect loops, hostile metadata, and transient errors that `--retries` recovers from.
//! Every run must count right, leave no partial file and write nothing outside `--dest`.

use predicates::prelude::*;

use crate::util::{FaultServer, GIF, Reply, Scratch, TestResult, counts, flags, gif_path};

const MODES: [&str; 4] = ["sequential", "threads", "async", "processes"];

/// Runs `flags AD BR CN` in every mode against a server that fails BR as `fault` does and
/// serves AD and CN; checks the counts, the error line and the files.
fn one_fault(
    fault: impl Fn() -> Reply + Send + Sync + 'static,
    extra: &[&str],
    reason: &str,
) -> TestResult {
    let server = FaultServer::start(move |path, _| {
        if path == gif_path("BR") {
            fault()
        } else if path == gif_path("AD") || path == gif_path("CN") {
            Reply::ok(GIF)
        } else {
            Reply::status(404)
        }
    })?;
    for mode in MODES {
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args([
                "AD",
                "BR",
                "CN",
                "-v",
                "--dest",
                "dest",
                "--mode",
                mode,
                "-s",
                &server.url(),
            ])
            .args(extra)
            .assert()
            .code(1)
            .get_output()
            .clone();
        assert_eq!(counts(&output.stdout), (2, 0, 1), "{mode}");
        let stdout = String::from_utf8(output.stdout)?;
        let line = stdout
            .lines()
            .find(|l| l.starts_with("BR error: "))
            .unwrap_or_default();
        assert!(line.contains(reason), "{mode}: {line:?} lacks {reason:?}");
        scratch.assert_clean(2);
        assert_eq!(scratch.saved(), ["AD.gif", "CN.gif"]);
    }
    Ok(())
}

#[test]
fn connection_reset() -> TestResult {
    one_fault(|| Reply::Reset, &[], "")
}

#[test]
fn truncated_body() -> TestResult {
    one_fault(
        || Reply::Truncated {
            declared: 5000,
            body: GIF.to_vec(),
        },
        &[],
        "",
    )
}

#[test]
fn stall_past_the_timeout() -> TestResult {
    one_fault(
        || Reply::Stall(Box::new(Reply::ok(GIF))),
        &["--timeout", "0.3"],
        "timed out after 300ms",
    )
}

#[test]
fn redirect_loop() -> TestResult {
    one_fault(
        || Reply::with_header(302, "Location", &gif_path("BR")),
        &[],
        "too many redirects",
    )
}

#[test]
fn teapot_and_server_errors() -> TestResult {
    one_fault(
        || Reply::status(418),
        &["--retries", "3"],
        "HTTP error 418 - I'm a teapot",
    )?;
    one_fault(
        || Reply::status(500),
        &[],
        "HTTP error 500 - Internal Server Error",
    )
}

#[test]
fn empty_body_is_an_error() -> TestResult {
    one_fault(|| Reply::ok(b""), &[], "empty response body")
}

/// Every mode follows a redirect from an http server to https (the async mode builds its
/// verifying client then): here to a port where nothing listens.
#[test]
fn redirect_to_https_is_followed() -> TestResult {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = FaultServer::start(move |path, _| match path {
        "/flags/br/br.gif" => Reply::with_header(
            302,
            "Location",
            &format!("https://127.0.0.1:{port}/flags/br/br.gif"),
        ),
        _ => Reply::status(404),
    })?;
    for mode in MODES {
        let scratch = Scratch::new()?;
        flags(scratch.path())
            .args(["BR", "-v", "--dest", "dest", "--mode", mode])
            .args(["-s", &server.url()])
            .assert()
            .code(1)
            .stdout(predicate::str::contains(
                "BR error: connection failed: Connection refused (os error 111)\n",
            ));
        scratch.assert_clean(0);
    }
    Ok(())
}

#[test]
fn redirects_are_followed() -> TestResult {
    let server = FaultServer::start(|path, _| match path {
        "/flags/br/br.gif" => Reply::with_header(301, "Location", "/elsewhere/br.gif"),
        "/elsewhere/br.gif" => Reply::ok(GIF),
        _ => Reply::status(404),
    })?;
    for mode in MODES {
        let scratch = Scratch::new()?;
        flags(scratch.path())
            .args(["BR", "--dest", "dest", "--mode", mode, "-s", &server.url()])
            .assert()
            .success();
        scratch.assert_clean(1);
    }
    Ok(())
}

#[test]
fn hostile_country_names_stay_in_dest() -> TestResult {
    let names: &[(&str, &str)] = &[
        ("ad", r#"{"country": "../../etc/x"}"#),
        ("br", r#"{"country": "/tmp/abs\\\\win"}"#),
        ("cn", r#"{"country": ".."}"#),
        ("de", r#"{"country": "a\u0000b\nc"}"#),
        ("fr", r#"{"country": "Fr/../../../ance"}"#),
    ];
    let server = FaultServer::start(move |path, _| {
        for (cc, metadata) in names {
            if path == format!("/flags/{cc}/metadata.json") {
                return Reply::ok(metadata.as_bytes());
            }
            if path == gif_path(cc) {
                return Reply::ok(GIF);
            }
        }
        Reply::status(404)
    })?;
    for mode in MODES {
        let scratch = Scratch::new()?;
        flags(scratch.path())
            .args([
                "AD",
                "BR",
                "CN",
                "DE",
                "FR",
                "--name-by",
                "country",
                "--dest",
                "dest",
                "--mode",
                mode,
                "-s",
                &server.url(),
            ])
            .assert()
            .success()
            .stdout(predicate::str::contains("  5 flags downloaded.\n"));
        assert_eq!(
            scratch.saved(),
            [
                "CN.gif",
                "Fr_._._._ance.gif",
                "_._etc_x.gif",
                "_tmp_abs__win.gif",
                "a_b_c.gif"
            ],
            "{mode}"
        );
        scratch.assert_clean(5);
    }
    Ok(())
}

#[test]
fn retries_recover_from_transient_errors() -> TestResult {
    for mode in MODES {
        // Each server counts its own requests: BR fails twice with 503 (Retry-After: 0), CN is
        // reset once, DE stalls past the timeout once; AA is a 404 and must not be retried.
        let server = FaultServer::start(|path, seen| match (path, seen) {
            ("/flags/br/br.gif", 0 | 1) => Reply::with_header(503, "Retry-After", "0"),
            ("/flags/cn/cn.gif", 0) => Reply::Reset,
            ("/flags/de/de.gif", 0) => Reply::Stall(Box::new(Reply::ok(GIF))),
            ("/flags/br/br.gif" | "/flags/cn/cn.gif" | "/flags/de/de.gif", _) => Reply::ok(GIF),
            _ => Reply::status(404),
        })?;
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args([
                "AA",
                "BR",
                "CN",
                "DE",
                "--retries",
                "2",
                "--timeout",
                "0.5",
                "--dest",
                "dest",
                "--mode",
                mode,
            ])
            .args(["-s", &server.url()])
            .assert()
            .success()
            .get_output()
            .clone();
        assert_eq!(counts(&output.stdout), (3, 1, 0), "{mode}");
        assert_eq!(server.seen("/flags/br/br.gif"), 3, "{mode}");
        assert_eq!(server.seen("/flags/cn/cn.gif"), 2, "{mode}");
        assert_eq!(server.seen("/flags/de/de.gif"), 2, "{mode}");
        assert_eq!(server.seen("/flags/aa/aa.gif"), 1, "{mode}");
        scratch.assert_clean(3);
    }
    Ok(())
}

#[test]
fn retries_give_up() -> TestResult {
    let server = FaultServer::start(|path, _| {
        if path == gif_path("BR") {
            Reply::status(502)
        } else {
            Reply::status(404)
        }
    })?;
    let scratch = Scratch::new()?;
    flags(scratch.path())
        .args([
            "BR",
            "--retries",
            "2",
            "-v",
            "--dest",
            "dest",
            "-s",
            &server.url(),
        ])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "BR error: HTTP error 502 - Bad Gateway\n",
        ));
    assert_eq!(server.seen("/flags/br/br.gif"), 3);
    scratch.assert_clean(0);
    Ok(())
}

#[test]
fn connection_refused_is_an_error() -> TestResult {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    for mode in MODES {
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args([
                "BR",
                "CN",
                "--dest",
                "dest",
                "--mode",
                mode,
                "-s",
                &format!("http://127.0.0.1:{port}/flags"),
            ])
            .assert()
            .code(1)
            .get_output()
            .clone();
        assert_eq!(counts(&output.stdout), (0, 0, 2), "{mode}");
        scratch.assert_clean(0);
    }
    Ok(())
}

/// CRC-32 (IEEE), for the gzip member below.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `body` as a valid gzip member (one stored deflate block): what a server that compresses
/// unasked sends.
fn gzipped(body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255, 1];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&body[..usize::from(len)]);
    out.extend_from_slice(&crc32(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out
}

/// A raw answer closed in order after `bytes`.
fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply::Raw(bytes.into())
}

/// A 200 head with `Transfer-Encoding: chunked` and `body` as one chunk per 64 KiB, with
/// the last chunk only if `complete`.
fn chunked(body: &[u8], complete: bool) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    if complete {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

/// Issue 17, point 9: one behaviour per fault, in every mode. The blocking modes asked for
/// gzip and decoded it while the async mode saved the compressed bytes as the flag; a
/// redirect to `file:` read "too many redirects" or "HTTP error 302"; the same disconnect
/// read `io: Peer disconnected` or `incomplete body`. Every fault below is answered for one
/// code, and every mode must report each with the same line (and save only the good flag).
#[test]
fn issue_17_one_message_per_fault_in_every_mode() -> TestResult {
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let head_of = |extra: &str, body: &[u8]| {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    };
    let redirect = |location: &str| Reply::with_header(302, "Location", location);
    let big = vec![b'a'; 11 << 20];
    // (code, what the server does, the reason every mode must give)
    let table: Vec<(&str, Reply, String)> = vec![
        ("AD", Reply::ok(GIF), String::new()),
        (
            "AE",
            raw(head_of("Content-Encoding: gzip\r\n", &gzipped(GIF))),
            "unsupported content encoding: gzip".into(),
        ),
        (
            "AF",
            redirect("file:///etc/passwd"),
            "unsupported redirect scheme: file".into(),
        ),
        (
            "AG",
            redirect("ftp://127.0.0.1/ag.gif"),
            "unsupported redirect scheme: ftp".into(),
        ),
        (
            "AL",
            redirect(&gif_path("AL")),
            "too many redirects (more than 10)".into(),
        ),
        (
            "AM",
            Reply::status(302),
            "redirect without a Location header".into(),
        ),
        (
            "AO",
            redirect(&format!("http://127.0.0.1:{dead_port}/flags/ao/ao.gif")),
            "connection failed: Connection refused (os error 111)".into(),
        ),
        (
            "AR",
            redirect(&format!("https://127.0.0.1:{dead_port}/flags/ar/ar.gif")),
            "connection failed: Connection refused (os error 111)".into(),
        ),
        (
            "AT",
            raw(""),
            "connection closed before the response".into(),
        ),
        (
            "AU",
            raw("HTTP/1.1 200 OK\r\nContent-Le"),
            "connection closed before the response".into(),
        ),
        (
            "AZ",
            Reply::Reset,
            "connection reset before the response".into(),
        ),
        (
            "BA",
            Reply::Truncated {
                declared: 5000,
                body: GIF.to_vec(),
            },
            format!(
                "incomplete body: connection ended after {} of 5000 bytes",
                GIF.len()
            ),
        ),
        (
            "BD",
            raw(chunked(&[b'a'; 16], false)),
            "incomplete body: connection ended after 16 bytes".into(),
        ),
        (
            "BE",
            raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n".to_vec()),
            "invalid chunked body".into(),
        ),
        (
            "BF",
            raw("HELLO THERE\r\n\r\n"),
            "invalid response head".into(),
        ),
        (
            "BG",
            raw(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\nGIF89a",
                u64::MAX
            )),
            "invalid response head".into(),
        ),
        (
            "BH",
            raw(head_of(&format!("X-Pad: {}\r\n", "a".repeat(20_000)), GIF)),
            "invalid response head".into(),
        ),
        (
            "BI",
            raw("HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Length: 20\r\n\r\nGIF89a"),
            "invalid response head".into(),
        ),
        (
            "BJ",
            raw(format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\nGIF89a",
                20 << 20
            )),
            "body larger than 10485760 bytes".into(),
        ),
        (
            "BN",
            raw(chunked(&big, true)),
            "body larger than 10485760 bytes".into(),
        ),
        (
            "BO",
            Reply::status(418),
            "HTTP error 418 - I'm a teapot".into(),
        ),
    ];
    let replies: Vec<(String, Reply)> = table
        .iter()
        .map(|(cc, reply, _)| (gif_path(cc), reply.clone()))
        .collect();
    let server = FaultServer::start(move |path, _| {
        replies
            .iter()
            .find(|(fault, _)| fault == path)
            .map_or_else(|| Reply::status(404), |(_, reply)| reply.clone())
    })?;
    let codes: Vec<&str> = table.iter().map(|(cc, _, _)| *cc).collect();
    let mut heads: Vec<(&str, Vec<String>)> = Vec::new();
    for mode in MODES {
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args(&codes)
            .args(["-v", "--timeout", "30", "--dest", "dest", "--mode", mode])
            .args(["-s", &server.url()])
            .assert()
            .code(1)
            .get_output()
            .clone();
        let stdout = String::from_utf8(output.stdout)?;
        for (cc, _, reason) in &table {
            let line = stdout
                .lines()
                .find(|line| line.starts_with(&format!("{cc} ")))
                .unwrap_or_default();
            let expected = if reason.is_empty() {
                format!("{cc} OK")
            } else {
                format!("{cc} error: {reason}")
            };
            assert_eq!(line, expected, "{mode}");
        }
        assert_eq!(counts(stdout.as_bytes()), (1, 0, table.len() - 1), "{mode}");
        scratch.assert_clean(1);
        assert_eq!(std::fs::read(scratch.dest().join("AD.gif"))?, GIF, "{mode}");
        // The request every mode sent for AD, its headers sorted (their order is the
        // client's).
        let head = server
            .heads()
            .into_iter()
            .rev()
            .find(|head| head.starts_with(&format!("GET {} ", gif_path("AD"))))
            .ok_or("no request for AD")?;
        let mut lines: Vec<String> = head.lines().map(str::to_ascii_lowercase).collect();
        lines.sort();
        heads.push((mode, lines));
    }
    for (mode, lines) in &heads {
        assert!(
            lines.contains(&"accept-encoding: identity".to_owned()),
            "{mode}: {lines:?}"
        );
        assert_eq!(lines, &heads[0].1, "{mode} against {}", heads[0].0);
    }
    Ok(())
}

/// A server whose `{cc}/metadata.json` names each code's country as `names` says, and whose
/// flag for each code is `GIF89a` followed by the code (so each file tells whose it is).
fn named_server(names: &'static [(&'static str, &'static str)]) -> std::io::Result<FaultServer> {
    FaultServer::start(move |path, _| {
        for (cc, country) in names {
            let lower = cc.to_ascii_lowercase();
            if path == format!("/flags/{lower}/metadata.json") {
                let json = serde_json::json!({ "country": country }).to_string();
                return Reply::ok(json.as_bytes());
            }
            if path == gif_path(cc) {
                return Reply::ok(format!("GIF89a{cc}").as_bytes());
            }
        }
        Reply::status(404)
    })
}

/// Issue 17, point 2: codes whose countries share a name (or whose name is another code's
/// fallback `CC.gif`) overwrote each other: 6 flags reported downloaded, 3 files. A file
/// written in the run is never replaced: the next code to want its name gets `{name}_{CC}.gif`
/// (which code comes first is the schedule's), and the report matches the files.
#[test]
fn issue_17_a_name_taken_in_the_run_is_never_overwritten() -> TestResult {
    const NAMES: &[(&str, &str)] = &[
        ("AD", "Same"),
        ("BR", "Same"),
        ("FR", "Same"),
        ("CN", "DE"),
        ("DE", ".."),
        ("IT", "Italy"),
    ];
    let server = named_server(NAMES)?;
    for mode in MODES {
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args(NAMES.iter().map(|(cc, _)| *cc))
            .args(["--name-by", "country", "--dest", "dest", "--mode", mode])
            .args(["-s", &server.url()])
            .assert()
            .success()
            .get_output()
            .clone();
        assert_eq!(counts(&output.stdout), (6, 0, 0), "{mode}");
        scratch.assert_clean(6);
        let saved = scratch.saved();
        for plain in ["Same.gif", "DE.gif", "Italy.gif"] {
            assert!(saved.contains(&plain.to_owned()), "{mode}: {saved:?}");
        }
        // Every code's flag is in exactly one file, and a suffixed name is its code's.
        let mut owners = Vec::new();
        for name in &saved {
            let body = std::fs::read(scratch.dest().join(name))?;
            let owner = String::from_utf8_lossy(&body[6..]).into_owned();
            if let Some(stem) = name.strip_suffix(".gif")
                && let Some((_, code)) = stem.rsplit_once('_')
            {
                assert_eq!(code, owner, "{mode}: {name}");
            }
            owners.push(owner);
        }
        owners.sort();
        assert_eq!(
            owners,
            ["AD", "BR", "CN", "DE", "FR", "IT"],
            "{mode}: {saved:?}"
        );
    }
    Ok(())
}

/// Issue 17, point 2: names from the server lose their bidirectional overrides and
/// zero-width characters (which make a name read as another), and a Windows device name
/// (`CON`, `NUL`, `COM1`, …) is not left as a stem.
#[test]
fn issue_17_invisible_characters_and_device_names_are_neutralised() -> TestResult {
    const NAMES: &[(&str, &str)] = &[
        ("AD", "Evil\u{202E}fig.exe"),
        ("BR", "Zero\u{200B}Width\u{FEFF}"),
        ("CN", "CON"),
        ("DE", "nul.txt"),
        ("FR", "Lpt1"),
        ("IT", "com\u{00B9}"),
    ];
    let server = named_server(NAMES)?;
    for mode in MODES {
        let scratch = Scratch::new()?;
        flags(scratch.path())
            .args(NAMES.iter().map(|(cc, _)| *cc))
            .args(["--name-by", "country", "--dest", "dest", "--mode", mode])
            .args(["-s", &server.url()])
            .assert()
            .success()
            .stdout(predicate::str::contains("  6 flags downloaded.\n"));
        assert_eq!(
            scratch.saved(),
            [
                "Evil_fig.exe.gif",
                "Zero_Width_.gif",
                "_CON.gif",
                "_Lpt1.gif",
                "_com\u{00B9}.gif",
                "_nul.txt.gif"
            ],
            "{mode}"
        );
        scratch.assert_clean(6);
    }
    Ok(())
}
