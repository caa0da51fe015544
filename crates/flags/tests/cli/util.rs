//! Test utilities: the `flags` command, scratch directories, and small raw-TCP servers for the
//! faults `slow-server` does not produce (resets, truncated bodies, stalls, redirect loops,
//! hostile metadata, transient failures).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;

pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The `flags` binary, run in `dir`, with proxies from the environment removed.
pub(crate) fn flags(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_flags"));
    cmd.current_dir(dir);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A scratch directory with a `dest` directory inside.
pub(crate) struct Scratch {
    pub(crate) root: tempfile::TempDir,
}

impl Scratch {
    pub(crate) fn new() -> std::io::Result<Self> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join("dest"))?;
        Ok(Self { root })
    }

    pub(crate) fn path(&self) -> &Path {
        self.root.path()
    }

    pub(crate) fn dest(&self) -> PathBuf {
        self.root.path().join("dest")
    }

    /// The names of the files in `dest`, sorted.
    pub(crate) fn saved(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dest())
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Every path under the scratch root other than `dest` and what is in it.
    pub(crate) fn outside_dest(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.path().to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path == self.dest() {
                    continue;
                }
                if path.is_dir() {
                    stack.push(path.clone());
                }
                found.push(path);
            }
        }
        found
    }

    /// Asserts that `dest` holds exactly `n` files, all complete flags (`GIF` and non-empty),
    /// no temporary file, and that nothing was written outside `dest`.
    pub(crate) fn assert_clean(&self, n: usize) {
        let saved = self.saved();
        assert_eq!(saved.len(), n, "{saved:?}");
        for name in &saved {
            assert!(name.ends_with(".gif") && !name.starts_with('.'), "{name}");
            let body = std::fs::read(self.dest().join(name)).unwrap_or_default();
            assert!(body.starts_with(b"GIF"), "{name} is not a whole flag");
        }
        assert_eq!(self.outside_dest(), Vec::<PathBuf>::new());
    }
}

/// Parses the final report's counters (downloaded, not found, errors) from stdout.
pub(crate) fn counts(stdout: &[u8]) -> (usize, usize, usize) {
    let text = String::from_utf8_lossy(stdout);
    let report = text
        .rsplit_once("--------------------\n")
        .map_or("", |(_, report)| report);
    let find = |suffix: &str| {
        report
            .lines()
            .find(|line| {
                line.trim_start()
                    .split_once(' ')
                    .is_some_and(|(_, rest)| rest.starts_with(suffix))
            })
            .and_then(|line| line.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (find("flag"), find("not found."), find("error"))
}

/// A small GIF body.
pub(crate) const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";

/// What a fault server does with one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A complete response.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `Content-Length: declared` but only `body` sent, then the connection closes.
    Truncated { declared: usize, body: Vec<u8> },
    /// Close the connection with a TCP reset.
    Reset,
    /// A 200 whose body is shared rather than copied per request (a large body).
    Shared(Arc<[u8]>),
    /// These bytes exactly (a head and what follows, however malformed), then an orderly
    /// close.
    Raw(Vec<u8>),
    /// Hold the request until the server's gate opens (or it is dropped), then answer.
    Stall(Box<Reply>),
}

impl Reply {
    pub(crate) fn ok(body: &[u8]) -> Self {
        Self::Full {
            status: 200,
            headers: vec![],
            body: body.to_vec(),
        }
    }

    pub(crate) fn status(status: u16) -> Self {
        Self::Full {
            status,
            headers: vec![],
            body: b"nope".to_vec(),
        }
    }

    pub(crate) fn with_header(status: u16, name: &str, value: &str) -> Self {
        Self::Full {
            status,
            headers: vec![(name.into(), value.into())],
            body: vec![],
        }
    }
}

type Handler = dyn Fn(&str, usize) -> Reply + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    /// Requests seen per path.
    seen: Mutex<HashMap<String, usize>>,
    /// Paths of requests, as they arrive.
    arrivals: Mutex<mpsc::Sender<String>>,
    /// The head (request line and headers) of every request, in arrival order.
    heads: Mutex<Vec<String>>,
    gate: Mutex<bool>,
    opened: Condvar,
    stop: AtomicBool,
}

/// A raw HTTP/1.1 server on 127.0.0.1:0 (keep-alive, one thread per connection) whose replies
/// come from a handler given the path and how many times it was asked for before.
pub(crate) struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    arrivals: mpsc::Receiver<String>,
    accept: Option<JoinHandle<()>>,
}

