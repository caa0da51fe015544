//! The two [`Transport`]s: a blocking ureq agent (sequential, threads and processes) and an
//! async reqwest client (async). Each is built once per run and keeps its connections alive.
//! Both send the same request (see [`Transport`]), follow no redirect, give up after the
//! `--timeout` (whole request, body included), hand the body over a piece at a time
//! ([`Body`]) and sort what goes wrong into the same [`Fault`]s: the shared path decides and
//! words the rest.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use ureq::http::header::{self, HeaderMap, HeaderValue};
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::{Body, Cancel, Fault, Head, Transport};
use crate::error::Error;

/// ureq's read buffer per connection. ureq cannot parse a response head larger than its
/// buffer, so [`MAX_HEAD`] is set just below it (a larger head is then an invalid head, not a
/// disconnection retried as transient). 16 KiB is four times what nginx accepts from a
/// server it proxies by default (one 4 KiB page); every buffer is zeroed when its connection
/// opens, so a larger one costs page faults on every connection.
const INPUT_BUFFER: usize = 16 * 1024;
/// The largest response head accepted, by both clients.
const MAX_HEAD: usize = INPUT_BUFFER - 1;
/// ureq's write buffer per connection: a request head, so the longest URL (a redirect's
/// `Location` included) is a little under 8 KiB.
const OUTPUT_BUFFER: usize = 8 * 1024;
/// The blocking client's read size: the pieces its body is handed over in (ureq's own buffer
/// is [`INPUT_BUFFER`]).
const BODY_PIECE: usize = 16 * 1024;
/// Sent with every request.
const USER_AGENT: &str = concat!("flags/", env!("CARGO_PKG_VERSION"));
/// Sent with every request: no content encoding is wanted (flags are GIFs, already
/// compressed) and none is decoded.
const ACCEPT_ENCODING: &str = "identity";

/// The head of a response, from its status and headers.
fn head(status: u16, headers: &HeaderMap) -> Head {
    let text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.trim().to_owned())
    };
    Head {
        status,
        retry_after: retry_after(headers),
        content_length: text(header::CONTENT_LENGTH).and_then(|len| len.parse().ok()),
        content_encoding: text(header::CONTENT_ENCODING).filter(|encoding| !encoding.is_empty()),
        location: text(header::LOCATION),
        last_modified: text(header::LAST_MODIFIED)
            .and_then(|date| httpdate::parse_http_date(&date).ok()),
        etag: text(header::ETAG).filter(|etag| !etag.is_empty()),
        content_range: text(header::CONTENT_RANGE).and_then(|range| content_range(&range)),
    }
}

/// `bytes FIRST-LAST/TOTAL` as numbers (an unknown total, `*`, is `None`).
fn content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// `Retry-After` as a number of seconds (the HTTP-date form is ignored: backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The innermost cause of an error, on one line.
fn root_cause(error: &dyn StdError) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string().replace(['\n', '\r'], " ")
}

/// An error and its causes on one line: `outer: inner: root`, without repeats.
fn one_line(error: &dyn StdError) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace(['\n', '\r'], " ")
}

/// Where a request failed: while the head was awaited, or within the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Body,
}

/// The [`Fault`] of a system I/O error, met in `phase`.
fn io_fault(error: &io::Error, phase: Phase) -> Fault {
    use io::ErrorKind as K;
    match (error.kind(), phase) {
        (K::TimedOut, _) => Fault::Timeout,
        (
            K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable,
            Phase::Head,
        ) => Fault::Connect(error.to_string()),
        (K::UnexpectedEof, Phase::Head) => Fault::ClosedBeforeHead,
        (K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe, Phase::Head) => {
            Fault::ResetBeforeHead
        }
        (K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe, _) => {
            Fault::BodyCut
        }
        // hyper's chunked decoder says `InvalidInput` where ureq says `InvalidData`.
        (K::InvalidData | K::InvalidInput, Phase::Head) => Fault::InvalidHead,
        (K::InvalidData | K::InvalidInput, Phase::Body) => Fault::InvalidBody,
        _ => Fault::Other(error.to_string().replace(['\n', '\r'], " ")),
    }
}

/// The blocking client: one ureq agent whose pool keeps up to `connections` connections.
#[derive(Debug)]
pub(crate) struct BlockingClient {
    agent: ureq::Agent,
    timeout: Duration,
    cancel: Arc<Cancel>,
    dns: CachingResolver,
}

impl BlockingClient {
    /// A client for `connections` concurrent requests.
    pub(crate) fn new(timeout: Duration, connections: usize, cancel: Arc<Cancel>) -> Self {
        Self::build(timeout, connections, cancel, CachingResolver::default())
    }

