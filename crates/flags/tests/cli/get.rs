//! Issue 15: `flags get` end to end, against servers in this process on loopback: lists with
//! comments, names and bad lines; per-host limits seen at the server; collisions; the
//! journal, `--skip-existing` and unchanged files on a rerun; `kill -9` and resume.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{FaultServer, GIF, Reply, Scratch, TestResult, flags};

/// Only a broken run takes this long.
const BOUND: Duration = Duration::from_secs(120);

/// Every file under `dir` (relative paths, sorted), dot files of `flags get` left out.
fn files(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out.retain(|name| !name.starts_with(".flags-"));
    out
}

/// The `--json` report's counter `key`.
fn count(json: &serde_json::Value, key: &str) -> u64 {
    json[key].as_u64().unwrap_or(u64::MAX)
}

fn run_json(
    scratch: &Scratch,
    args: &[&str],
) -> Result<(i32, serde_json::Value), Box<dyn std::error::Error>> {
    let dest = scratch.dest();
    let output = flags(scratch.path())
        .arg("get")
        .args(args)
        .arg("--dest")
        .arg(&dest)
        .arg("--json")
        .output()?;
    let json = serde_json::from_slice(&output.stdout)?;
    Ok((output.status.code().unwrap_or(-1), json))
}

/// A server of GIFs at every path, except `missing` paths (404).
fn gif_server() -> std::io::Result<FaultServer> {
    FaultServer::start(|path, _| {
        if path.contains("missing") {
            Reply::status(404)
        } else {
            Reply::ok(GIF)
        }
    })
}

fn host(server: &FaultServer) -> String {
    server.url().trim_end_matches("/flags").to_owned()
}

#[test]
fn issue_15_a_list_with_names_comments_and_bad_lines() -> TestResult {
    for mode in ["threads", "async", "processes"] {
        let scratch = Scratch::new()?;
        let server = gif_server()?;
        let base = host(&server);
        let hostdir = base.trim_start_matches("http://").replace(':', "_");
        let list = format!(
            "# a comment\n\n{base}/a/b.gif\n{base}/c.gif   given/name.gif\n{base}/missing.gif\n\
             ftp://h/x\nfile:///etc/passwd\n{base}/\nnot-a-url\n{base}/d.gif ../escape\n\
             {base}/a/b.gif\n{base}/e.gif\x00\n"
        );
        std::fs::write(scratch.path().join("list"), list)?;
        let (code, json) = run_json(&scratch, &["-i", "list", "--mode", mode])?;
        assert_eq!(code, 1, "{mode}: {json}");
        assert_eq!(count(&json, "saved"), 2, "{mode}: {json}");
        assert_eq!(count(&json, "not_found"), 1, "{mode}: {json}");
        // The second a/b.gif: its name was taken in this run.
        assert_eq!(count(&json, "errors"), 1, "{mode}: {json}");
        assert_eq!(count(&json, "bad_lines"), 6, "{mode}: {json}");
        let expected: BTreeSet<String> =
            [format!("{hostdir}/a/b.gif"), "given/name.gif".to_owned()].into();
        assert_eq!(files(&scratch.dest()), expected, "{mode}");
        let failed = std::fs::read_to_string(scratch.dest().join(".flags-failed"))?;
        for needle in [
            "# line 5: not found",
            "# line 6: unsupported scheme ftp",
            "# line 7: unsupported scheme file",
            "# line 8: URL without a file name",
            "# line 9: invalid URL",
            "# line 10: NAME ../escape escapes --dest",
            // Line 3 or 11, whichever the schedule names second.
            ": cannot save",
            "# line 12: a NUL byte",
        ] {
            assert!(failed.contains(needle), "{mode}: {needle} not in\n{failed}");
        }
        // The failures are a list again: the 404 and the collision, URL and name.
        let entries: Vec<&str> = failed.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(entries.len(), 2, "{failed}");
        assert!(entries[0].starts_with(&base), "{failed}");
        let list = scratch.path().join("list");
        assert_eq!(scratch.outside_dest(), [list], "written outside --dest");
    }
    Ok(())
}

#[test]
fn issue_15_usage_errors_exit_2() -> TestResult {
    let scratch = Scratch::new()?;
    for args in [
        &["get"][..],
        &["get", "-i", "no-such-list"],
        &["get", "-i", "."],
        &["get", "-i", "l", "http://h/x"],
        &["get", "--max-size", "lots", "http://h/x"],
        &["get", "-m", "0", "http://h/x"],
    ] {
        let output = flags(scratch.path()).args(args).output()?;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("Usage"), "{args:?}: {stderr}");
    }
    Ok(())
}

