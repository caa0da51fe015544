//! Load client for the concurrency benchmark (`crates/slow-server/bench.sh`): opens N
//! connections to a server, holds them all open, then sends one `GET` on each, all in one loop
//! of non-blocking writes, and times how long it takes until every answer has arrived
//! (connections are kept alive and closed only after the last answer).
//!
//! `cargo run --release -p slow-server --example hold -- ADDR N [PATH]`
//!
//! Prints one line: connections, answers by status, how long after the release the last
//! request was sent (this one client sends the requests one after the other, on the CPUs it
//! shares with the server) and the last answer arrived, latency percentiles (from the
//! release), and the longest time from a request's own send to its answer. Raise `ulimit -n`
//! above N first.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Connections opened at the same time while setting up (keeps the SYN queue short).
const CONNECT_BATCH: usize = 256;
/// Room for one answer (a built-in flag is about 3.7 KB with its headers).
const ANSWER_CAPACITY: usize = 8192;

// One thread: the load generator shares the machine with the server it measures, and should
// take as little of it as it can.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(count)) = (
        args.first().and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: hold ADDR CONNECTIONS [PATH]");
        return ExitCode::from(2);
    };
    let path = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "/flags/br/br.gif".into());
    let request = Arc::new(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"));

    // Set-up: open every connection (at most CONNECT_BATCH at a time) and keep it.
    let connecting = Arc::new(Semaphore::new(CONNECT_BATCH));
    let mut opening = tokio::task::JoinSet::new();
    let setup = Instant::now();
    for _ in 0..count {
        let connecting = Arc::clone(&connecting);
        opening.spawn(async move {
            let _permit = connecting.acquire_owned().await.ok();
            TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))
        });
    }
    let mut streams = Vec::with_capacity(count);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut failures = std::collections::BTreeMap::<String, usize>::new();
    while let Some(opened) = opening.join_next().await {
        match opened {
            Ok(Ok(stream)) => streams.push(stream),
            Ok(Err(error)) => *failures.entry(error).or_default() += 1,
            Err(error) => *failures.entry(error.to_string()).or_default() += 1,
        }
    }
    let connected_in = setup.elapsed();
    // The answers' buffers are allocated and touched before the release, so that the
    // client's page faults are not counted against the server.
    let mut answers: Vec<Vec<u8>> = (0..streams.len())
        .map(|_| {
            let mut answer = vec![0u8; ANSWER_CAPACITY];
            answer.clear();
            answer
        })
        .collect();

    // The release: one request on every connection, written in one loop (a request of a few dozen bytes
    // always fits an idle socket's buffer), so that the client spends as little of the shared
    // CPUs as it can between the first request and the last.
    let start = Instant::now();
    let mut sent = Vec::with_capacity(streams.len());
    for stream in &streams {
        let outcome = match stream.try_write(request.as_bytes()) {
            Ok(n) if n == request.len() => Ok(Instant::now()),
            Ok(_) => Err("send: partial write".to_owned()),
            Err(e) => Err(format!("send: {e}")),
        };
        sent.push(outcome);
    }
    let last_sent = start.elapsed();

    // Then one task per connection reads its answer (spawned while the server delays).
    let mut tasks = tokio::task::JoinSet::new();
    for ((mut stream, sent), mut answer) in streams.into_iter().zip(sent).zip(answers.drain(..)) {
        tasks.spawn(async move {
            let sent = sent?;
            let status = read_response(&mut stream, &mut answer)
                .await
                .map_err(|e| format!("receive: {e}"))?;
            // The connection stays open until every answer is in, so that closing it does not
            // add work to the server while others wait.
            Ok::<_, String>((status, start.elapsed(), sent.elapsed(), stream))
        });
    }

    let mut latencies = Vec::with_capacity(count);
    let mut since_sent = Duration::ZERO;
    let mut streams = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((status, latency, own, stream))) => {
                *statuses.entry(status).or_default() += 1;
                latencies.push(latency);
                since_sent = since_sent.max(own);
                streams.push(stream);
            }
            Ok(Err(error)) => *failures.entry(error).or_default() += 1,
            Err(error) => *failures.entry(error.to_string()).or_default() += 1,
        }
    }
    let total = start.elapsed();
    drop(streams);
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .map_or(0.0, Duration::as_secs_f64)
    };
    println!(
        "connections {count} (opened in {:.2} s); answers {statuses:?}; failures {failures:?}; \
         all sent {:.3} s and all answered {:.3} s after the release; latency p50 {:.3} s, p99 {:.3} s, max {:.3} s; \
         longest from a request's own send to its answer {:.3} s",
        connected_in.as_secs_f64(),
        last_sent.as_secs_f64(),
        total.as_secs_f64(),
        pick(0.5),
        pick(0.99),
        pick(1.0),
        since_sent.as_secs_f64(),
    );
    if failures.is_empty() && statuses.keys().all(|&s| s == 200) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads one response into `bytes` (kept alive: its end is given by `Content-Length`);
/// returns its status.
async fn read_response(stream: &mut TcpStream, bytes: &mut Vec<u8>) -> std::io::Result<u16> {
    loop {
        if bytes.len() == bytes.capacity() {
            bytes.reserve(ANSWER_CAPACITY);
        }
        let n = stream.read_buf(bytes).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        // Parsed in place: the client's own work per answer is part of what it measures.
        let head = &bytes[..end];
        const LENGTH: &[u8] = b"content-length:";
        let length = head
            .split(|&b| b == b'\n')
            .find_map(|line| {
                let name = line.get(..LENGTH.len())?;
                name.eq_ignore_ascii_case(LENGTH)
                    .then(|| std::str::from_utf8(&line[LENGTH.len()..]).ok())?
            })
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if bytes.len() >= end + 4 + length {
            let status = head
                .get(9..12)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return Ok(status);
        }
    }
}