    /// Another client with one connection of its own and the same settings and DNS answers
    /// (a worker thread's own client: no pool shared between threads).
    pub(crate) fn sibling(&self) -> Self {
        Self::build(self.timeout, 1, Arc::clone(&self.cancel), self.dns.clone())
    }

    fn build(
        timeout: Duration,
        connections: usize,
        cancel: Arc<Cancel>,
        dns: CachingResolver,
    ) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // Redirects are the shared path's, the same in every mode.
            .max_redirects(0)
            .max_idle_connections(connections.max(1))
            .max_idle_connections_per_host(connections.max(1))
            .user_agent(USER_AGENT)
            .accept("*/*")
            .accept_encoding(ACCEPT_ENCODING)
            // Flags are small: ureq's 128 KiB buffers each way per connection only cost memory
            // (mapped and faulted in per connection).
            .input_buffer_size(INPUT_BUFFER)
            .max_response_header_size(MAX_HEAD)
            .output_buffer_size(OUTPUT_BUFFER)
            .build();
        let agent = ureq::Agent::with_parts(config, DefaultConnector::new(), dns.clone());
        Self {
            agent,
            timeout,
            cancel,
            dns,
        }
    }

    fn get_blocking(
        &self,
        url: &str,
        since: Option<SystemTime>,
        range: Option<(u64, String)>,
    ) -> Result<(Head, BlockingBody), Fault> {
        let mut request = self.agent.get(url);
        if let Some((from, validator)) = range {
            request = request
                .header(header::RANGE, format!("bytes={from}-"))
                .header(header::IF_RANGE, validator);
        }
        if let Some(since) = since {
            request = request.header(header::IF_MODIFIED_SINCE, httpdate::fmt_http_date(since));
        }
        let response = request
            .call()
            .map_err(|e| blocking_fault(&e, Phase::Head))?;
        let head = head(response.status().as_u16(), response.headers());
        // No limit here: the shared path counts the bytes against its own cap.
        let reader = response.into_body().into_with_config().reader();
        let body = BlockingBody {
            reader,
            piece: vec![0; BODY_PIECE].into_boxed_slice(),
        };
        Ok((head, body))
    }
}

/// The [`Fault`] of a ureq error met in `phase`.
fn blocking_fault(error: &ureq::Error, phase: Phase) -> Fault {
    use ureq::Error as E;
    match error {
        E::Timeout(_) => Fault::Timeout,
        E::Io(io) => io_fault(io, phase),
        E::HostNotFound | E::ConnectionFailed => Fault::Connect(one_line(error)),
        E::Protocol(_) | E::LargeResponseHeader(..) | E::BadUri(_) if phase == Phase::Head => {
            Fault::InvalidHead
        }
        E::Protocol(_) => Fault::InvalidBody,
        E::BodyStalled => Fault::BodyCut,
        _ => Fault::Other(one_line(error)),
    }
}

/// A body read from ureq's connection a piece at a time.
pub(crate) struct BlockingBody {
    reader: ureq::BodyReader<'static>,
    piece: Box<[u8]>,
}

impl std::fmt::Debug for BlockingBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingBody").finish_non_exhaustive()
    }
}

