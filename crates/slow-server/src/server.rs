//! The server: binding, the accept loop, connections, and the request handler.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;

use crate::body::{Body, FileBody};
use crate::config::ServerConfig;
use crate::content::{Content, Reply};
use crate::descriptors::Budget;
use crate::error::ServerError;
use crate::plan::plan_for;
use crate::stall::StallGuard;
use crate::trim::Trimmer;

/// The listen backlog asked for; Linux caps it at `net.core.somaxconn` (4096 by default).
const BACKLOG: i32 = 65_535;
/// How long a write may make no progress before the connection is dropped.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(30);
/// How long a stopping server lets requests in flight finish.
const GRACE: Duration = Duration::from_secs(1);
/// The most bytes hyper buffers on a connection, each way. Hyper asks a response body for more
/// only below it, so a client that stops reading a large file holds this and one chunk of it
/// (hyper's default buffer, several times larger, was most of such a connection's memory;
/// figures in `BENCHMARKS.md`). A request
/// head must fit in it too: a larger one gets `431` (nginx's default limit is 32 KiB).
const CONNECTION_BUFFER: usize = 64 * 1024;
/// How long a connection past the cap is given to take its 503.
const REJECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The body of the answer to a connection past the cap.
const BUSY: &str = "too many connections: try again in a second.\n";
/// The body of the answer to a request for a file when no descriptor is left to open it.
const BUSY_FILES: &str = "too many open files: try again in a second.\n";
/// The reason phrase of the book's errors (Python's spelling, not the `http` crate's).
const TEAPOT: &[u8] = b"I'm a Teapot";

/// What every connection of a server shares.
#[derive(Debug)]
struct Shared {
    config: ServerConfig,
    content: Content,
}

/// A server bound to its address and ready to run inside an existing tokio runtime.
///
/// [`start`] is the simple way: it runs a server on its own thread. `Server` is for programs
/// that already have a runtime, such as `flags serve`, which runs three servers on one.
///
/// # Examples
///
/// ```
/// use slow_server::{Server, ServerConfig};
///
/// #[tokio::main]
/// async fn main() -> Result<(), slow_server::ServerError> {
///     let server = Server::bind(ServerConfig::new())?;
///     println!("serving {}", server.flags_url());
///     // A real program would wait for Ctrl-C: `tokio::signal::ctrl_c()`.
///     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
///     let running = tokio::spawn(server.run_until(async {
///         let _ = stopped.await;
///     }));
///     // ... send requests ...
///     let _ = stop.send(());
///     running.await.expect("the server task does not panic")
/// }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Server {
    /// Checks `config`, opens its content and starts listening (no runtime needed yet).
    ///
    /// # Errors
    ///
    /// [`ServerError`] for invalid settings, a directory that cannot be served, or an address
    /// that cannot be listened on (in use, not local, not permitted).
    pub fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        config.validate()?;
        let content = Content::open(config.dir.as_deref(), config.file_check_interval)?;
        let listener = listen(config.addr)?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.addr,
            source,
        })?;
        Ok(Self {
            listener,
            local_addr,
            shared: Arc::new(Shared { config, content }),
        })
    }

    /// The address the server listens on, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL of the flags, such as `http://127.0.0.1:8001/flags` (no trailing slash).
    pub fn flags_url(&self) -> String {
        flags_url(self.local_addr)
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight finish
    /// for up to a second, and closes every connection.
    ///
    /// Must run inside a tokio runtime with I/O and time enabled.
    ///
    /// # Errors
    ///
    /// [`ServerError::Runtime`] if the listener cannot be registered with the runtime.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let listener = TcpListener::from_std(self.listener).map_err(ServerError::Runtime)?;
        run(listener, self.shared, shutdown).await;
        Ok(())
    }
}

/// `http://ADDR/flags`.
fn flags_url(addr: SocketAddr) -> String {
    format!("http://{addr}/flags")
}

/// A non-blocking listening socket with a large backlog.
fn listen(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let error = |source| ServerError::Bind { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(error)?;
    // Lets a restarted server reuse a port that still has connections in TIME_WAIT; on Unix it
    // does not allow two servers on one port.
    #[cfg(unix)]
    socket.set_reuse_address(true).map_err(error)?;
    socket.bind(&addr.into()).map_err(error)?;
    socket.listen(BACKLOG).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    Ok(socket.into())
}

/// The accept loop and its shutdown.
async fn run(listener: TcpListener, shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let budget = Budget::get();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(CONNECTION_BUFFER);
    let mut tasks = JoinSet::new();
    let mut trimmer = Trimmer::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => trimmer.observe(tasks.len()),
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        // Out of memory, or of descriptors although the budget keeps a reserve
                        // (something else in the process took it): wait instead of spinning.
                        if !is_connection_error(&error) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        continue;
                    }
                };
                // A place under this server's cap, and the socket's descriptor in the budget of
                // the process (shared with its other servers and the files they send).
                let slot = Arc::clone(&slots).try_acquire_owned().ok();
                match slot.zip(budget.serving()) {
                    Some(permits) => {
                        let connection = serve_connection(&builder, stream, &shared, stop_rx.clone());
                        tasks.spawn(async move {
                            connection.await;
                            drop(permits);
                        });
                        trimmer.observe(tasks.len());
                    }
                    None => {
                        if let Some(permit) = budget.rejecting() {
                            tasks.spawn(async move {
                                reject(stream).await;
                                drop(permit);
                            });
                        }
                    }
                }
            }
        }
    }
    drop(listener);
    // Ask every connection to finish the request it is on and close, then give them the grace
    // period; whatever remains is cancelled when the JoinSet drops.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await;
}

