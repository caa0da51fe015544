//! Usage errors (exit 2, `*** Usage error: …` and the usage line) and other exit statuses.

use predicates::prelude::*;

use crate::util::{FaultServer, GIF, Reply, Scratch, TestResult, counts, flags, gif_path};

#[test]
fn usage_errors_exit_2() -> TestResult {
    let scratch = Scratch::new()?;
    std::fs::write(scratch.path().join("file"), b"x")?;
    for (args, reason) in [
        (&["ABC"][..], "invalid country code \"ABC\""),
        (&["B1"], "invalid country code"),
        (&["-m", "0"], "--max-req must be at least 1"),
        (&["-l", "0"], "--limit must be at least 1"),
        (&["-s", "NOWHERE"], "unknown server \"NOWHERE\""),
        (&["-s", "ftp://example.com"], "unknown server"),
        (&["--timeout", "0"], "--timeout"),
        (&["--dest", "file"], "cannot write to --dest file"),
        (&["--dest", "file/below"], "cannot write to --dest"),
    ] {
        flags(scratch.path())
            .args(args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(predicate::str::starts_with(format!(
                "*** Usage error: {reason}"
            )))
            .stderr(predicate::str::contains("\nUsage: flags [OPTIONS] [CC]..."));
    }
    assert!(!scratch.path().join("downloaded").exists());
    Ok(())
}

#[test]
fn clap_errors_exit_2() -> TestResult {
    let scratch = Scratch::new()?;
    for args in [
        &["-a", "-e"][..],
        &["-a", "BR"],
        &["--mode", "fast"],
        &["-m", "x"],
        &["--bogus"],
    ] {
        flags(scratch.path()).args(args).assert().code(2).stdout("");
    }
    flags(scratch.path())
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("--max-req"));
    Ok(())
}

#[test]
fn not_found_alone_exits_0() -> TestResult {
    let scratch = Scratch::new()?;
    flags(scratch.path())
        .args(["AA", "--dest", "dest"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "  0 flags downloaded.\n  1 not found.\n",
        ));
    scratch.assert_clean(0);
    Ok(())
}

#[test]
fn dest_is_created() -> TestResult {
    let scratch = Scratch::new()?;
    flags(scratch.path())
        .args(["BR", "--dest", "dest/a/b"])
        .assert()
        .success();
    assert!(scratch.dest().join("a/b/BR.gif").is_file());
    Ok(())
}

/// A pipe whose reading end is already closed: every write to it fails with `EPIPE`.
fn closed_pipe() -> std::io::Result<std::process::Stdio> {
    let (reader, writer) = std::io::pipe()?;
    drop(reader);
    Ok(writer.into())
}

/// Issue 17, point 5: `flags --timeout 0 2>&1 | (exec 0<&-; …)` exited 101, a panic of
/// `eprintln!` writing the usage error to a closed stderr. A diagnostic that cannot be
/// written is dropped; the exit status stays the command's own.
#[test]
fn issue_17_a_closed_stderr_never_turns_an_exit_status_into_a_panic() -> TestResult {
    let scratch = Scratch::new()?;
    std::fs::write(scratch.path().join("file"), b"x")?;
    let server = FaultServer::start(|path, _| {
        if path == gif_path("BR") {
            Reply::ok(GIF)
        } else {
            Reply::status(418)
        }
    })?;
    let url = server.url();
    let cases: [(&[&str], i32); 7] = [
        (&["--timeout", "0"], 2),
        (&["-m", "0"], 2),
        (&["--dest", "/dev/null"], 2),
        (&["--dest", "file"], 2),
        (&["--bogus"], 2),
        // -v lines go to stderr with --json; the error of CN decides the status.
        (
            &["BR", "CN", "-v", "--json", "--dest", "dest", "-s", &url],
            1,
        ),
        (&["BR", "-v", "--json", "--dest", "dest", "-s", &url], 0),
    ];
    for (args, expected) in cases {
        for mode in ["sequential", "threads", "async", "processes"] {
            let status = std::process::Command::new(env!("CARGO_BIN_EXE_flags"))
                .current_dir(scratch.path())
                .args(args)
                .args(["--mode", mode])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(closed_pipe()?)
                .status()?;
            assert_eq!(status.code(), Some(expected), "{args:?} --mode {mode}");
        }
    }
    Ok(())
}

