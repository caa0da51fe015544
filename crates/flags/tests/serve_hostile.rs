//! `flags serve` against hostile clients, observed from outside (issue 17): the server runs as
//! a child process, so that its memory (`/proc/PID/status`) and its descriptor limit are its
//! own. No assertion is on time; every wait has a generous bound.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Generous: only a broken server makes a test wait this long.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

/// A `flags serve` child, killed when dropped.
struct Serve {
    child: Child,
    /// `127.0.0.1:PORT`.
    authority: String,
    /// Kept open: the server's stdout is a pipe, and a closed one would fail its writes.
    _stdout: BufReader<ChildStdout>,
}

impl Serve {
    /// Starts `flags serve ARGS...` through `sh -c "SETUP; exec flags serve ARGS..."` (`SETUP`
    /// may be `true`) and waits for its banner.
    fn start(setup: &str, args: &[&str]) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{setup} && exec \"$0\" serve \"$@\""))
            .arg(env!("CARGO_BIN_EXE_flags"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start flags serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("banner");
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"));
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches("/flags")
            .to_owned();
        Self {
            child,
            authority,
            _stdout: stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.authority).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream
    }

    /// A field of `/proc/PID/status` in bytes (`VmHWM`, `VmRSS`: given there in kB).
    fn status_bytes(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        let kib: u64 = line
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .expect("a number of kB");
        kib * 1024
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads from `stream` until the end of a response head; returns the head and the body bytes
/// read with it.
fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            return (head, bytes.split_off(end + 4));
        }
        let n = stream.read(&mut buffer).expect("a response head");
        assert!(n > 0, "closed before the head: {bytes:?}");
        bytes.extend_from_slice(&buffer[..n]);
    }
}

/// A sparse file of `len` bytes at `dir/rel`.
fn sparse_file(dir: &Path, rel: &str, len: u64) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::File::create(&path)
        .and_then(|file| file.set_len(len))
        .expect("sparse file");
}

/// Issue 17, point 7: eight clients ask for a 64 MiB file, read its head and its first MiB,
/// and stop reading. The server used to read the whole file into memory for each request
/// (513 MiB more resident for eight); it now sends it a chunk at a time as the socket takes
/// it, so its peak resident memory grows by far less than one file.
#[test]
fn issue_17_clients_that_stop_reading_a_large_file_cost_a_buffer_not_the_file() {
    const FILE: u64 = 64 * MIB;
    const CLIENTS: usize = 8;
    let dir = tempfile::tempdir().expect("temp dir");
    sparse_file(dir.path(), "big/big.bin", FILE);
    let dir_arg = dir.path().to_str().expect("UTF-8 temp dir");
    let server = Serve::start("true", &["--port", "0", "--dir", dir_arg]);
    let before = server.status_bytes("VmHWM");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = server.connect();
        stream
            .write_all(b"GET /flags/big/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        let (head, mut body) = read_head(&mut stream);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains(&format!("content-length: {FILE}")), "{head}");
        let mut buffer = vec![0u8; 64 * 1024];
        while (body.len() as u64) < MIB {
            let n = stream.read(&mut buffer).expect("body");
            assert!(n > 0, "closed in the body");
            body.extend_from_slice(&buffer[..n]);
        }
        assert!(body.iter().all(|&byte| byte == 0));
        clients.push(stream); // and never read again
    }
    let after = server.status_bytes("VmHWM");
    let rss = server.status_bytes("VmRSS");
    let grown = after.saturating_sub(before);
    eprintln!(
        "flags serve: VmHWM {:.1} MiB before, {:.1} MiB with {CLIENTS} stalled clients \
         (+{:.1} MiB); VmRSS {:.1} MiB",
        before as f64 / MIB as f64,
        after as f64 / MIB as f64,
        grown as f64 / MIB as f64,
        rss as f64 / MIB as f64,
    );
    assert!(
        grown < FILE / 2,
        "the peak resident memory grew by {grown} bytes for {CLIENTS} clients"
    );
}

/// Issue 17, point 6: a descriptor limit too low for the clients. `flags serve` starts with a
/// soft limit of 128 descriptors and a hard one of 256, and 300 clients each send a request the
/// server delays for an hour. The server used to keep the soft limit, accept until `accept4`
/// failed with `EMFILE`, and leave every later client unanswered in the kernel's queue. It now
/// raises the soft limit to the hard one, serves only as many connections as that leaves room
/// for, and answers the next client `503` with `Retry-After`.
#[test]
fn issue_17_past_what_the_descriptors_allow_clients_get_503_not_silence() {
    const HARD: usize = 256;
    const REQUEST: &[u8] = b"GET /flags/br/br.gif HTTP/1.1\r\nHost: t\r\n\r\n";
    let server = Serve::start(
        &format!("ulimit -S -n 128 && ulimit -H -n {HARD}"),
        &["--port", "0", "--min-delay", "3600"],
    );
    let mut held = Vec::new();
    for _ in 0..HARD + 44 {
        let mut stream = server.connect();
        // Past the 503s the server can give at once, it closes connections unanswered, and
        // this write may meet the reset.
        let _ = stream.write_all(REQUEST);
        held.push(stream);
    }
    // The next client gets an answer. Until the 503s of the clients above have gone out (each
    // is given a second to take its answer), it may be closed unanswered: try again.
    let deadline = Instant::now() + IO_TIMEOUT;
    let answer = loop {
        let mut probe = server.connect();
        let _ = probe.write_all(REQUEST);
        let mut bytes = Vec::new();
        let _ = probe.read_to_end(&mut bytes);
        if !bytes.is_empty() {
            break String::from_utf8_lossy(&bytes).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no client got an answer within {IO_TIMEOUT:?}"
        );
    };
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).expect("limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("the open files limit");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["256", "256"], "{open_files}");
    let open = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("the server's descriptors")
        .count();
    assert!(open < HARD, "{open} descriptors open");
    eprintln!("flags serve: {open} descriptors open, limit {HARD}");
}
