//! The download path every mode shares, and the modes (one file each) that only schedule it.
//!
//! [`get_flag`] is written once, as an `async fn` generic over a [`Transport`]: the GET with
//! redirects and retries, the status classification, the body streamed into a staged file as
//! it arrives (under a size cap), the optional `metadata.json`, the file's naming and the
//! timing record. The clients only send a request and sort what goes wrong into a [`Fault`];
//! every decision and every message is made here, once, so that a fault reads the same in
//! every mode (issue 17).
//! The async mode awaits it on tokio with [`AsyncClient`]; the blocking modes drive it with
//! [`block_on`] over [`BlockingClient`], whose futures are ready at their first poll, so the
//! same code runs on a plain thread without a runtime.

mod asynchronous;
mod cancel;
mod cluster;
mod http;
mod processes;
mod save;
mod sequential;
mod threads;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

pub use self::cancel::Cancel;
pub use self::cluster::{WorkerPlan, serve_worker};
pub(crate) use self::http::{AsyncClient, BlockingClient};
pub(crate) use self::processes::UrlPool;
pub use self::save::exit_between_saves;
use self::save::{Committed, Staged};
pub(crate) use self::save::{run_start, safe_component};
use crate::error::Error;
use crate::plan::{Mode, NameBy, Plan};
use crate::progress::Progress;
use crate::report::{Outcome, Record};

/// First retry delay; doubles with each retry.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest computed backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured; a server asking for more gets this.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
/// `flags get`: bodies of at least this many bytes with a validator (`ETag` or
/// `Last-Modified`) are staged in a partial file that a rerun resumes with `Range`.
pub(crate) const RESUMABLE: u64 = 1024 * 1024;
/// `flags get`'s directory of partial files in `--dest`.
pub(crate) const PARTIAL_DIR: &str = ".flags-partial";
/// Largest flag accepted (flags are a few KiB).
const MAX_BODY: u64 = 10 * 1024 * 1024;
/// Largest `metadata.json` accepted (it holds one short name), read into memory.
const MAX_METADATA: u64 = 64 * 1024;
/// Redirects followed before "too many redirects".
const MAX_REDIRECTS: u32 = 10;
/// The largest `Content-Length` that is a length: hyper, the async client's parser, takes the
/// two values above it for markers and refuses them, so the blocking client does too.
const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;
/// The most of an error response's body read (and thrown away) so that its connection can
/// serve the next request; a longer one costs the connection instead.
const MAX_DRAINED: u64 = 64 * 1024;

/// The head of a response, as the shared download path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    /// `Retry-After` in seconds, when present.
    pub(crate) retry_after: Option<Duration>,
    /// `Content-Length`, when present.
    pub(crate) content_length: Option<u64>,
    /// `Content-Encoding`, when present: every request asks for `identity`.
    pub(crate) content_encoding: Option<String>,
    /// `Location`, when present (followed for 301, 302, 303, 307 and 308).
    pub(crate) location: Option<String>,
    /// `Last-Modified`, when present and a valid HTTP date.
    pub(crate) last_modified: Option<SystemTime>,
    /// `ETag`, when present.
    pub(crate) etag: Option<String>,
    /// `Content-Range` as `(first, last, total)` bytes, when present and complete.
    pub(crate) content_range: Option<(u64, u64, u64)>,
}

/// What went wrong with a request, sorted by the client into the classes that read the same
/// whichever client met them: each becomes one message in [`Fault::into_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The request took longer than `--timeout`.
    Timeout,
    /// No connection (refused, unreachable, no such host, TLS): the system's reason.
    Connect(String),
    /// The connection was closed before a whole response head arrived.
    ClosedBeforeHead,
    /// The connection was reset before a whole response head arrived.
    ResetBeforeHead,
    /// A head that cannot be used: malformed, over the clients' limit, or with a
    /// `Content-Length` no body can have.
    InvalidHead,
    /// The connection ended (closed or reset) before the body did.
    BodyCut,
    /// The body's chunked framing is malformed.
    InvalidBody,
    /// Anything else, in the client's own words.
    Other(String),
}

impl Fault {
    /// The one-line error of this fault, `received` bytes into a body of `expected` bytes.
    fn into_error(self, timeout: Duration, received: u64, expected: Option<u64>) -> FetchError {
        match self {
            Self::Timeout => FetchError::transient(format!("timed out after {timeout:?}")),
            Self::Connect(reason) => FetchError::transient(format!("connection failed: {reason}")),
            Self::ClosedBeforeHead => {
                FetchError::transient("connection closed before the response".into())
            }
            Self::ResetBeforeHead => {
                FetchError::transient("connection reset before the response".into())
            }
            Self::InvalidHead => FetchError::permanent("invalid response head".into()),
            Self::BodyCut => FetchError::transient(match expected {
                Some(len) => {
                    format!("incomplete body: connection ended after {received} of {len} bytes")
                }
                None => format!("incomplete body: connection ended after {received} bytes"),
            }),
            Self::InvalidBody => FetchError::permanent("invalid chunked body".into()),
            Self::Other(message) => FetchError::permanent(message),
        }
    }
}