/// Issue 17, point 5, for `flags serve`: its "Press Ctrl-C to stop." line to a closed
/// stderr panicked the server right after its banner. It must go on serving.
#[test]
fn issue_17_flags_serve_outlives_a_closed_stderr() -> TestResult {
    use std::io::{BufRead, Read, Write};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flags"))
        .args(["serve", "--port", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(closed_pipe()?)
        .spawn()?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().ok_or("stdout")?);
    let mut banner = String::new();
    stdout.read_line(&mut banner)?;
    let authority = banner
        .split_whitespace()
        .find_map(|word| word.strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("no URL in {banner:?}"))?
        .to_owned();
    let answer = std::net::TcpStream::connect(&authority).and_then(|mut stream| {
        stream
            .write_all(b"GET /flags/br/br.gif HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        Ok(answer)
    });
    let _ = child.kill();
    let status = child.wait()?;
    let answer = answer?;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}; the server ended with {status}",
        String::from_utf8_lossy(&answer)
    );
    Ok(())
}

/// Issue 17, point 10: `--trace FILE` is checked before any download, as `--dest` is: a
/// trace that cannot be written is a usage error, and the server sees no request. It used to
/// be found out after the whole run (exit 1, the downloads done and their trace lost).
#[test]
fn issue_17_trace_is_checked_before_downloading() -> TestResult {
    let server = FaultServer::start(|_, _| Reply::ok(GIF))?;
    for trace in ["missing/trace.jsonl", "dest"] {
        for mode in ["sequential", "threads", "async", "processes"] {
            let scratch = Scratch::new()?;
            flags(scratch.path())
                .args(["BR", "--dest", "dest", "--trace", trace, "--mode", mode])
                .args(["-s", &server.url()])
                .assert()
                .code(2)
                .stdout("")
                .stderr(predicate::str::starts_with(format!(
                    "*** Usage error: cannot write to --trace {trace}: "
                )));
            scratch.assert_clean(0);
        }
    }
    assert_eq!(server.seen(&gif_path("BR")), 0);
    Ok(())
}

/// Runs `flags ARGS` with `dest` a fresh tmpfs of `inodes` inodes, filled up with zeros
/// first, in a user and mount namespace of its own (`unshare -Urm`); `None` where this
/// system allows no such namespace.
fn flags_on_a_full_file_system(
    scratch: &Scratch,
    inodes: u32,
    args: &[&str],
) -> Result<Option<std::process::Output>, Box<dyn std::error::Error>> {
    let usable = std::process::Command::new("unshare")
        .args(["-Urm", "true"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !usable {
        eprintln!("skipped: `unshare -Urm` is not available here");
        return Ok(None);
    }
    let script = format!(
        "mount -t tmpfs -o size=64k,nr_inodes={inodes} flags-test dest \
         && {{ {{ head -c 1000000 /dev/zero > dest/fill; }} 2>/dev/null; \
         exec \"$0\" --dest dest \"$@\"; }}"
    );
    let output = std::process::Command::new("unshare")
        .current_dir(scratch.path())
        .args(["-Urm", "sh", "-c", &script, env!("CARGO_BIN_EXE_flags")])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()?;
    Ok(Some(output))
}

/// Issue 17, point 10: a full file system is a run-time error (exit status 1), never a
/// usage error. With no inode left, `--dest` cannot even be probed: the run stops before
/// downloading (it was `*** Usage error`, exit 2). With inodes but no blocks, each save
/// fails and is counted as an error of its code, and nothing but the filler is left.
#[test]
fn issue_17_a_full_file_system_is_a_run_time_error() -> TestResult {
    let server = FaultServer::start(|path, _| {
        if path == gif_path("BR") {
            Reply::ok(GIF)
        } else {
            Reply::status(404)
        }
    })?;
    for mode in ["sequential", "threads", "async", "processes"] {
        let scratch = Scratch::new()?;
        let args = ["BR", "AA", "-v", "--mode", mode, "-s", &server.url()];
        // The root directory takes the only inode: no file can be created.
        let Some(output) = flags_on_a_full_file_system(&scratch, 1, &args)? else {
            return Ok(());
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{mode}: {stderr}");
        assert!(
            stderr.starts_with("flags: cannot write to --dest dest: ")
                && stderr.contains("No space left on device"),
            "{mode}: {stderr}"
        );
        assert_eq!(output.stdout, b"", "{mode}");

        // Inodes left, blocks not: every save fails with ENOSPC.
        let Some(output) = flags_on_a_full_file_system(&scratch, 100, &args)? else {
            return Ok(());
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(1), "{mode}: {stdout}");
        assert_eq!(counts(&output.stdout), (0, 1, 1), "{mode}: {stdout}");
        assert!(
            stdout.contains("\nBR error: cannot save BR.gif: No space left on device"),
            "{mode}: {stdout}"
        );
    }
    assert_eq!(server.seen(&gif_path("BR")), 4);
    Ok(())
}