impl FaultServer {
    pub(crate) fn start(
        handler: impl Fn(&str, usize) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (tx, arrivals) = mpsc::channel();
        let shared = Arc::new(Shared {
            handler: Box::new(handler),
            seen: Mutex::new(HashMap::new()),
            arrivals: Mutex::new(tx),
            heads: Mutex::new(Vec::new()),
            gate: Mutex::new(false),
            opened: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accept = std::thread::spawn({
            let shared = Arc::clone(&shared);
            move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let shared = Arc::clone(&shared);
                        std::thread::spawn(move || serve(stream, &shared));
                    }
                }
            }
        });
        Ok(Self {
            addr,
            shared,
            arrivals,
            accept: Some(accept),
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/flags", self.addr)
    }

    /// Blocks until `n` more requests have arrived; returns their paths.
    pub(crate) fn wait_for_requests(&self, n: usize) -> Vec<String> {
        (0..n).filter_map(|_| self.arrivals.recv().ok()).collect()
    }

    /// The path of the next request to arrive, waiting at most `bound` (a liveness bound for
    /// a child that died, never a timing assertion).
    pub(crate) fn next_request(&self, bound: std::time::Duration) -> Option<String> {
        self.arrivals.recv_timeout(bound).ok()
    }

    /// Lets stalled requests be answered.
    pub(crate) fn open_gate(&self) {
        if let Ok(mut open) = self.shared.gate.lock() {
            *open = true;
        }
        self.shared.opened.notify_all();
    }

    /// The heads of the requests that arrived so far, in order.
    pub(crate) fn heads(&self) -> Vec<String> {
        self.shared
            .heads
            .lock()
            .map(|heads| heads.clone())
            .unwrap_or_default()
    }

    /// How many requests arrived for `path`.
    pub(crate) fn seen(&self, path: &str) -> usize {
        self.shared
            .seen
            .lock()
            .map(|seen| seen.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.open_gate();
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// `/flags/{cc}/{cc}.gif`.
pub(crate) fn gif_path(cc: &str) -> String {
    let cc = cc.to_ascii_lowercase();
    format!("/flags/{cc}/{cc}.gif")
}

fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some((path, head)) = read_head(&mut reader) {
        if let Ok(mut heads) = shared.heads.lock() {
            heads.push(head);
        }
        let count = {
            let Ok(mut seen) = shared.seen.lock() else {
                return;
            };
            let count = seen.entry(path.clone()).or_insert(0);
            *count += 1;
            *count - 1
        };
        let mut reply = (shared.handler)(&path, count);
        if let Ok(tx) = shared.arrivals.lock() {
            let _ = tx.send(path.clone());
        }
        if let Reply::Stall(then) = reply {
            let Ok(mut open) = shared.gate.lock() else {
                return;
            };
            while !*open {
                let Ok(guard) = shared.opened.wait(open) else {
                    return;
                };
                open = guard;
            }
            reply = *then;
        }
        let written = match reply {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                out.write_all(head.as_bytes())
                    .and_then(|()| out.write_all(&body))
                    .is_ok()
            }
            Reply::Truncated { declared, body } => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nContent-Type: image/gif\r\n\r\n"
                );
                let _ = out
                    .write_all(head.as_bytes())
                    .and_then(|()| out.write_all(&body));
                false
            }
            Reply::Reset => {
                // Linger 0: closing sends RST instead of FIN.
                let _ = socket2::SockRef::from(&out).set_linger(Some(std::time::Duration::ZERO));
                return;
            }
            Reply::Shared(body) => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                out.write_all(head.as_bytes())
                    .and_then(|()| out.write_all(&body))
                    .is_ok()
            }
            Reply::Raw(bytes) => {
                let _ = out.write_all(&bytes);
                false
            }
            Reply::Stall(_) => false,
        };
        if !written {
            let _ = out.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// Reads a request head (request line and headers) and returns the path without the query,
/// and the whole head; `None` at end of stream or on garbage.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<(String, String)> {
    let mut head = String::new();
    if reader.read_line(&mut head).ok()? == 0 {
        return None;
    }
    let target = head.split_whitespace().nth(1)?;
    let path = target.split('?').next().unwrap_or(target).to_owned();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            return Some((path, head));
        }
        head.push_str(&line);
    }
}