/// A request that failed: why, in one line, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchError {
    pub(crate) message: String,
    /// Timeouts, connection failures, 429 and 5xx: worth a retry.
    pub(crate) transient: bool,
    /// The server's `Retry-After`, honoured for transient errors.
    pub(crate) retry_after: Option<Duration>,
}

impl FetchError {
    pub(crate) fn transient(message: String) -> Self {
        Self {
            message,
            transient: true,
            retry_after: None,
        }
    }

    pub(crate) fn permanent(message: String) -> Self {
        Self {
            message,
            transient: false,
            retry_after: None,
        }
    }

    /// The error for a non-2xx status other than 404: `HTTP error 418 - I'm a teapot`.
    fn status(status: u16, retry_after: Option<Duration>) -> Self {
        let reason = ureq::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        let transient = status == 429 || (500..600).contains(&status);
        Self {
            message: format!("HTTP error {status} - {reason}"),
            transient,
            retry_after,
        }
    }

    /// A body over `cap` bytes.
    fn too_large(cap: u64) -> Self {
        Self::permanent(format!("body larger than {cap} bytes"))
    }
}

/// An HTTP client as the shared download path sees it. Implementations reuse connections: one
/// client serves a whole run (or a whole worker), never one request.
///
/// Every implementation sends the same request: `GET`, `Host`, `User-Agent: flags/VERSION`,
/// `Accept: */*` and `Accept-Encoding: identity`; follows no redirect; decodes no content
/// encoding; and gives up after the `--timeout`, body included.
pub(crate) trait Transport {
    /// The body of a response, read a piece at a time.
    type Body: Body;

    /// GETs `url` (one request: redirects are the caller's) and returns the head of the
    /// answer; its body is read through the returned [`Body`]. With `since`, the request
    /// carries `If-Modified-Since` (`flags get -N`); with `range`, `Range: bytes=FROM-` and
    /// `If-Range: VALIDATOR` (`flags get` resuming a large body).
    fn get(
        &self,
        url: &str,
        since: Option<SystemTime>,
        range: Option<(u64, String)>,
    ) -> impl Future<Output = Result<(Head, Self::Body), Fault>> + Send;

    /// Sleeps before a retry; `false` when the run was cancelled meanwhile.
    fn sleep(&self, duration: Duration) -> impl Future<Output = bool> + Send;
}

/// A response body as it arrives: no more of it is held than one piece.
pub(crate) trait Body: Send {
    /// The next piece of the body, `None` at its end.
    fn chunk(&mut self) -> impl Future<Output = Result<Option<&[u8]>, Fault>> + Send;
}

/// Where the body of a 2xx answer goes: a flag's staged file, or memory (`metadata.json`).
trait Sink: Send {
    /// Appends `chunk`.
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// Forgets what was written (before the body is received again).
    fn clear(&mut self) -> io::Result<()>;
    /// A 2xx head arrived and its body comes next.
    fn start(&mut self, _head: &Head) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for Vec<u8> {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.extend_from_slice(chunk);
        Ok(())
    }

    fn clear(&mut self) -> io::Result<()> {
        Vec::clear(self);
        Ok(())
    }
}

/// A flag's body: a staged file in `--dest`, created at the first byte (a 404 creates none).
struct FlagFile<'a> {
    dest: &'a std::path::Path,
    staged: Option<Staged>,
    /// `flags get`: where a large body with a validator is staged so that a rerun can resume
    /// it, and its validator's file.
    partial: Option<(PathBuf, PathBuf)>,
}

impl FlagFile<'_> {
    /// Stages a large body with a validator in its partial file (see [`RESUMABLE`]).
    fn start_partial(&mut self, head: &Head) -> io::Result<()> {
        let Some((path, validator_path)) = &self.partial else {
            return Ok(());
        };
        let validator = head
            .etag
            .clone()
            .or_else(|| head.last_modified.map(httpdate::fmt_http_date));
        match (head.content_length, validator) {
            (Some(len), Some(validator)) if len >= RESUMABLE && head.status == 200 => {
                let staged = Staged::partial(self.dest, path, None)?;
                std::fs::write(validator_path, validator)?;
                self.staged = Some(staged);
            }
            _ => {}
        }
        Ok(())
    }
}

impl Sink for FlagFile<'_> {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let staged = match &mut self.staged {
            Some(staged) => staged,
            staged @ None => staged.insert(Staged::new(self.dest)?),
        };
        staged.write_all(chunk)
    }

    fn clear(&mut self) -> io::Result<()> {
        self.staged.as_mut().map_or(Ok(()), Staged::clear)
    }

    fn start(&mut self, head: &Head) -> io::Result<()> {
        self.start_partial(head)
    }
}