impl BlockingBody {
    fn read(&mut self) -> Result<Option<&[u8]>, Fault> {
        use std::io::Read;
        loop {
            match self.reader.read(&mut self.piece) {
                Ok(0) => return Ok(None),
                Ok(n) => return Ok(Some(&self.piece[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ureq wraps its own errors in the `io::Error`s of its reader.
                Err(e) => return Err(blocking_fault(&ureq::Error::from(e), Phase::Body)),
            }
        }
    }
}

impl Body for BlockingBody {
    fn chunk(&mut self) -> impl Future<Output = Result<Option<&[u8]>, Fault>> + Send {
        std::future::ready(self.read())
    }
}

impl Transport for BlockingClient {
    type Body = BlockingBody;

    fn get(
        &self,
        url: &str,
        since: Option<SystemTime>,
        range: Option<(u64, String)>,
    ) -> impl Future<Output = Result<(Head, BlockingBody), Fault>> + Send {
        std::future::ready(self.get_blocking(url, since, range))
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = bool> + Send {
        std::future::ready(self.cancel.sleep_blocking(duration))
    }
}

/// ureq's resolver, remembering its answers for the run. ureq resolves the host before every
/// request, pooled connection or not, and its default resolver spawns a thread per lookup when
/// a timeout is set, so every request started a thread.
/// Clones share the answers (sibling clients of a run); a read lock costs no system call.
/// An IP address needs no lookup at all, and gets none: with `--mode processes` every worker
/// process starts with an empty cache, and a lookup thread (with the malloc arena and stack
/// a new thread brings) would slow each worker's start.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: DefaultResolver,
    cache: Arc<RwLock<HashMap<String, ResolvedSocketAddrs>>>,
}

impl Clone for CachingResolver {
    fn clone(&self) -> Self {
        Self {
            inner: DefaultResolver::default(),
            cache: Arc::clone(&self.cache),
        }
    }
}

/// The address of a URI whose host is an IP address (`127.0.0.1`, `[::1]`), with its port or
/// the scheme's default; `None` for a name.
fn literal_address(uri: &ureq::http::Uri) -> Option<SocketAddr> {
    let host = uri.host()?;
    let ip: IpAddr = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()?;
    let port = uri.port_u16().or(match uri.scheme_str()? {
        s if s.eq_ignore_ascii_case("http") => Some(80),
        s if s.eq_ignore_ascii_case("https") => Some(443),
        _ => None,
    })?;
    Some(SocketAddr::new(ip, port))
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let Some(addr) = literal_address(uri) {
            let mut addrs = self.inner.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        let cached = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(addrs) = cached {
            return Ok(addrs);
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, addrs.clone());
        Ok(addrs)
    }
}

/// The async client: reqwest clients (their pools hold the connections) for the whole run.
#[derive(Debug)]
pub(crate) struct AsyncClient {
    /// For `http://` URLs, without certificates (see [`AsyncClient::new`]); `None` for an
    /// `https://` base URL, whose client serves both schemes.
    plain: Option<reqwest::Client>,
    /// For `https://` URLs: built at once for an `https://` base URL, else at the first
    /// redirect to one.
    tls: OnceLock<Result<reqwest::Client, String>>,
    connections: usize,
    timeout: Duration,
    cancel: Arc<Cancel>,
}

impl AsyncClient {
    /// A client for `connections` concurrent requests to `base_url`.
    ///
    /// For an `http://` base URL the client loads no certificates: reqwest's platform verifier
    /// reads the whole system CA store when the client is built, which an http server never
    /// needs. A redirect to an `https://` URL builds the verifying client then, once, so
    /// that it is followed as in the blocking modes.
    pub(crate) fn new(
        base_url: &str,
        timeout: Duration,
        connections: usize,
        cancel: Arc<Cancel>,
    ) -> Result<Self, Error> {
        // reqwest is built without a default crypto provider; https needs one. Installing fails
        // only when one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let https = base_url
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let client = Self {
            plain: None,
            tls: OnceLock::new(),
            connections,
            timeout,
            cancel,
        };
        if https {
            let tls = client.builder().build().map_err(Error::HttpClient)?;
            let _ = client.tls.set(Ok(tls));
            Ok(client)
        } else {
            let plain = client
                .builder()
                .tls_certs_only([])
                .build()
                .map_err(Error::HttpClient)?;
            Ok(Self {
                plain: Some(plain),
                ..client
            })
        }
    }

    /// The settings both clients share: the request of [`Transport`], no redirects.
    fn builder(&self) -> reqwest::ClientBuilder {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static(ACCEPT_ENCODING),
        );
        reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(self.connections.max(1))
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            .default_headers(headers)
    }

    /// The client for `url`.
    fn client(&self, url: &str) -> Result<&reqwest::Client, Fault> {
        let https = url
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        match &self.plain {
            Some(plain) if !https => Ok(plain),
            _ => self
                .tls
                .get_or_init(|| {
                    self.builder()
                        .build()
                        .map_err(|e| format!("cannot build the TLS client: {}", one_line(&e)))
                })
                .as_ref()
                .map_err(|message| Fault::Other(message.clone())),
        }
    }

    async fn get_async(
        &self,
        url: String,
        since: Option<SystemTime>,
        range: Option<(u64, String)>,
    ) -> Result<(Head, AsyncBody), Fault> {
        let mut request = self.client(&url)?.get(&url);
        if let Some((from, validator)) = range {
            request = request
                .header(header::RANGE.as_str(), format!("bytes={from}-"))
                .header(header::IF_RANGE.as_str(), validator);
        }
        if let Some(since) = since {
            request = request.header(
                header::IF_MODIFIED_SINCE.as_str(),
                httpdate::fmt_http_date(since),
            );
        }
        let response = request
            .send()
            .await
            .map_err(|e| async_fault(&e, Phase::Head))?;
        // hyper takes heads of up to about 400 KiB; the blocking client's limit holds here too.
        if head_size(&response) > MAX_HEAD {
            return Err(Fault::InvalidHead);
        }
        let head = head(response.status().as_u16(), response.headers());
        let body = AsyncBody {
            response,
            piece: bytes::Bytes::new(),
        };
        Ok((head, body))
    }
}

/// The size of a response's head as it came on the wire (give or take its whitespace).
fn head_size(response: &reqwest::Response) -> usize {
    let status_line =
        "HTTP/1.1 200 \r\n".len() + response.status().canonical_reason().map_or(0, str::len);
    let headers: usize = response
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    status_line + headers + "\r\n".len()
}

/// The [`Fault`] of a reqwest error met in `phase`: hyper's and the system's errors are found
/// among its causes.
fn async_fault(error: &reqwest::Error, phase: Phase) -> Fault {
    if error.is_timeout() {
        return Fault::Timeout;
    }
    if error.is_connect() {
        return Fault::Connect(root_cause(error));
    }
    let mut cause: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(current) = cause {
        if let Some(hyper) = current.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                return Fault::Timeout;
            }
            if hyper.is_parse() || hyper.is_parse_too_large() {
                return match phase {
                    Phase::Head => Fault::InvalidHead,
                    Phase::Body => Fault::InvalidBody,
                };
            }
            if hyper.is_incomplete_message() {
                return match phase {
                    Phase::Head => Fault::ClosedBeforeHead,
                    Phase::Body => Fault::BodyCut,
                };
            }
        }
        if let Some(io) = current.downcast_ref::<io::Error>() {
            return io_fault(io, phase);
        }
        cause = current.source();
    }
    Fault::Other(one_line(error))
}

