//! `flags serve` end to end: bad options exit with status 2 and one line on stderr; a server
//! started with `--port 0` prints its URL, serves, and stops cleanly on Ctrl-C (SIGINT).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn flags() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flags"))
}

/// Runs `flags serve ARGS...`, expecting a quick failure; returns the status and stderr.
fn serve_fails(args: &[&str]) -> (Option<i32>, String) {
    let output = flags()
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run flags");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_usage_error(args: &[&str], expected: &str) {
    let (code, stderr) = serve_fails(args);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    assert!(
        stderr.contains(expected),
        "{args:?}: {stderr:?} lacks {expected:?}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn bad_options_exit_2_with_one_line() {
    assert_usage_error(
        &["--port", "0", "--min-delay", "-1"],
        "invalid --min-delay -1",
    );
    assert_usage_error(
        &["--port", "0", "--max-delay", "-0.5"],
        "invalid --max-delay -0.5",
    );
    assert_usage_error(
        &["--port", "0", "--min-delay", "NaN"],
        "invalid --min-delay",
    );
    assert_usage_error(
        &["--port", "0", "--min-delay", "inf"],
        "invalid --min-delay",
    );
    assert_usage_error(
        &["--port", "0", "--min-delay", "3", "--max-delay", "1"],
        "minimum (3 s) is greater than the maximum (1 s)",
    );
    assert_usage_error(
        &["--port", "0", "--error-rate", "1.5"],
        "invalid error rate 1.5",
    );
    assert_usage_error(
        &["--port", "0", "--error-rate", "-0.1"],
        "invalid error rate -0.1",
    );
    assert_usage_error(&["--error-rate", "0.5"], "--error-rate needs --port");
    assert_usage_error(&["--min-delay", "1"], "--min-delay needs --port");
    assert_usage_error(
        &["--port", "0", "--dir", "/nonexistent/flags-dir"],
        "cannot serve directory /nonexistent/flags-dir",
    );
}

#[test]
fn a_port_in_use_exits_2() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    assert_usage_error(
        &["--port", &port],
        &format!("cannot listen on 127.0.0.1:{port}"),
    );
}

#[test]
fn unparsable_values_exit_2_without_a_panic() {
    for args in [
        &["--port", "99999"][..],
        &["--port", "x"],
        &["--bind", "not-an-address"],
        &["--seed", "-1"],
        &["--min-delay", "soon", "--port", "0"],
        &["--no-such-option"],
    ] {
        let (code, stderr) = serve_fails(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[cfg(unix)]
#[test]
fn serves_on_port_0_and_stops_on_ctrl_c() {
    let mut child = flags()
        .args(["serve", "--port", "0", "--seed", "1", "--error-rate", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flags serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("banner");
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    assert!(url.ends_with("/flags"), "{url}");
    let authority = url.trim_start_matches("http://").trim_end_matches("/flags");

    let mut stream = TcpStream::connect(authority).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(b"GET /flags/br/metadata.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("receive");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("\"country\": \"Brazil\""));

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "flags serve did not stop cleanly");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