/// What [`get_with_retries`] got.
#[derive(Debug)]
enum Got {
    /// A 2xx answer, its body in the sink; its `Last-Modified`.
    Body(Option<SystemTime>),
    /// 404.
    NotFound,
    /// 304: not modified since the date asked about.
    NotModified,
}

/// Why [`get_with_retries`] gave up.
#[derive(Debug)]
enum Failed {
    /// The request failed (or the server refused): the one-line reason, and whether it is
    /// worth another try.
    Fetch(FetchError),
    /// The body could not be written where it goes (a full file system, say).
    Save(io::Error),
}

/// What every download of a run shares.
#[derive(Debug)]
pub(crate) struct Target {
    /// The base URL: flags are at `{base_url}/{cc}/{cc}.gif`.
    pub(crate) base_url: String,
    pub(crate) dest: PathBuf,
    pub(crate) name_by: NameBy,
    pub(crate) retries: u32,
    pub(crate) timeout: Duration,
    pub(crate) cancel: Arc<Cancel>,
    /// With `--name-by country`: when the run started, as `dest`'s file system dates it
    /// ([`run_start`]); a file that changed since is never replaced.
    pub(crate) run_start: Option<SystemTime>,
}

/// Downloads and saves the flag of `code`; never fails, the outcome is in the record.
pub(crate) async fn get_flag<T: Transport>(
    client: &T,
    target: &Target,
    code: &str,
    lane: usize,
) -> Record {
    let start = Instant::now();
    let mut attempts = 0;
    let outcome = fetch_and_save(client, target, code, &mut attempts).await;
    Record {
        code: code.to_owned(),
        lane,
        start,
        end: Instant::now(),
        attempts,
        outcome,
    }
}

async fn fetch_and_save<T: Transport>(
    client: &T,
    target: &Target,
    code: &str,
    attempts: &mut u32,
) -> Outcome {
    let lower = code.to_ascii_lowercase();
    let url = format!("{}/{lower}/{lower}.gif", target.base_url);
    // What a failed write is about: the name when it is known before the body arrives.
    let saving = match target.name_by {
        NameBy::Code => format!("{code}.gif"),
        NameBy::Country => format!("the flag of {code}"),
    };
    let mut flag = FlagFile {
        dest: &target.dest,
        staged: None,
        partial: None,
    };
    match get_with_retries(client, target, &url, None, &mut flag, MAX_BODY, attempts).await {
        Ok(Got::Body(_)) => {}
        Ok(Got::NotFound | Got::NotModified) => return Outcome::NotFound { url },
        Err(Failed::Fetch(error)) => {
            return Outcome::Error {
                message: error.message,
            };
        }
        Err(Failed::Save(e)) => {
            return Outcome::Error {
                message: format!("cannot save {saving}: {e}"),
            };
        }
    }
    let Some(staged) = flag.staged.filter(|staged| staged.len() > 0) else {
        return Outcome::Error {
            message: format!("empty response body: {url}"),
        };
    };
    let (name, saved) = match target.name_by {
        NameBy::Code => {
            let saved = staged.commit(&saving).map(drop);
            (saving, saved)
        }
        NameBy::Country => {
            let name = match country_name(client, target, &lower, attempts).await {
                Ok(country) => save::country_file_name(&country, code),
                Err(message) => return Outcome::Error { message },
            };
            // Two codes may want one name: the second gets `{stem}_{code}.gif`.
            let run_start = target.run_start.unwrap_or(SystemTime::UNIX_EPOCH);
            let saved = staged.commit_unique(&name, code, run_start).map(drop);
            (name, saved)
        }
    };
    match saved {
        Ok(()) => Outcome::Ok,
        Err(e) => Outcome::Error {
            message: format!("cannot save {name}: {e}"),
        },
    }
}

/// What one URL of `flags get` came to. Serde: it crosses from the worker processes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum UrlOutcome {
    /// Saved: new, or replacing a different file from before the run; its size.
    Saved(u64),
    /// The file from before the run had the same bytes, and was kept.
    Unchanged,
    /// `--skip-existing`: the file exists, no request was made.
    Existing,
    /// 404.
    NotFound,
    /// A failure that may pass (timeout, connection, 429, 5xx), after the download path's
    /// own retries (`flags get` gives it none: its scheduler retries): the reason and the
    /// server's `Retry-After`.
    Transient {
        /// The one-line reason.
        message: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Anything else, in one line.
    Error(String),
}

/// How `flags get` fetches each URL.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct UrlOptions {
    /// The largest body saved.
    pub(crate) cap: u64,
    /// No request for a file that exists.
    pub(crate) skip_existing: bool,
    /// `-N`: `If-Modified-Since` the file's modification time; the saved file gets the
    /// answer's `Last-Modified`.
    pub(crate) timestamping: bool,
}