/// A body as hyper hands it over: each piece is dropped when the next is asked for.
#[derive(Debug)]
pub(crate) struct AsyncBody {
    response: reqwest::Response,
    piece: bytes::Bytes,
}

impl Body for AsyncBody {
    async fn chunk(&mut self) -> Result<Option<&[u8]>, Fault> {
        // The piece handed over last is written by now: dropped before the next read, so
        // that hyper can reuse its buffer instead of growing another one.
        self.piece = bytes::Bytes::new();
        match self.response.chunk().await {
            Ok(Some(piece)) => {
                self.piece = piece;
                Ok(Some(&self.piece))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(async_fault(&e, Phase::Body)),
        }
    }
}

impl Transport for AsyncClient {
    type Body = AsyncBody;

    fn get(
        &self,
        url: &str,
        since: Option<SystemTime>,
        range: Option<(u64, String)>,
    ) -> impl Future<Output = Result<(Head, AsyncBody), Fault>> + Send {
        self.get_async(url.to_owned(), since, range)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = bool> + Send {
        self.cancel.sleep_async(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::http::header::RETRY_AFTER;

    /// A server on loopback that answers one request with a head of about `head_bytes`.
    fn serve_head(head_bytes: usize) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/x.gif", listener.local_addr()?);
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let padding = "a".repeat(head_bytes);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nX-Pad: {padding}\r\nContent-Length: 6\r\n\r\nGIF89a"
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Ok(url)
    }

    #[test]
    fn a_head_over_the_limit_is_a_permanent_error() -> std::io::Result<()> {
        let client = BlockingClient::new(Duration::from_secs(5), 1, Cancel::new());
        let (head, mut body) = client
            .get_blocking(&serve_head(MAX_HEAD - 200)?, None, None)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        assert_eq!(head.status, 200);
        assert_eq!(body.read().ok().flatten(), Some(&b"GIF89a"[..]));
        for too_big in [MAX_HEAD + 100, 70_000] {
            let Err(error) = client.get_blocking(&serve_head(too_big)?, None, None) else {
                panic!("{too_big}: a head over the limit was accepted");
            };
            assert_eq!(error, Fault::InvalidHead, "{too_big}");
        }
        Ok(())
    }

    #[test]
    fn ip_addresses_need_no_lookup() {
        let address = |uri: &str| uri.parse().ok().and_then(|uri| literal_address(&uri));
        assert_eq!(
            address("http://127.0.0.1:8001/flags/br/br.gif"),
            "127.0.0.1:8001".parse().ok()
        );
        assert_eq!(address("http://[::1]/flags"), "[::1]:80".parse().ok());
        assert_eq!(address("HTTPS://10.0.0.1/x"), "10.0.0.1:443".parse().ok());
        assert_eq!(address("http://localhost:8000/flags"), None);
        assert_eq!(address("http://127.0.0.1.example/flags"), None);
    }

    #[test]
    fn retry_after_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&headers), None);
    }

    #[derive(Debug)]
    struct Chain(&'static str, Option<Box<Chain>>);

    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Chain {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|c| c as &(dyn StdError + 'static))
        }
    }

    #[test]
    fn errors_on_one_line() {
        let error = Chain(
            "outer",
            Some(Box::new(Chain(
                "outer",
                Some(Box::new(Chain("root\ncause", None))),
            ))),
        );
        assert_eq!(one_line(&error), "outer: root cause");
        assert_eq!(root_cause(&error), "root cause");
    }
}