/// Whether an accept error concerns one connection only (the next accept may succeed).
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Serves one connection until it closes or the server stops.
fn serve_connection(
    builder: &http1::Builder,
    stream: TcpStream,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let builder = builder.clone();
    let shared = Arc::clone(shared);
    async move {
        // Hyper starts at once (its two 8 KiB buffers and its state), and its header read timeout
        // cuts off a client that sends nothing. Starting it only once the first byte arrived (a
        // `peek` first) kept idle connections smaller, but moved those allocations, and their
        // page faults, onto the way to the first answer, so a burst of held requests was
        // answered later (the A/B is in BENCHMARKS.md).
        // Small responses go out at once rather than waiting for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(StallGuard::new(stream, WRITE_STALL_LIMIT));
        let service = service_fn(move |request| handle(Arc::clone(&shared), request));
        // Boxed: the connection's state is large; the task stays small and moves cheaply.
        let mut connection = Box::pin(builder.serve_connection(io, service));
        tokio::select! {
            _ = connection.as_mut() => {}
            // The flag only ever goes from false to true, and an Err means the server is gone.
            _ = stop.changed() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}

/// Answers a connection past the cap with 503 and closes it.
async fn reject(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REJECT_TIMEOUT, async {
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BUSY}",
            BUSY.len()
        );
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent, so that closing does not reset the connection and lose
        // the answer before the client reads it.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Answers one request.
async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if let Some(problem) = host_problem(&request) {
        let mut response = text(StatusCode::BAD_REQUEST, problem);
        // As nginx does after a 400: what else the client sends is not worth reading.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(response);
    }
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET or HEAD\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    let path = request.uri().path();
    let plan = plan_for(&shared.config, path);
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    if plan.error {
        let mut response = text(StatusCode::IM_A_TEAPOT, "I'm a Teapot\n");
        response
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(TEAPOT));
        return Ok(response);
    }
    Ok(match shared.content.reply(path, Budget::get()).await {
        Reply::Body {
            bytes,
            content_type,
        } => body(StatusCode::OK, bytes, content_type),
        Reply::File {
            file,
            descriptor,
            len,
            content_type,
        } => response(
            StatusCode::OK,
            Body::File(FileBody::new(file, descriptor, len)),
            len,
            content_type,
        ),
        Reply::Busy => {
            let mut response = text(StatusCode::SERVICE_UNAVAILABLE, BUSY_FILES);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Reply::Redirect(location) => match HeaderValue::try_from(location) {
            Ok(location) => {
                let mut response = text(StatusCode::MOVED_PERMANENTLY, "moved: add a slash\n");
                response.headers_mut().insert(header::LOCATION, location);
                response
            }
            Err(_) => not_found(),
        },
        Reply::NotFound => not_found(),
    })
}

/// Why the request's `Host` header field lines make it a bad request, if they do: RFC 9112
/// §3.2 asks for a 400 when an HTTP/1.1 request has none, or when any request has more than one
/// (two hosts would let a proxy and this server disagree on what was asked for).
fn host_problem(request: &Request<Incoming>) -> Option<&'static str> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if request.version() == Version::HTTP_11 => {
            Some("bad request: HTTP/1.1 needs a Host header\n")
        }
        (Some(_), Some(_)) => Some("bad request: more than one Host header\n"),
        _ => None,
    }
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    body(
        status,
        Bytes::from_static(message.as_bytes()),
        "text/plain; charset=utf-8",
    )
}

fn body(status: StatusCode, bytes: Bytes, content_type: &'static str) -> Response<Body> {
    let length = bytes.len() as u64;
    response(status, Body::bytes(bytes), length, content_type)
}

/// A response with an explicit `Content-Length` (also sent, without the body, for `HEAD`:
/// hyper then drops the body unread).
fn response(
    status: StatusCode,
    body: Body,
    length: u64,
    content_type: &'static str,
) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::SERVER, HeaderValue::from_static("slow-server"));
    response
}

/// Starts a server on a background thread with its own tokio runtime and returns once it is
/// listening: requests can be sent as soon as this returns.
///
/// The server stops when the handle is dropped or [`ServerHandle::shutdown`] is called.
///
/// # Errors
///
/// [`ServerError`] for invalid settings, a directory that cannot be served, an address that
/// cannot be listened on, or a runtime that cannot be created.
///
/// # Examples
///
/// ```
/// let server = slow_server::start(slow_server::ServerConfig::new())?;
/// assert!(server.flags_url().starts_with("http://127.0.0.1:"));
/// server.shutdown();
/// # Ok::<(), slow_server::ServerError>(())
/// ```
pub fn start(config: ServerConfig) -> Result<ServerHandle, ServerError> {
    let server = Server::bind(config)?;
    let local_addr = server.local_addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("slow-server")
        .build()
        .map_err(ServerError::Runtime)?;
    let listener = {
        let _context = runtime.enter();
        TcpListener::from_std(server.listener).map_err(ServerError::Runtime)?
    };
    let shared = server.shared;
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("slow-server {local_addr}"))
        .spawn(move || {
            runtime.block_on(run(listener, shared, async {
                let _ = stopped.await;
            }));
            runtime.shutdown_timeout(GRACE);
        })
        .map_err(ServerError::Runtime)?;
    Ok(ServerHandle {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// A running server started by [`start`]; dropping it stops the server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL of the flags, such as `http://127.0.0.1:40123/flags` (no trailing slash).
    pub fn flags_url(&self) -> String {
        flags_url(self.local_addr)
    }

    /// Stops the server and waits for its thread: it stops accepting at once, lets requests in
    /// flight finish for up to a second, then closes every connection. Dropping the handle
    /// does the same.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The server thread does not panic; if it did, there is nothing to add here.
            let _ = thread.join();
        }
    }
}