/// `flags get`'s download of `url` into `target.dest/name` (a safe relative path): the same
/// request, redirects, retries, classification and staged save as a flag, at most
/// `options.cap` bytes, committed by [`Staged::commit_new`] (a name already saved in this
/// run is an error; a file with the same bytes is kept). Never fails: the outcome says what
/// happened.
pub(crate) async fn get_url<T: Transport>(
    client: &T,
    target: &Target,
    url: &str,
    name: &str,
    key: u64,
    options: UrlOptions,
) -> UrlOutcome {
    let path = target.dest.join(name);
    let existing = match (options.skip_existing, options.timestamping) {
        (false, false) => None,
        _ => std::fs::metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file),
    };
    if options.skip_existing && existing.is_some() {
        return UrlOutcome::Existing;
    }
    let since = existing
        .filter(|_| options.timestamping)
        .and_then(|meta| meta.modified().ok());
    let partial = target.dest.join(PARTIAL_DIR).join(format!("{key:016x}"));
    let validator = partial.with_extension("validator");
    if let Some(outcome) = resume(client, target, url, name, options, &partial, &validator).await {
        return outcome;
    }
    let mut file = FlagFile {
        dest: &target.dest,
        staged: None,
        partial: Some((partial, validator.clone())),
    };
    let mut attempts = 0;
    let got = get_with_retries(
        client,
        target,
        url,
        since,
        &mut file,
        options.cap,
        &mut attempts,
    );
    let last_modified = match got.await {
        Ok(Got::Body(last_modified)) => last_modified,
        Ok(Got::NotModified) => return UrlOutcome::Unchanged,
        Ok(Got::NotFound) => return UrlOutcome::NotFound,
        Err(Failed::Fetch(error)) if error.transient => {
            return UrlOutcome::Transient {
                message: error.message,
                retry_after: error.retry_after,
            };
        }
        Err(Failed::Fetch(error)) => return UrlOutcome::Error(error.message),
        Err(Failed::Save(e)) => return UrlOutcome::Error(format!("cannot save {name}: {e}")),
    };
    let staged = match file.staged {
        Some(staged) => staged,
        // An empty body is a file too: created here, as no byte created it.
        None => match Staged::new(&target.dest) {
            Ok(staged) => staged,
            Err(e) => return UrlOutcome::Error(format!("cannot save {name}: {e}")),
        },
    };
    let len = staged.len();
    if options.timestamping
        && let Some(modified) = last_modified
        && let Err(e) = staged.set_modified(modified)
    {
        return UrlOutcome::Error(format!("cannot save {name}: {e}"));
    }
    commit_url(target, staged, name, &validator, len)
}

/// Names a whole body (see [`Staged::commit_new`]) and forgets its validator.
fn commit_url(
    target: &Target,
    staged: Staged,
    name: &str,
    validator: &std::path::Path,
    len: u64,
) -> UrlOutcome {
    let run_start = target.run_start.unwrap_or(SystemTime::UNIX_EPOCH);
    let outcome = match staged.commit_new(name, run_start) {
        Ok(Committed::Saved) => UrlOutcome::Saved(len),
        Ok(Committed::Unchanged) => UrlOutcome::Unchanged,
        Err(e) => return UrlOutcome::Error(format!("cannot save {name}: {e}")),
    };
    let _ = std::fs::remove_file(validator);
    outcome
}

/// `flags get`: the rest of a large body a former run left in its `partial` file, asked for
/// with `Range` and `If-Range` (the validator the first answer had). `None` when there is
/// nothing to resume, or the server answers anything but a `206` whose `Content-Range`
/// continues the file exactly: then the partial file is dropped and the download starts
/// again.
async fn resume<T: Transport>(
    client: &T,
    target: &Target,
    url: &str,
    name: &str,
    options: UrlOptions,
    partial: &std::path::Path,
    validator_path: &std::path::Path,
) -> Option<UrlOutcome> {
    let validator = std::fs::read_to_string(validator_path).ok()?;
    let have = std::fs::metadata(partial).ok()?.len();
    if have == 0 {
        return None;
    }
    let range = Some((have, validator));
    let (head, mut body) = match get_following(client, target.timeout, url, None, range).await {
        Ok(answer) => answer,
        Err(error) => return Some(UrlOutcome::Error(error.message)),
    };
    let total = match head.content_range {
        Some((first, last, total))
            if head.status == 206 && first == have && last.checked_add(1) == Some(total) =>
        {
            total
        }
        _ => {
            drain(&head, &mut body).await;
            let _ = std::fs::remove_file(partial);
            let _ = std::fs::remove_file(validator_path);
            return None;
        }
    };
    if total > options.cap {
        return Some(UrlOutcome::Error(
            FetchError::too_large(options.cap).message,
        ));
    }
    let mut staged = match Staged::partial(&target.dest, partial, Some(have)) {
        Ok(staged) => staged,
        Err(e) => return Some(UrlOutcome::Error(format!("cannot save {name}: {e}"))),
    };
    let rest = options.cap - have;
    match receive(&head, &mut body, &mut staged, rest, target.timeout).await {
        Ok(()) if staged.len() == total => {}
        // Kept: the next run asks for what is still missing.
        Ok(()) => {
            return Some(UrlOutcome::Error(format!(
                "incomplete body: {} of {total} bytes",
                staged.len()
            )));
        }
        Err(BodyError::Fetch(error)) => return Some(UrlOutcome::Error(error.message)),
        Err(BodyError::Save(e)) => {
            return Some(UrlOutcome::Error(format!("cannot save {name}: {e}")));
        }
    }
    Some(commit_url(target, staged, name, validator_path, total))
}

