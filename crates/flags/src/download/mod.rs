//! The download path every mode shares, and the modes (one file each) that only schedule it.
//!
//! [`get_flag`] is written once, as an `async fn` generic over a [`Transport`]: the GET with
//! retries, the status classification, the optional `metadata.json`, the atomic save and the
//! timing record. The async mode awaits it on tokio with [`AsyncClient`]; the blocking modes drive
//! it with [`block_on`] over [`BlockingClient`], whose futures are ready at their first poll, so
//! the same code runs on a plain thread without a runtime.

mod asynchronous;
mod cancel;
mod http;
mod processes;
mod save;
mod sequential;
mod threads;

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use self::cancel::Cancel;
use self::http::{AsyncClient, BlockingClient};
pub use self::save::exit_between_saves;
use crate::error::Error;
use crate::plan::{Mode, NameBy, Plan};
use crate::report::{Outcome, Record};

/// First retry delay; doubles with each retry.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest computed backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Longest `Retry-After` honoured; a server asking for more gets this.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// A response, with its body read in full.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// `Retry-After` in seconds, when present.
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
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
}

/// An HTTP client as the shared download path sees it. Implementations reuse connections: one
/// client serves a whole run (or a whole worker), never one request.
pub(crate) trait Transport {
    /// GETs `url`, following a bounded number of redirects, and reads the whole body.
    fn get(&self, url: &str) -> impl Future<Output = Result<Response, FetchError>> + Send;

    /// Sleeps before a retry; `false` when the run was cancelled meanwhile.
    fn sleep(&self, duration: Duration) -> impl Future<Output = bool> + Send;
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
    let body = match get_with_retries(client, target, &url, attempts).await {
        Ok(Some(body)) if body.is_empty() => {
            return Outcome::Error {
                message: format!("empty response body: {url}"),
            };
        }
        Ok(Some(body)) => body,
        Ok(None) => return Outcome::NotFound { url },
        Err(message) => return Outcome::Error { message },
    };
    let name = match target.name_by {
        NameBy::Code => format!("{code}.gif"),
        NameBy::Country => match country_name(client, target, &lower, attempts).await {
            Ok(country) => save::country_file_name(&country, code),
            Err(message) => return Outcome::Error { message },
        },
    };
    match save::save_atomically(&target.dest, &name, &body) {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::Error {
            message: format!("cannot save {name}: {e}"),
        },
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
    match get_with_retries(client, target, &url, attempts).await? {
        Some(body) => serde_json::from_slice::<Metadata>(&body)
            .map(|m| m.country)
            .map_err(|e| format!("bad metadata.json ({e}): {url}")),
        None => Err(format!("metadata.json not found: {url}")),
    }
}

/// GETs `url`, retrying transient errors up to `target.retries` times. `Ok(None)` is a 404.
async fn get_with_retries<T: Transport>(
    client: &T,
    target: &Target,
    url: &str,
    attempts: &mut u32,
) -> Result<Option<Vec<u8>>, String> {
    let mut retry = 0;
    loop {
        *attempts += 1;
        let error = match client.get(url).await {
            Ok(response) if (200..300).contains(&response.status) => {
                return Ok(Some(response.body));
            }
            Ok(response) if response.status == 404 => return Ok(None),
            Ok(response) => FetchError::status(response.status, response.retry_after),
            Err(error) => error,
        };
        if !error.transient || retry >= target.retries || target.cancel.is_cancelled() {
            return Err(error.message);
        }
        retry += 1;
        if !client.sleep(backoff(retry, error.retry_after)).await {
            return Err(error.message);
        }
    }
}

/// The wait before retry number `retry` (from 1): exponential from [`BACKOFF_BASE`], capped at
/// [`BACKOFF_CAP`], with "equal jitter" (a random point in the upper half), and never shorter than
/// the server's `Retry-After` (capped at [`RETRY_AFTER_CAP`]).
fn backoff(retry: u32, retry_after: Option<Duration>) -> Duration {
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
pub(crate) fn run(plan: &Plan, target: Target, sink: &mut dyn FnMut(Record)) -> Result<(), Error> {
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
                sink,
            )
        }
        // Each worker process builds its own client.
        Mode::Processes => processes::run(&plan.codes, plan.concurrency, target, sink),
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

    /// A scripted transport: answers from a queue, records the URLs and sleeps.
    #[derive(Default)]
    struct Script {
        answers: Mutex<VecDeque<Result<Response, FetchError>>>,
        urls: Mutex<Vec<String>>,
        sleeps: Mutex<Vec<Duration>>,
    }

    impl Script {
        fn new(answers: Vec<Result<Response, FetchError>>) -> Self {
            Self {
                answers: Mutex::new(answers.into()),
                ..Self::default()
            }
        }
    }

    impl Transport for Script {
        fn get(&self, url: &str) -> impl Future<Output = Result<Response, FetchError>> + Send {
            if let Ok(mut urls) = self.urls.lock() {
                urls.push(url.to_owned());
            }
            let answer = self.answers.lock().ok().and_then(|mut a| a.pop_front());
            std::future::ready(
                answer.unwrap_or_else(|| Err(FetchError::permanent("script ended".into()))),
            )
        }

        fn sleep(&self, duration: Duration) -> impl Future<Output = bool> + Send {
            if let Ok(mut sleeps) = self.sleeps.lock() {
                sleeps.push(duration);
            }
            std::future::ready(true)
        }
    }

    fn ok(status: u16, body: &[u8]) -> Result<Response, FetchError> {
        Ok(Response {
            status,
            retry_after: None,
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
            body: vec![],
        });
        let script = Script::new(vec![
            busy,
            Err(FetchError::transient("reset".into())),
            ok(200, b"GIF"),
        ]);
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