#[test]
fn issue_15_urls_on_the_command_line_and_stdin() -> TestResult {
    let scratch = Scratch::new()?;
    let server = gif_server()?;
    let base = host(&server);
    let (code, json) = run_json(
        &scratch,
        &[&format!("{base}/x.gif"), &format!("{base}/y.gif")],
    )?;
    assert_eq!((code, count(&json, "saved")), (0, 2), "{json}");
    let output = flags(scratch.path())
        .args(["get", "-i", "-", "--json", "--dest", "dest2"])
        .write_stdin(format!("{base}/z.gif z.gif\n"))
        .output()?;
    assert!(output.status.success());
    assert_eq!(std::fs::read(scratch.path().join("dest2/z.gif"))?, GIF);
    Ok(())
}

#[test]
fn issue_15_a_slow_host_holds_only_its_own_slots() -> TestResult {
    let scratch = Scratch::new()?;
    let slow = FaultServer::start(|_, _| Reply::Stall(Box::new(Reply::ok(GIF))))?;
    let fast = gif_server()?;
    let (slow_base, fast_base) = (host(&slow), host(&fast));
    let mut list = String::new();
    for i in 0..6 {
        list += &format!("{slow_base}/s{i}.gif\n");
    }
    for i in 0..3 {
        list += &format!("{fast_base}/f{i}.gif\n");
    }
    std::fs::write(scratch.path().join("list"), list)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flags"))
        .current_dir(scratch.path())
        .args([
            "get",
            "-i",
            "list",
            "-m",
            "10",
            "--max-per-host",
            "2",
            "--dest",
            "dest",
        ])
        .stdout(Stdio::null())
        .spawn()?;
    // The fast host's three are all asked for while the slow host holds its two.
    for _ in 0..3 {
        assert!(fast.next_request(BOUND).is_some());
    }
    for _ in 0..2 {
        assert!(slow.next_request(BOUND).is_some());
    }
    assert_eq!(
        slow.heads().len(),
        2,
        "the slow host got more than --max-per-host"
    );
    slow.open_gate();
    let status = child.wait()?;
    assert!(status.success());
    assert_eq!(slow.heads().len(), 6);
    assert_eq!(files(&scratch.dest()).len(), 9);
    Ok(())
}

#[test]
fn issue_15_reruns_skip_journalled_keep_unchanged_and_skip_existing() -> TestResult {
    let scratch = Scratch::new()?;
    let server = gif_server()?;
    let base = host(&server);
    let list: String = (0..20)
        .map(|i| format!("{base}/f{i}.gif n/{i}.gif\n"))
        .collect();
    std::fs::write(scratch.path().join("list"), list)?;
    let (_, json) = run_json(&scratch, &["-i", "list"])?;
    assert_eq!(count(&json, "saved"), 20, "{json}");
    let inode = |i: u32| -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(scratch.dest().join(format!("n/{i}.gif")))?.ino())
    };
    let before = inode(3)?;

    // The journal: nothing is asked for again.
    let (code, json) = run_json(&scratch, &["-i", "list"])?;
    assert_eq!((code, count(&json, "journalled")), (0, 20), "{json}");
    assert_eq!(server.heads().len(), 20);

    // Without the journal: every file is fetched, found the same, and kept as it was.
    std::fs::remove_file(scratch.dest().join(".flags-journal"))?;
    let (_, json) = run_json(&scratch, &["-i", "list"])?;
    assert_eq!(count(&json, "unchanged"), 20, "{json}");
    assert_eq!(inode(3)?, before, "an unchanged file was replaced");
    assert_eq!(server.heads().len(), 40);

    // --skip-existing: no request at all.
    std::fs::remove_file(scratch.dest().join(".flags-journal"))?;
    let (_, json) = run_json(&scratch, &["-i", "list", "--skip-existing"])?;
    assert_eq!(count(&json, "existing"), 20, "{json}");
    assert_eq!(server.heads().len(), 40);
    Ok(())
}