impl Sink for Staged {
    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.write_all(chunk)
    }

    fn clear(&mut self) -> io::Result<()> {
        Staged::clear(self)
    }
}

/// The `country` field of `{base}/{cc}/metadata.json` (flags3).
async fn country_name<T: Transport>(
    client: &T,
    target: &Target,
    lower: &str,
    attempts: &mut u32,
) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Metadata {
        country: String,
    }
    let url = format!("{}/{lower}/metadata.json", target.base_url);
    let mut body = Vec::new();
    match get_with_retries(
        client,
        target,
        &url,
        None,
        &mut body,
        MAX_METADATA,
        attempts,
    )
    .await
    {
        Ok(Got::Body(_)) => serde_json::from_slice::<Metadata>(&body)
            .map(|m| m.country)
            .map_err(|e| format!("bad metadata.json ({e}): {url}")),
        Ok(Got::NotFound | Got::NotModified) => Err(format!("metadata.json not found: {url}")),
        Err(Failed::Fetch(error)) => Err(error.message),
        Err(Failed::Save(e)) => Err(format!("cannot read metadata.json: {e}")),
    }
}

/// GETs `url`, retrying transient errors up to `target.retries` times, and streams the body of
/// a 2xx answer into `sink` (at most `cap` bytes). With `since`, asks `If-Modified-Since`.
async fn get_with_retries<T: Transport>(
    client: &T,
    target: &Target,
    url: &str,
    since: Option<SystemTime>,
    sink: &mut dyn Sink,
    cap: u64,
    attempts: &mut u32,
) -> Result<Got, Failed> {
    let mut retry = 0;
    loop {
        *attempts += 1;
        let error = match get_following(client, target.timeout, url, since, None).await {
            Ok((head, mut body)) if (200..300).contains(&head.status) => {
                sink.clear().map_err(Failed::Save)?;
                sink.start(&head).map_err(Failed::Save)?;
                match receive(&head, &mut body, sink, cap, target.timeout).await {
                    Ok(()) => return Ok(Got::Body(head.last_modified)),
                    Err(BodyError::Save(e)) => return Err(Failed::Save(e)),
                    Err(BodyError::Fetch(error)) => error,
                }
            }
            Ok((head, mut body)) => {
                drain(&head, &mut body).await;
                match head.status {
                    404 => return Ok(Got::NotFound),
                    304 if since.is_some() => return Ok(Got::NotModified),
                    _ => FetchError::status(head.status, head.retry_after),
                }
            }
            Err(error) => error,
        };
        if !error.transient || retry >= target.retries || target.cancel.is_cancelled() {
            return Err(Failed::Fetch(error));
        }
        retry += 1;
        if !client.sleep(backoff(retry, error.retry_after)).await {
            return Err(Failed::Fetch(error));
        }
    }
}

/// GETs `url`, following at most [`MAX_REDIRECTS`] redirects (301, 302, 303, 307, 308; to
/// `http` and `https` URLs only, relative ones resolved against the URL that answered).
async fn get_following<T: Transport>(
    client: &T,
    timeout: Duration,
    url: &str,
    since: Option<SystemTime>,
    range: Option<(u64, String)>,
) -> Result<(Head, T::Body), FetchError> {
    let mut url = url.to_owned();
    let mut redirects = 0;
    loop {
        let (head, mut body) = client
            .get(&url, since, range.clone())
            .await
            .map_err(|fault| fault.into_error(timeout, 0, None))?;
        if head
            .content_length
            .is_some_and(|len| len > MAX_CONTENT_LENGTH)
        {
            return Err(Fault::InvalidHead.into_error(timeout, 0, None));
        }
        if !matches!(head.status, 301 | 302 | 303 | 307 | 308) {
            return Ok((head, body));
        }
        if redirects == MAX_REDIRECTS {
            return Err(FetchError::permanent(format!(
                "too many redirects (more than {MAX_REDIRECTS})"
            )));
        }
        redirects += 1;
        drain(&head, &mut body).await;
        let location = head
            .location
            .ok_or_else(|| FetchError::permanent("redirect without a Location header".into()))?;
        url = redirect_target(&url, &location)?;
    }
}

/// Where a redirect from `url` to `location` leads: an `http` or `https` URL.
fn redirect_target(url: &str, location: &str) -> Result<String, FetchError> {
    let invalid = || FetchError::permanent(format!("invalid redirect location: {location}"));
    let next = reqwest::Url::parse(url)
        .and_then(|base| base.join(location))
        .map_err(|_| invalid())?;
    match next.scheme() {
        "http" | "https" => Ok(next.into()),
        scheme => Err(FetchError::permanent(format!(
            "unsupported redirect scheme: {scheme}"
        ))),
    }
}

