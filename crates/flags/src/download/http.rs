//! The two [`Transport`]s: a blocking ureq agent (sequential and threads) and an async reqwest
//! client (async). Each is built once per run and keeps its connections alive; both follow at
//! most [`MAX_REDIRECTS`] redirects, give up after the `--timeout` (whole request, body
//! included), read at most [`MAX_BODY`] bytes and turn failures into one-line [`FetchError`]s.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::{Cancel, FetchError, Response, Transport};
use crate::error::Error;

/// Redirects followed before "too many redirects".
const MAX_REDIRECTS: u32 = 10;
/// Largest body accepted (flags are a few KiB).
const MAX_BODY: u64 = 10 * 1024 * 1024;
/// ureq's read buffer per connection. ureq cannot parse a response head larger than its
/// buffer, so [`MAX_HEAD`] is set just below it (a larger head is then "response header is
/// too big", not a disconnection retried as transient). 16 KiB is four times what nginx
/// accepts from a server it proxies by default (one 4 KiB page); every buffer is zeroed when
/// its connection opens, so a larger one costs page faults on every connection.
const INPUT_BUFFER: usize = 16 * 1024;
/// The largest response head accepted.
const MAX_HEAD: usize = INPUT_BUFFER - 1;
/// ureq's write buffer per connection: a request head, so the longest URL (a redirect's
/// `Location` included) is a little under 8 KiB.
const OUTPUT_BUFFER: usize = 8 * 1024;
/// Sent with every request.
const USER_AGENT: &str = concat!("flags/", env!("CARGO_PKG_VERSION"));

/// `Retry-After` as a number of seconds (the HTTP-date form is ignored: backoff applies).
fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(ureq::http::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
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
            .max_redirects(MAX_REDIRECTS)
            .max_idle_connections(connections.max(1))
            .max_idle_connections_per_host(connections.max(1))
            .user_agent(USER_AGENT)
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

    fn get_blocking(&self, url: &str) -> Result<Response, FetchError> {
        let mut response = self.agent.get(url).call().map_err(|e| self.error(&e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let read = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec();
        let body = match read {
            Ok(body) => body,
            // The body of an error status does not matter; the status is the error.
            Err(_) if !response.status().is_success() => Vec::new(),
            Err(e) => return Err(self.error(&e)),
        };
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }

    fn error(&self, error: &ureq::Error) -> FetchError {
        use ureq::Error as E;
        match error {
            E::Timeout(_) => FetchError::transient(format!("timed out after {:?}", self.timeout)),
            E::TooManyRedirects => {
                FetchError::permanent(format!("too many redirects (more than {MAX_REDIRECTS})"))
            }
            E::BodyExceedsLimit(_) => {
                FetchError::permanent(format!("body larger than {MAX_BODY} bytes"))
            }
            E::Io(_) | E::ConnectionFailed | E::HostNotFound | E::Protocol(_) | E::BodyStalled => {
                FetchError::transient(one_line(error))
            }
            _ => FetchError::permanent(one_line(error)),
        }
    }
}

impl Transport for BlockingClient {
    fn get(&self, url: &str) -> impl Future<Output = Result<Response, FetchError>> + Send {
        std::future::ready(self.get_blocking(url))
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

/// The async client: one reqwest client (its pool holds the connections) for the whole run.
#[derive(Debug)]
pub(crate) struct AsyncClient {
    client: reqwest::Client,
    timeout: Duration,
    cancel: Arc<Cancel>,
}

impl AsyncClient {
    /// A client for `connections` concurrent requests to `base_url`.
    ///
    /// For an `http://` base URL the client loads no certificates: reqwest's platform verifier
    /// reads the whole system CA store when the client is built, which an http server never
    /// needs. Such a client refuses a redirect to https with an error that says so; an
    /// `https://` base URL gets the verifier.
    pub(crate) fn new(
        base_url: &str,
        timeout: Duration,
        connections: usize,
        cancel: Arc<Cancel>,
    ) -> Result<Self, Error> {
        // reqwest is built without a default crypto provider; https needs one. Installing fails
        // only when one is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = base_url
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS as usize {
                attempt.error(format!("too many redirects (more than {MAX_REDIRECTS})"))
            } else if !tls && attempt.url().scheme() == "https" {
                let error = format!("redirect to {} (https) from an http server", attempt.url());
                attempt.error(error)
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(redirects)
            .pool_max_idle_per_host(connections.max(1))
            .tcp_nodelay(true)
            .user_agent(USER_AGENT);
        if !tls {
            builder = builder.tls_certs_only([]);
        }
        let client = builder.build().map_err(Error::HttpClient)?;
        Ok(Self {
            client,
            timeout,
            cancel,
        })
    }

    async fn get_async(&self, url: String) -> Result<Response, FetchError> {
        let mut response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| self.error(&e))?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > MAX_BODY {
                        if response.status().is_success() {
                            return Err(FetchError::permanent(format!(
                                "body larger than {MAX_BODY} bytes"
                            )));
                        }
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) if !response.status().is_success() => break,
                Err(e) => return Err(self.error(&e)),
            }
        }
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }

    fn error(&self, error: &reqwest::Error) -> FetchError {
        if error.is_timeout() {
            FetchError::transient(format!("timed out after {:?}", self.timeout))
        } else if error.is_redirect() {
            FetchError::permanent(root_cause(error))
        } else if error.is_connect() {
            FetchError::transient(format!("connection failed: {}", root_cause(error)))
        } else if error.is_body() || error.is_decode() {
            FetchError::transient(format!("incomplete body: {}", root_cause(error)))
        } else if error.is_request() {
            FetchError::transient(format!("request failed: {}", root_cause(error)))
        } else {
            FetchError::permanent(one_line(error))
        }
    }
}

impl Transport for AsyncClient {
    fn get(&self, url: &str) -> impl Future<Output = Result<Response, FetchError>> + Send {
        self.get_async(url.to_owned())
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = bool> + Send {
        self.cancel.sleep_async(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::http::{HeaderMap, HeaderValue, header::RETRY_AFTER};

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
        let fits = client.get_blocking(&serve_head(MAX_HEAD - 200)?);
        assert!(
            matches!(&fits, Ok(r) if r.status == 200 && r.body == b"GIF89a"),
            "{fits:?}"
        );
        for too_big in [MAX_HEAD + 100, 70_000] {
            let error = client
                .get_blocking(&serve_head(too_big)?)
                .expect_err("a head over the limit");
            assert!(!error.transient, "{too_big}: {error:?}");
            assert!(error.message.contains("too big"), "{too_big}: {error:?}");
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