#[test]
fn issue_15_kill_9_then_resume_gives_the_exact_file_set() -> TestResult {
    const N: usize = 60;
    const FIRST: usize = 30;
    let scratch = Scratch::new()?;
    // The first 30 answer at once; the rest wait until the gate opens (never, in the first run).
    let server = FaultServer::start(|path, _| {
        let n: usize = path
            .trim_start_matches("/f")
            .trim_end_matches(".gif")
            .parse()
            .unwrap_or(0);
        if n < FIRST {
            Reply::ok(GIF)
        } else {
            Reply::Stall(Box::new(Reply::ok(GIF)))
        }
    })?;
    let base = host(&server);
    let list: String = (0..N)
        .map(|i| format!("{base}/f{i}.gif {i}.gif\n"))
        .collect();
    std::fs::write(scratch.path().join("list"), list)?;
    let args = [
        "get",
        "-i",
        "list",
        "-m",
        "4",
        "--max-per-host",
        "4",
        "--dest",
        "dest",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_flags"))
        .current_dir(scratch.path())
        .args(args)
        .stdout(Stdio::null())
        .spawn()?;
    // Every slot is held by a stalled download: the first 30 are done.
    let mut stalled = 0;
    while stalled < 4 {
        let path = server
            .next_request(BOUND)
            .ok_or("the child sent no request")?;
        stalled += usize::from(
            !path.starts_with("/f")
                || path[2..]
                    .trim_end_matches(".gif")
                    .parse::<usize>()
                    .unwrap_or(0)
                    >= FIRST,
        );
    }
    // The journal is committed while nothing finishes (a liveness bound, not a timing).
    let journal = scratch.dest().join(".flags-journal");
    let waited = std::time::Instant::now();
    while std::fs::read_to_string(&journal)
        .unwrap_or_default()
        .lines()
        .count()
        < FIRST
    {
        assert!(waited.elapsed() < BOUND, "the journal was never committed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill()?;
    child.wait()?;
    assert_eq!(
        files(&scratch.dest()).len(),
        FIRST,
        "no partial file after kill -9"
    );

    server.open_gate();
    let output = flags(scratch.path()).args(args).arg("--json").output()?;
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(count(&json, "journalled"), FIRST as u64, "{json}");
    assert_eq!(count(&json, "saved"), (N - FIRST) as u64, "{json}");
    let expected: BTreeSet<String> = (0..N).map(|i| format!("{i}.gif")).collect();
    assert_eq!(files(&scratch.dest()), expected);
    for i in 0..N {
        assert_eq!(std::fs::read(scratch.dest().join(format!("{i}.gif")))?, GIF);
        if i < FIRST {
            assert_eq!(server.seen(&format!("/f{i}.gif")), 1, "f{i} fetched again");
        }
    }
    Ok(())
}

/// Runs `flags get` on a list of `n` URLs to the built-in flag set (one in 100 a flag saved
/// under a name of its own, the rest 404s, so that the run stays short and `.flags-failed`
/// gets most of the list) and returns the child's peak resident memory (`VmHWM`), read from
/// `/proc` while it runs.
fn peak_rss_of_list(n: usize) -> Result<u64, Box<dyn std::error::Error>> {
    use std::io::Write as _;
    let server = slow_server::start(slow_server::ServerConfig::new())?;
    let flags_url = server.flags_url();
    let scratch = Scratch::new()?;
    let mut list = std::io::BufWriter::new(std::fs::File::create(scratch.path().join("list"))?);
    for i in 0..n {
        if i % 100 == 0 {
            writeln!(list, "{flags_url}/br/br.gif n/{i}.gif")?;
        } else {
            writeln!(list, "{flags_url}/x{i}/x.gif")?;
        }
    }
    list.into_inner()?.sync_all()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_flags"))
        .current_dir(scratch.path())
        .args(["get", "-i", "list", "--dest", "dest", "--json"])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut peak = 0;
    let started = std::time::Instant::now();
    // VmHWM only grows: the last reading before the exit is the peak but for the last
    // moments, which write the report.
    while child.try_wait()?.is_none() {
        peak = peak.max(crate::memory::status_bytes(pid, "VmHWM"));
        assert!(started.elapsed() < 10 * BOUND, "flags get did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output()?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(count(&json, "saved"), n.div_ceil(100) as u64, "{json}");
    assert_eq!(
        count(&json, "not_found"),
        (n - n.div_ceil(100)) as u64,
        "{json}"
    );
    let failed = std::fs::read_to_string(scratch.dest().join(".flags-failed"))?;
    assert_eq!(failed.lines().count(), 2 * (n - n.div_ceil(100)));
    server.shutdown();
    Ok(peak)
}

#[test]
fn issue_15_peak_memory_is_flat_from_10k_to_100k_urls() -> TestResult {
    const MIB: u64 = 1 << 20;
    let small = peak_rss_of_list(10_000)?;
    let large = peak_rss_of_list(100_000)?;
    eprintln!(
        "flags get peak RSS: {:.1} MiB for 10,000 URLs, {:.1} MiB for 100,000",
        small as f64 / MIB as f64,
        large as f64 / MIB as f64
    );
    assert!(small > 0 && large > 0, "no VmHWM read");
    assert!(
        large < small + 4 * MIB,
        "peak RSS grows with the list: {small} B for 10k URLs, {large} B for 100k"
    );
    Ok(())
}

#[test]
fn issue_15_a_body_far_larger_than_memory_is_streamed_and_capped() -> TestResult {
    const MIB: u64 = 1 << 20;
    const SIZE: u64 = 200 * MIB;
    let served = tempfile::tempdir()?;
    std::fs::create_dir(served.path().join("big"))?;
    // Sparse: 200 MiB served, nothing written on the server's side.
    std::fs::File::create(served.path().join("big/big.gif"))?.set_len(SIZE)?;
    let server = slow_server::start(slow_server::ServerConfig::new().dir(served.path()))?;
    let url = format!("{}/big/big.gif", server.flags_url());
    let scratch = Scratch::new()?;

    let mut child = Command::new(env!("CARGO_BIN_EXE_flags"))
        .current_dir(scratch.path())
        .args(["get", &url, "--dest", "dest", "--json"])
        .stdout(Stdio::piped())
        .spawn()?;
    let (pid, mut peak) = (child.id(), 0);
    let started = std::time::Instant::now();
    while child.try_wait()?.is_none() {
        peak = peak.max(crate::memory::status_bytes(pid, "VmHWM"));
        assert!(started.elapsed() < BOUND, "flags get did not finish");
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output()?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(count(&json, "saved"), 1, "{json}");
    let name = url.trim_start_matches("http://").replacen(':', "_", 1);
    assert_eq!(std::fs::metadata(scratch.dest().join(name))?.len(), SIZE);
    assert!(
        peak < 64 * MIB,
        "peak RSS {peak} B while saving a 200 MiB body"
    );

    let output = flags(scratch.path())
        .args(["get", &url, "--dest", "capped", "--max-size", "1M", "-v"])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("body larger than 1048576 bytes"),
        "{stdout}"
    );
    assert!(files(&scratch.path().join("capped")).is_empty());
    Ok(())
}

#[test]
fn issue_15_timestamping_asks_if_modified_since_and_keeps_the_servers_date() -> TestResult {
    const DATE: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
    for mode in ["threads", "async"] {
        let scratch = Scratch::new()?;
        let server = FaultServer::start(|_, count| {
            if count == 0 {
                Reply::Full {
                    status: 200,
                    headers: vec![("Last-Modified".into(), DATE.into())],
                    body: GIF.to_vec(),
                }
            } else {
                Reply::with_header(304, "Last-Modified", DATE)
            }
        })?;
        let url = format!("{}/t.gif", host(&server));
        let (code, json) = run_json(&scratch, &[&url, "-N", "--mode", mode])?;
        assert_eq!((code, count(&json, "saved")), (0, 1), "{mode}: {json}");
        let name = url.trim_start_matches("http://").replacen(':', "_", 1);
        let saved = scratch.dest().join(name);
        let modified = std::fs::metadata(&saved)?.modified()?;
        let since_epoch = modified.duration_since(std::time::UNIX_EPOCH)?.as_secs();
        assert_eq!(
            since_epoch, 1_445_412_480,
            "{mode}: mtime is not Last-Modified"
        );

        std::fs::remove_file(scratch.dest().join(".flags-journal"))?;
        let (code, json) = run_json(&scratch, &[&url, "-N", "--mode", mode])?;
        assert_eq!((code, count(&json, "unchanged")), (0, 1), "{mode}: {json}");
        let heads = server.heads();
        assert_eq!(heads.len(), 2);
        assert!(
            heads[1]
                .to_ascii_lowercase()
                .contains(&format!("if-modified-since: {}", DATE.to_ascii_lowercase())),
            "{mode}: {}",
            heads[1]
        );
        assert_eq!(std::fs::read(&saved)?, GIF);
    }
    Ok(())
}

#[test]
fn issue_15_ctrl_c_stops_reading_the_list_and_a_rerun_finishes_it() -> TestResult {
    use std::io::BufRead as _;
    for mode in ["threads", "async", "processes"] {
        let scratch = Scratch::new()?;
        let server = FaultServer::start(|_, _| Reply::Stall(Box::new(Reply::ok(GIF))))?;
        let base = host(&server);
        let list: String = (0..10)
            .map(|i| format!("{base}/f{i}.gif {i}.gif\n"))
            .collect();
        std::fs::write(scratch.path().join("list"), list)?;
        let args = [
            "get", "-i", "list", "-m", "2", "--dest", "dest", "--mode", mode,
        ];
        let mut child = Command::new(env!("CARGO_BIN_EXE_flags"))
            .current_dir(scratch.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        assert_eq!(server.wait_for_requests(2).len(), 2);
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()?;
        assert!(status.success());
        let mut stderr = std::io::BufReader::new(child.stderr.take().ok_or("stderr")?);
        let mut line = String::new();
        while !line.contains("*** Interrupted") && stderr.read_line(&mut line)? > 0 {}
        assert!(line.contains("*** Interrupted"), "{mode}: {line:?}");
        // The two in flight finish and are counted; nothing else starts.
        server.open_gate();
        let output = child.wait_with_output()?;
        assert_eq!(output.status.code(), Some(130), "{mode}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("2 saved") && stdout.contains("Interrupted by Ctrl-C."),
            "{mode}: {stdout}"
        );
        assert_eq!(server.heads().len(), 2, "{mode}");

        let (code, json) = run_json(&scratch, &["-i", "list", "-m", "2", "--mode", mode])?;
        assert_eq!(code, 0, "{mode}: {json}");
        assert_eq!(
            (count(&json, "journalled"), count(&json, "saved")),
            (2, 8),
            "{mode}: {json}"
        );
        assert_eq!(files(&scratch.dest()).len(), 10);
    }
    Ok(())
}

#[test]
fn issue_15_lying_servers_fail_one_url_each_and_leave_no_file() -> TestResult {
    for mode in ["threads", "async"] {
        let scratch = Scratch::new()?;
        let server = FaultServer::start(|path, _| match path {
            "/short.gif" => Reply::Truncated {
                declared: 5000,
                body: GIF.to_vec(),
            },
            "/scheme.gif" => Reply::with_header(302, "Location", "file:///etc/passwd"),
            "/reset.gif" => Reply::Reset,
            _ => Reply::ok(GIF),
        })?;
        let base = host(&server);
        let list =
            format!("{base}/short.gif\n{base}/scheme.gif\n{base}/reset.gif\n{base}/ok.gif\n");
        std::fs::write(scratch.path().join("list"), list)?;
        let output = flags(scratch.path())
            .args(["get", "-i", "list", "--dest", "dest", "-v", "--mode", mode])
            .output()?;
        assert_eq!(output.status.code(), Some(1), "{mode}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        for needle in [
            "short.gif error: incomplete body: connection ended after 14 of 5000 bytes",
            "scheme.gif error: unsupported redirect scheme: file",
            "reset.gif error: connection reset before the response",
            "ok.gif OK",
        ] {
            assert!(stdout.contains(needle), "{mode}: {needle} not in\n{stdout}");
        }
        let hostdir = base.trim_start_matches("http://").replace(':', "_");
        let expected: BTreeSet<String> = [format!("{hostdir}/ok.gif")].into();
        assert_eq!(files(&scratch.dest()), expected, "{mode}: a partial file");
    }
    Ok(())
}

/// A 2 MiB body whose bytes say where they are.
fn big_body() -> Vec<u8> {
    (0..2u32 << 20).map(|i| (i % 251) as u8).collect()
}

/// Runs `flags get URL NAME` (from a list) in `mode`, returning the exit status.
fn get_big(
    scratch: &Scratch,
    url: &str,
    mode: &str,
) -> Result<Option<i32>, Box<dyn std::error::Error>> {
    std::fs::write(scratch.path().join("list"), format!("{url} big.bin\n"))?;
    let output = flags(scratch.path())
        .args(["get", "-i", "list", "--dest", "dest", "--mode", mode])
        .output()?;
    Ok(output.status.code())
}

#[test]
fn issue_15_an_interrupted_large_body_resumes_with_range() -> TestResult {
    const HALF: usize = 1 << 20;
    for mode in ["threads", "async"] {
        for honours_range in [true, false] {
            let body = big_body();
            let scratch = Scratch::new()?;
            let server = FaultServer::start(move |_, count| {
                let body = big_body();
                let head = |status: &str, extra: &str, len: usize| {
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nETag: \"v1\"\r\n{extra}\r\n"
                    )
                    .into_bytes()
                };
                match count {
                    // The connection ends half-way.
                    0 => {
                        Reply::Raw([head("200 OK", "", body.len()), body[..HALF].to_vec()].concat())
                    }
                    1 if honours_range => {
                        let range = format!(
                            "Content-Range: bytes {HALF}-{}/{}\r\n",
                            body.len() - 1,
                            body.len()
                        );
                        Reply::Raw(
                            [
                                head("206 Partial Content", &range, body.len() - HALF),
                                body[HALF..].to_vec(),
                            ]
                            .concat(),
                        )
                    }
                    _ => Reply::Raw([head("200 OK", "", body.len()), body.clone()].concat()),
                }
            })?;
            let url = format!("{}/big", host(&server));
            assert_eq!(get_big(&scratch, &url, mode)?, Some(1), "{mode}");
            assert!(
                files(&scratch.dest()).is_empty(),
                "{mode}: a partial file under its name"
            );

            assert_eq!(get_big(&scratch, &url, mode)?, Some(0), "{mode}");
            assert_eq!(
                std::fs::read(scratch.dest().join("big.bin"))?,
                body,
                "{mode}"
            );
            let heads = server.heads();
            let second = heads[1].to_ascii_lowercase();
            assert!(second.contains("range: bytes=1048576-"), "{mode}: {second}");
            assert!(second.contains("if-range: \"v1\""), "{mode}: {second}");
            // Resumed: two requests; not honoured: the resume, then the whole body again.
            assert_eq!(heads.len(), if honours_range { 2 } else { 3 }, "{mode}");
            let partial: Vec<_> = std::fs::read_dir(scratch.dest().join(".flags-partial"))?
                .flatten()
                .collect();
            assert!(partial.is_empty(), "{mode}: {partial:?} left");
        }
    }
    Ok(())
}

#[test]
fn issue_15_a_retry_waits_outside_the_slots() -> TestResult {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    for mode in ["threads", "async", "processes"] {
        let served_b = Arc::new(AtomicUsize::new(0));
        let b = FaultServer::start({
            let served_b = Arc::clone(&served_b);
            move |_, _| {
                served_b.fetch_add(1, Ordering::SeqCst);
                Reply::ok(GIF)
            }
        })?;
        // Busy at first (Retry-After: 1); the retry succeeds only if host b was served
        // meanwhile, on the one slot (-m 1) the retry did not hold.
        let a = FaultServer::start({
            let served_b = Arc::clone(&served_b);
            move |_, count| match count {
                0 => Reply::with_header(503, "Retry-After", "1"),
                _ if served_b.load(Ordering::SeqCst) == 2 => Reply::ok(GIF),
                _ => Reply::status(500),
            }
        })?;
        let scratch = Scratch::new()?;
        let list = format!(
            "{}/busy.gif\n{}/x.gif\n{}/y.gif\n",
            host(&a),
            host(&b),
            host(&b)
        );
        std::fs::write(scratch.path().join("list"), list)?;
        let (code, json) = run_json(
            &scratch,
            &["-i", "list", "-m", "1", "--retries", "1", "--mode", mode],
        )?;
        assert_eq!((code, count(&json, "saved")), (0, 3), "{mode}: {json}");
        assert_eq!(a.heads().len(), 2, "{mode}");
    }
    Ok(())
}

#[test]
fn issue_15_trace_has_a_line_per_entry() -> TestResult {
    let scratch = Scratch::new()?;
    let server = gif_server()?;
    let base = host(&server);
    let list = format!("{base}/a.gif\n{base}/missing.gif\n{base}/b.gif\n");
    std::fs::write(scratch.path().join("list"), list)?;
    let (code, _) = run_json(&scratch, &["-i", "list", "--trace", "trace.jsonl"])?;
    assert_eq!(code, 1);
    let text = std::fs::read_to_string(scratch.path().join("trace.jsonl"))?;
    let mut lines = flags_engine::parse_trace(&text)?;
    lines.sort_by(|a, b| a.code.cmp(&b.code));
    let seen: Vec<(String, flags_engine::DownloadStatus)> =
        lines.iter().map(|l| (l.code.clone(), l.outcome)).collect();
    assert_eq!(
        seen,
        [
            (format!("{base}/a.gif"), flags_engine::DownloadStatus::Ok),
            (format!("{base}/b.gif"), flags_engine::DownloadStatus::Ok),
            (
                format!("{base}/missing.gif"),
                flags_engine::DownloadStatus::NotFound
            ),
        ]
    );
    assert!(lines.iter().all(|l| l.end >= l.start && l.attempts == 1));
    Ok(())
}