/// Why a body could not be received.
enum BodyError {
    /// The body did not arrive whole, or is over the cap.
    Fetch(FetchError),
    /// It could not be written where it goes.
    Save(io::Error),
}

/// Streams the body of a 2xx answer into `sink`, a piece at a time, failing as soon as it is
/// known to be over `cap` bytes (by its `Content-Length`, or as it arrives). A body in a
/// content encoding is refused: every request asks for `identity`, and nothing is decoded.
async fn receive<B: Body>(
    head: &Head,
    body: &mut B,
    sink: &mut dyn Sink,
    cap: u64,
    timeout: Duration,
) -> Result<(), BodyError> {
    if let Some(encoding) = &head.content_encoding
        && !encoding.trim().eq_ignore_ascii_case("identity")
    {
        return Err(BodyError::Fetch(FetchError::permanent(format!(
            "unsupported content encoding: {encoding}"
        ))));
    }
    if head.content_length.is_some_and(|len| len > cap) {
        return Err(BodyError::Fetch(FetchError::too_large(cap)));
    }
    let mut received: u64 = 0;
    loop {
        let chunk = match body.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(fault) => {
                let error = fault.into_error(timeout, received, head.content_length);
                return Err(BodyError::Fetch(error));
            }
        };
        received += chunk.len() as u64;
        if received > cap {
            return Err(BodyError::Fetch(FetchError::too_large(cap)));
        }
        sink.write(chunk).map_err(BodyError::Save)?;
    }
}

/// Reads and drops the body of an answer that is not saved (a 404, an error status), so that
/// its connection can serve the next request; one longer than [`MAX_DRAINED`] costs the
/// connection instead.
async fn drain<B: Body>(head: &Head, body: &mut B) {
    if head.content_length.is_some_and(|len| len > MAX_DRAINED) {
        return;
    }
    let mut read: u64 = 0;
    while let Ok(Some(chunk)) = body.chunk().await {
        read += chunk.len() as u64;
        if read > MAX_DRAINED {
            return;
        }
    }
}

/// The wait before retry number `retry` (from 1): exponential from [`BACKOFF_BASE`], capped at
/// [`BACKOFF_CAP`], with "equal jitter" (a random point in the upper half), and never shorter than
/// the server's `Retry-After` (capped at [`RETRY_AFTER_CAP`]).
pub(crate) fn backoff(retry: u32, retry_after: Option<Duration>) -> Duration {
    let exponential = BACKOFF_BASE
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let jittered = exponential.mul_f64(0.5 + 0.5 * random_fraction());
    retry_after.map_or(jittered, |after| jittered.max(after.min(RETRY_AFTER_CAP)))
}

/// A random number in [0, 1), from std's randomly keyed hasher (no RNG dependency needed).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs a future whose every `.await` is ready at once (those of [`BlockingClient`]) on the
/// current thread. A future that is pending is polled again after a yield, so even a misuse
/// cannot hang: it only spins.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}

