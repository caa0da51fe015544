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

/// The async mode's client for an http server has no certificates (see `AsyncClient::new`);
/// the blocking modes follow the redirect and fail on the TLS handshake with a plain server.
#[test]
fn redirect_to_https_is_an_error() -> TestResult {
    let server = FaultServer::start(|path, _| match path {
        "/flags/br/br.gif" => {
            Reply::with_header(302, "Location", "https://127.0.0.1:9/flags/br/br.gif")
        }
        _ => Reply::status(404),
    })?;
    for mode in MODES {
        let scratch = Scratch::new()?;
        let output = flags(scratch.path())
            .args([
                "BR",
                "-v",
                "--dest",
                "dest",
                "--mode",
                mode,
                "-s",
                &server.url(),
            ])
            .assert()
            .code(1)
            .get_output()
            .clone();
        assert_eq!(counts(&output.stdout), (0, 0, 1), "{mode}");
        if mode == "async" {
            let stdout = String::from_utf8(output.stdout)?;
            assert!(stdout.contains("BR error: redirect to https://127.0.0.1:9/flags/br/br.gif (https) from an http server\n"), "{stdout}");
        }
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