/// Downloads `plan.codes` from `target` in `plan.mode`, handing each finished download to
/// `sink` on the calling thread, in completion order. Returns early (without error) when the
/// run is cancelled; codes never started get no record.
///
/// # Errors
///
/// Failing to build the HTTP client, the thread pool or the runtime. Failed downloads are
/// records, not errors.
pub(crate) fn run(
    plan: &Plan,
    target: Target,
    progress: &Progress,
    sink: &mut dyn FnMut(Record),
) -> Result<(), Error> {
    let target = Arc::new(target);
    match plan.mode {
        Mode::Sequential => {
            let client = BlockingClient::new(target.timeout, 1, Arc::clone(&target.cancel));
            sequential::run(&plan.codes, &client, &target, sink);
            Ok(())
        }
        Mode::Threads => {
            // The template of each worker's own client.
            let client = BlockingClient::new(target.timeout, 1, Arc::clone(&target.cancel));
            threads::run(
                &plan.codes,
                plan.concurrency,
                Arc::new(client),
                target,
                progress,
                sink,
            )
        }
        // Each worker process builds its own client.
        Mode::Processes => processes::run(&plan.codes, plan.concurrency, target, progress, sink),
        Mode::Cluster => match &plan.cluster {
            Some(cluster) => cluster::run(&plan.codes, plan.concurrency, cluster, target, sink),
            None => Err(Error::ClusterBroken("--mode cluster needs a broker".into())),
        },
        Mode::Async => {
            // One thread runs the event loop, the scheduling and the saves: the scheduler refills
            // a lane on the thread that saw it free, with no cross-thread wake-up per download
            // (the comparison with the multi-threaded runtime is in BENCHMARKS.md).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            runtime.block_on(async {
                let client = AsyncClient::new(
                    &target.base_url,
                    target.timeout,
                    plan.concurrency,
                    Arc::clone(&target.cancel),
                )?;
                asynchronous::run(
                    &plan.codes,
                    plan.concurrency,
                    Arc::new(client),
                    target,
                    sink,
                )
                .await;
                Ok(())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A scripted answer: a status, a `Retry-After`, and a body in pieces, the last of which
    /// may be an error (a connection lost in the body).
    #[derive(Debug)]
    struct Response {
        status: u16,
        retry_after: Option<Duration>,
        location: Option<String>,
        body: Vec<u8>,
    }

    /// A scripted transport: answers from a queue, records the URLs and sleeps.
    #[derive(Default)]
    struct Script {
        answers: Mutex<VecDeque<Result<Response, Fault>>>,
        urls: Mutex<Vec<String>>,
        sleeps: Mutex<Vec<Duration>>,
    }

    impl Script {
        fn new(answers: Vec<Result<Response, Fault>>) -> Self {
            Self {
                answers: Mutex::new(answers.into()),
                ..Self::default()
            }
        }
    }

    /// A scripted body, handed over in pieces of at most 4 bytes.
    struct ScriptBody {
        rest: Vec<u8>,
        piece: Vec<u8>,
    }

    impl Body for ScriptBody {
        fn chunk(&mut self) -> impl Future<Output = Result<Option<&[u8]>, Fault>> + Send {
            let n = self.rest.len().min(4);
            self.piece = self.rest.drain(..n).collect();
            std::future::ready(Ok((n > 0).then_some(&self.piece[..])))
        }
    }

    impl Transport for Script {
        type Body = ScriptBody;

        fn get(
            &self,
            url: &str,
            _since: Option<SystemTime>,
            _range: Option<(u64, String)>,
        ) -> impl Future<Output = Result<(Head, ScriptBody), Fault>> + Send {
            if let Ok(mut urls) = self.urls.lock() {
                urls.push(url.to_owned());
            }
            let answer = self.answers.lock().ok().and_then(|mut a| a.pop_front());
            let answer = answer
                .unwrap_or_else(|| Err(Fault::Other("script ended".into())))
                .map(|response| {
                    let head = Head {
                        status: response.status,
                        retry_after: response.retry_after,
                        content_length: Some(response.body.len() as u64),
                        content_encoding: None,
                        location: response.location,
                        last_modified: None,
                        etag: None,
                        content_range: None,
                    };
                    let body = ScriptBody {
                        rest: response.body,
                        piece: Vec::new(),
                    };
                    (head, body)
                });
            std::future::ready(answer)
        }

        fn sleep(&self, duration: Duration) -> impl Future<Output = bool> + Send {
            if let Ok(mut sleeps) = self.sleeps.lock() {
                sleeps.push(duration);
            }
            std::future::ready(true)
        }
    }

    fn ok(status: u16, body: &[u8]) -> Result<Response, Fault> {
        Ok(Response {
            status,
            retry_after: None,
            location: None,
            body: body.to_vec(),
        })
    }

    fn target(dir: &std::path::Path, retries: u32, name_by: NameBy) -> Target {
        Target {
            base_url: "http://h/flags".into(),
            dest: dir.to_owned(),
            name_by,
            retries,
            timeout: Duration::from_secs(1),
            cancel: Cancel::new(),
            run_start: Some(SystemTime::now()),
        }
    }

    #[test]
    fn ok_saves_the_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let script = Script::new(vec![ok(200, b"GIF89a")]);
        let record = block_on(get_flag(
            &script,
            &target(dir.path(), 0, NameBy::Code),
            "BR",
            3,
        ));
        assert_eq!(record.outcome, Outcome::Ok);
        assert_eq!((record.lane, record.attempts), (3, 1));
        assert!(record.end >= record.start);
        assert_eq!(std::fs::read(dir.path().join("BR.gif"))?, b"GIF89a");
        assert_eq!(
            *script.urls.lock().unwrap_or_else(|e| e.into_inner()),
            ["http://h/flags/br/br.gif"]
        );
        Ok(())
    }

    #[test]
    fn not_found_is_not_retried() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let script = Script::new(vec![ok(404, b"")]);
        let record = block_on(get_flag(
            &script,
            &target(dir.path(), 5, NameBy::Code),
            "AA",
            0,
        ));
        assert_eq!(
            record.outcome,
            Outcome::NotFound {
                url: "http://h/flags/aa/aa.gif".into()
            }
        );
        assert_eq!(record.attempts, 1);
        Ok(())
    }

    #[test]
    fn status_errors_and_retries() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let script = Script::new(vec![ok(418, b"")]);
        let record = block_on(get_flag(
            &script,
            &target(dir.path(), 5, NameBy::Code),
            "ZW",
            0,
        ));
        assert_eq!(
            record.outcome,
            Outcome::Error {
                message: "HTTP error 418 - I'm a teapot".into()
            }
        );
        assert_eq!(record.attempts, 1);

        let busy = Ok(Response {
            status: 503,
            retry_after: Some(Duration::from_secs(2)),
            location: None,
            body: vec![],
        });
        let script = Script::new(vec![busy, Err(Fault::ResetBeforeHead), ok(200, b"GIF")]);
        let record = block_on(get_flag(
            &script,
            &target(dir.path(), 2, NameBy::Code),
            "BR",
            0,
        ));
        assert_eq!(record.outcome, Outcome::Ok);
        assert_eq!(record.attempts, 3);
        let sleeps = script
            .sleeps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert_eq!(sleeps.len(), 2);
        assert!(sleeps[0] >= Duration::from_secs(2), "{sleeps:?}");
        assert!(
            sleeps[1] >= BACKOFF_BASE && sleeps[1] <= 2 * BACKOFF_BASE,
            "{sleeps:?}"
        );

        let script = Script::new(vec![ok(500, b""), ok(502, b"")]);
        let record = block_on(get_flag(
            &script,
            &target(dir.path(), 1, NameBy::Code),
            "DE",
            0,
        ));
        assert_eq!(
            record.outcome,
            Outcome::Error {
                message: "HTTP error 502 - Bad Gateway".into()
            }
        );
        assert_eq!(record.attempts, 2);
        assert!(!dir.path().join("DE.gif").exists());
        Ok(())
    }

    #[test]
    fn empty_body_is_an_error() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let script = Script::new(vec![ok(200, b"")]);
        let record = block_on(get_flag(
            &script,
            &target(dir.path(), 0, NameBy::Code),
            "BR",
            0,
        ));
        assert!(matches!(record.outcome, Outcome::Error { .. }));
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }

    #[test]
    fn name_by_country_sanitises() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let inner = dir.path().join("dest");
        std::fs::create_dir(&inner)?;
        let script = Script::new(vec![
            ok(200, b"GIF"),
            ok(200, br#"{"country": "../../etc/x"}"#),
        ]);
        let record = block_on(get_flag(
            &script,
            &target(&inner, 0, NameBy::Country),
            "BR",
            0,
        ));
        assert_eq!(record.outcome, Outcome::Ok);
        assert_eq!(std::fs::read(inner.join("_._etc_x.gif"))?, b"GIF");
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);

        let script = Script::new(vec![ok(200, b"GIF"), ok(200, b"not json")]);
        let record = block_on(get_flag(
            &script,
            &target(&inner, 0, NameBy::Country),
            "BR",
            0,
        ));
        assert!(
            matches!(&record.outcome, Outcome::Error { message } if message.starts_with("bad metadata.json"))
        );
        Ok(())
    }

    #[test]
    fn redirects_resolve_against_the_url_and_keep_to_http() {
        let from = "http://h:8000/flags/br/br.gif";
        let target = |location: &str| redirect_target(from, location).map_err(|e| e.message);
        assert_eq!(target("/x/br.gif"), Ok("http://h:8000/x/br.gif".into()));
        assert_eq!(
            target("br2.gif"),
            Ok("http://h:8000/flags/br/br2.gif".into())
        );
        assert_eq!(target("https://o/y"), Ok("https://o/y".into()));
        assert_eq!(
            target("file:///etc/passwd"),
            Err("unsupported redirect scheme: file".into())
        );
        assert_eq!(
            target("http://[::1"),
            Err("invalid redirect location: http://[::1".into())
        );
    }

    #[test]
    fn a_redirect_chain_is_followed_and_bounded() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let hop = |location: &str| {
            Ok(Response {
                status: 302,
                retry_after: None,
                location: Some(location.into()),
                body: b"moved".to_vec(),
            })
        };
        let script = Script::new(vec![hop("/a.gif"), hop("b.gif"), ok(200, b"GIF89a")]);
        let record = block_on(get_flag(
            &script,
            &target(dir.path(), 0, NameBy::Code),
            "BR",
            0,
        ));
        assert_eq!(record.outcome, Outcome::Ok);
        assert_eq!(
            *script.urls.lock().unwrap_or_else(|e| e.into_inner()),
            [
                "http://h/flags/br/br.gif",
                "http://h/a.gif",
                "http://h/b.gif"
            ]
        );

        let script = Script::new((0..=MAX_REDIRECTS).map(|_| hop("/again")).collect());
        let record = block_on(get_flag(
            &script,
            &target(dir.path(), 0, NameBy::Code),
            "BR",
            0,
        ));
        assert_eq!(
            record.outcome,
            Outcome::Error {
                message: "too many redirects (more than 10)".into()
            }
        );
        Ok(())
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        for retry in 1..40 {
            let expected = BACKOFF_BASE
                .saturating_mul(1 << (retry - 1).min(16))
                .min(BACKOFF_CAP);
            let delay = backoff(retry, None);
            assert!(
                delay >= expected / 2 && delay <= expected,
                "{retry}: {delay:?}"
            );
        }
        assert_eq!(backoff(1, Some(Duration::from_secs(3600))), RETRY_AFTER_CAP);
    }
}
