//! `flags get`: many URLs from a list, in memory that does not grow with the list, resumable.
//!
//! The list is read a line at a time ([`list`]) into a bounded look-ahead of per-host queues
//! ([`hosts`]); each download is the shared download path's ([`crate::download`]: the same
//! request, redirects, retries, streamed staged save), committed under a safe name derived
//! from the URL; the calling thread alone counts the outcomes (counters only, no record per
//! URL), appends the failures to `DEST/.flags-failed` in list format and the successes to
//! the resume journal ([`journal`]).

mod hosts;
mod journal;
mod list;

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concurrent_futures::ThreadPoolExecutor;

use self::hosts::Hosts;
use self::journal::Journal;
use self::list::{BadLine, Entry, ListReader};
use crate::download::{
    self, AsyncClient, BlockingClient, Cancel, Target, UrlOptions, UrlOutcome, UrlPool,
};
use crate::error::Error;
use crate::plan::{Mode, NameBy};
use crate::progress::Progress;
use crate::report::{DownloadStatus, Stop};
use crate::trace::TraceLine;

pub use self::journal::JOURNAL;

/// Where the failures of a run are listed, in `--dest`, in list format (`URL NAME`, each after
/// a `# line N: reason` comment), so that the file can be fed back with `-i`. Written as
/// [`FAILED_PART`] during the run and renamed at its end.
pub const FAILED: &str = ".flags-failed";
/// [`FAILED`] while the run writes it.
pub const FAILED_PART: &str = ".flags-failed.part";
/// Entries read ahead of the downloads, per allowed request (at least 64 in all).
const LOOKAHEAD_PER_REQ: usize = 4;

/// Where the URL list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListSource {
    /// A list file.
    File(PathBuf),
    /// Standard input.
    Stdin,
    /// URLs given as arguments, one entry each.
    Urls(Vec<String>),
}

/// The validated settings of a `flags get` run.
#[derive(Debug, Clone)]
pub struct GetPlan {
    /// The list.
    pub source: ListSource,
    /// [`Mode::Threads`], [`Mode::Async`] or [`Mode::Processes`] (sequential runs as
    /// threads).
    pub mode: Mode,
    /// Downloads at once, in all.
    pub max_req: usize,
    /// Downloads at once per host (and port).
    pub max_per_host: usize,
    /// The directory the files are saved in (it must exist).
    pub dest: PathBuf,
    /// The longest a request may take, body included.
    pub timeout: Duration,
    /// Retries of a transient error.
    pub retries: u32,
    /// The largest body saved, in bytes.
    pub max_size: u64,
    /// Make no request for an entry whose file exists.
    pub skip_existing: bool,
    /// `-N`: ask `If-Modified-Since` the file's modification time (a 304 counts as
    /// unchanged), and give saved files the server's `Last-Modified`.
    pub timestamping: bool,
    /// Print the final report as one JSON object.
    pub json: bool,
    /// Print a line per finished entry, and no progress bar.
    pub verbose: bool,
    /// Where to write a JSON line per finished entry ([`TraceLine`], the URL as its `code`),
    /// as it finishes.
    pub trace: Option<PathBuf>,
}

/// What a `flags get` run counted: counters only, whatever the length of the list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GetTally {
    /// Files saved (new, or replacing a different one from before the run).
    pub saved: u64,
    /// Bytes in the saved files.
    pub bytes: u64,
    /// Files from before the run with the same bytes, kept as they were.
    pub unchanged: u64,
    /// `--skip-existing`: entries whose file existed, not requested.
    pub existing: u64,
    /// Entries the journal lists as done by an earlier run, not requested.
    pub journalled: u64,
    /// 404s.
    pub not_found: u64,
    /// Other failed downloads.
    pub errors: u64,
    /// Lines of the list that are not an entry (bad URL, scheme, name, encoding, length).
    pub bad_lines: u64,
}

impl GetTally {
    /// Entries that did not end with their file in place.
    pub fn failed(&self) -> u64 {
        self.not_found + self.errors + self.bad_lines
    }
}

/// The `--json` report of `flags get`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GetReport {
    /// The counters.
    #[serde(flatten)]
    pub tally: GetTally,
    /// Seconds the run took.
    pub elapsed_s: f64,
    /// Whether Ctrl-C or SIGTERM stopped it.
    pub interrupted: bool,
}

/// What a `flags get` run did.
#[derive(Debug, Clone, Copy)]
pub struct GetSummary {
    /// The counters.
    pub tally: GetTally,
    /// What stopped the run early, if anything.
    pub stopped: Option<Stop>,
}

impl GetSummary {
    /// 130 after Ctrl-C, 143 after SIGTERM, 1 when any entry failed, 0 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        if let Some(stop) = self.stopped {
            ExitCode::from(stop.exit_status())
        } else if self.tally.failed() > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Downloads the list of `plan` into `plan.dest`, printing a line per entry with
/// [`GetPlan::verbose`], and the final report (or the `--json` object) on stdout.
///
/// Entries the journal lists are skipped; failures go to `DEST/.flags-failed`. `cancel`
/// stops reading the list; the downloads in flight finish.
///
/// # Errors
///
/// [`Error`] when the run cannot be carried out: the list cannot be read, the journal or
/// the failure list cannot be written, or a pool or runtime cannot start. A failed entry is
/// counted, not returned.
pub fn run_get(plan: &GetPlan, cancel: &Arc<Cancel>) -> Result<GetSummary, Error> {
    let dest_error = |source| Error::Dest {
        path: plan.dest.clone(),
        source,
    };
    let input: Box<dyn BufRead> = match &plan.source {
        ListSource::File(path) => Box::new(io::BufReader::with_capacity(
            64 * 1024,
            File::open(path).map_err(|source| list_error(path, source))?,
        )),
        ListSource::Stdin => Box::new(io::stdin().lock()),
        ListSource::Urls(urls) => Box::new(io::Cursor::new(urls.join("\n").into_bytes())),
    };
    let journal = Journal::open(&plan.dest).map_err(dest_error)?;
    let trace = match &plan.trace {
        Some(path) => Some((
            path.clone(),
            BufWriter::new(File::create(path).map_err(|source| Error::TraceCreate {
                path: path.clone(),
                source,
            })?),
        )),
        None => None,
    };
    let failed = File::create(plan.dest.join(FAILED_PART)).map_err(dest_error)?;
    let run_start = download::run_start(&plan.dest).map_err(dest_error)?;
    let progress = Progress::stream(plan.verbose, plan.json);
    cancel.on_cancel({
        let progress = progress.clone();
        move || progress.note("*** Interrupted: starting no more downloads")
    });
    let target = Arc::new(Target {
        base_url: String::new(),
        dest: plan.dest.clone(),
        name_by: NameBy::Code,
        // The scheduler retries, outside the slots (see `Run::finished`).
        retries: 0,
        timeout: plan.timeout,
        cancel: Arc::clone(cancel),
        run_start: Some(run_start),
    });
    let max_req = plan.max_req.max(1);
    let mut run = Run {
        list: ListReader::new(input),
        list_ended: false,
        hosts: Hosts::new(
            (max_req * LOOKAHEAD_PER_REQ).max(64),
            max_req,
            plan.max_per_host,
        ),
        journal,
        failed: BufWriter::new(failed),
        tally: GetTally::default(),
        progress,
        verbose: plan.verbose,
        retries: plan.retries,
        cancel: Arc::clone(cancel),
        trace,
        start: Instant::now(),
    };
    let start = run.start;
    match plan.mode {
        Mode::Async => run_async(&mut run, plan, target)?,
        Mode::Processes => run_processes(&mut run, plan, &target)?,
        _ => run_threads(&mut run, plan, target)?,
    }
    let elapsed = start.elapsed();
    run.progress.finish();
    run.journal.commit().map_err(dest_error)?;
    run.failed.flush().map_err(dest_error)?;
    if let Some((path, out)) = &mut run.trace {
        out.flush().map_err(|source| Error::TraceWrite {
            path: path.clone(),
            source,
        })?;
    }
    std::fs::rename(plan.dest.join(FAILED_PART), plan.dest.join(FAILED)).map_err(dest_error)?;

    let stopped = cancel.stopped();
    let tally = run.tally;
    let out = if plan.json {
        let report = GetReport {
            tally,
            elapsed_s: elapsed.as_secs_f64(),
            interrupted: stopped.is_some(),
        };
        serde_json::to_string(&report).map_err(Error::Json)? + "\n"
    } else {
        final_report(&tally, &plan.dest, elapsed, stopped)
    };
    let _ = io::stdout().lock().write_all(out.as_bytes());
    Ok(GetSummary { tally, stopped })
}

/// The error for a list that cannot be read.
fn list_error(path: &Path, source: io::Error) -> Error {
    Error::List {
        path: path.to_owned(),
        source,
    }
}

/// The final report: what was saved, kept, skipped and failed.
fn final_report(tally: &GetTally, dest: &Path, elapsed: Duration, stopped: Option<Stop>) -> String {
    let mut out = format!(
        "--------------------\n{} saved ({} bytes), {} unchanged, {} existing (skipped), {} done before (journal).\n",
        tally.saved, tally.bytes, tally.unchanged, tally.existing, tally.journalled
    );
    if tally.failed() > 0 {
        out += &format!(
            "{} failed: {} not found, {} errors, {} bad lines (listed in {}).\n",
            tally.failed(),
            tally.not_found,
            tally.errors,
            tally.bad_lines,
            dest.join(FAILED).display()
        );
    }
    if let Some(stop) = stopped {
        out += &format!("Interrupted by {}.\n", stop.name());
    }
    out + &format!("Elapsed time: {:.2}s\n", elapsed.as_secs_f64())
}

/// The state of a run the calling thread keeps: the list, the queues, the counters and the
/// files it appends to.
struct Run {
    list: ListReader<Box<dyn BufRead>>,
    list_ended: bool,
    hosts: Hosts,
    journal: Journal,
    failed: BufWriter<File>,
    tally: GetTally,
    progress: Progress,
    verbose: bool,
    /// Retries of a transient failure (`--retries`).
    retries: u32,
    cancel: Arc<Cancel>,
    /// `--trace`: the file and the writer its lines go through.
    trace: Option<(PathBuf, BufWriter<File>)>,
    /// When the run started (trace times count from it).
    start: Instant,
}

/// What a download task hands back: the entry, how it ended, and when it ran (on which lane).
struct Done {
    entry: Entry,
    outcome: UrlOutcome,
    lane: usize,
    start: Instant,
    end: Instant,
}

impl Run {
    /// Reads the list into the queues while the look-ahead has room; bad lines and entries
    /// done before are counted at once.
    fn fill(&mut self) -> Result<(), Error> {
        while !self.list_ended && self.hosts.wants_more() && !self.cancel.is_cancelled() {
            match self.list.next_item().map_err(Error::ListRead)? {
                None => self.list_ended = true,
                Some(Ok(entry)) if self.journal.is_done(&entry) => {
                    self.tally.journalled += 1;
                    self.progress.inc();
                }
                Some(Ok(entry)) => self.hosts.push(entry),
                Some(Err(bad)) => self.bad_line(&bad)?,
            }
        }
        Ok(())
    }

    /// Whether the run is over: the list read and no retry waiting (or the run cancelled),
    /// nothing running.
    fn is_over(&self) -> bool {
        let done = self.list_ended && !self.hosts.has_delayed();
        (done || self.cancel.is_cancelled()) && self.hosts.running() == 0
    }

    /// Starts the retries that are due; how long the loop may wait for a download to finish
    /// (until the next retry is due, at most a journal commit's time).
    fn wake(&mut self) -> Duration {
        let now = Instant::now();
        self.hosts.wake(now);
        self.hosts
            .next_wake()
            .map_or(journal::GROUP_TIME, |at| at.saturating_duration_since(now))
            .min(journal::GROUP_TIME)
    }

    fn bad_line(&mut self, bad: &BadLine) -> Result<(), Error> {
        self.tally.bad_lines += 1;
        self.progress.inc();
        if self.verbose {
            self.progress
                .line(&format!("line {}: bad line: {}", bad.line, bad.reason));
        }
        writeln!(self.failed, "# line {}: {}", bad.line, bad.reason).map_err(Error::FailedWrite)
    }

    /// Counts a finished download, or puts it in the delay queue for a retry: a transient
    /// failure with retries left waits there (exponential backoff with jitter, at least the
    /// server's `Retry-After`, which also pauses its host), holding no slot.
    fn finished(&mut self, done: Done) -> Result<(), Error> {
        let Done {
            mut entry,
            outcome,
            lane,
            start,
            end,
        } = done;
        self.hosts.finished(&entry.host);
        if let Some((path, out)) = &mut self.trace {
            let status = match &outcome {
                UrlOutcome::Saved(_) | UrlOutcome::Unchanged | UrlOutcome::Existing => {
                    DownloadStatus::Ok
                }
                UrlOutcome::NotFound => DownloadStatus::NotFound,
                UrlOutcome::Error(_) | UrlOutcome::Transient { .. } => DownloadStatus::Error,
            };
            let secs = |t: Instant| t.saturating_duration_since(self.start).as_secs_f64();
            let line = TraceLine {
                code: entry.url.clone(),
                lane,
                start: secs(start),
                end: secs(end),
                attempts: entry.retries + 1,
                outcome: status,
            };
            serde_json::to_writer(&mut *out, &line)
                .map_err(io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|source| Error::TraceWrite {
                    path: path.clone(),
                    source,
                })?;
        }
        if let UrlOutcome::Transient { retry_after, .. } = &outcome
            && entry.retries < self.retries
            && !self.cancel.is_cancelled()
        {
            entry.retries += 1;
            let wait = download::backoff(entry.retries, *retry_after);
            self.hosts
                .retry_at(entry, Instant::now() + wait, retry_after.is_some());
            return Ok(());
        }
        let entry = &entry;
        self.progress.inc();
        let failure = match &outcome {
            UrlOutcome::Saved(bytes) => {
                self.tally.saved += 1;
                self.tally.bytes += bytes;
                None
            }
            UrlOutcome::Unchanged => {
                self.tally.unchanged += 1;
                None
            }
            UrlOutcome::Existing => {
                self.tally.existing += 1;
                None
            }
            UrlOutcome::NotFound => {
                self.tally.not_found += 1;
                Some(format!("not found: {}", entry.url))
            }
            UrlOutcome::Error(message) | UrlOutcome::Transient { message, .. } => {
                self.tally.errors += 1;
                Some(message.clone())
            }
        };
        if self.verbose {
            let line = match (&failure, &outcome) {
                (Some(reason), _) => format!("{} error: {reason}", entry.url),
                (None, UrlOutcome::Unchanged) => format!("{} unchanged: {}", entry.url, entry.name),
                (None, UrlOutcome::Existing) => format!("{} exists: {}", entry.url, entry.name),
                (None, _) => format!("{} OK: {}", entry.url, entry.name),
            };
            self.progress.line(&line);
        }
        match failure {
            Some(reason) => writeln!(
                self.failed,
                "# line {}: {reason}\n{}",
                entry.line,
                entry.list_line()
            )
            .map_err(Error::FailedWrite),
            None => self.journal.record(entry).map_err(Error::JournalWrite),
        }
    }
}

thread_local! {
    /// This worker thread's client (the pool's threads serve one run and end with it).
    static CLIENT: std::cell::OnceCell<BlockingClient> = const { std::cell::OnceCell::new() };
    /// This worker thread's lane in the trace, numbered in the order threads first download.
    static LANE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// `--mode threads`: our `ThreadPoolExecutor`, `max_req` workers with a blocking client each;
/// the calling thread schedules and counts.
fn run_threads(run: &mut Run, plan: &GetPlan, target: Arc<Target>) -> Result<(), Error> {
    let pool = ThreadPoolExecutor::builder()
        .max_workers(plan.max_req.max(1))
        .thread_name_prefix("flags-get")
        .build()
        .map_err(Error::ThreadPool)?;
    let client = Arc::new(BlockingClient::new(
        plan.timeout,
        1,
        Arc::clone(&target.cancel),
    ));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
    let lanes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let options = UrlOptions {
        cap: plan.max_size,
        skip_existing: plan.skip_existing,
        timestamping: plan.timestamping,
    };
    loop {
        let wait = run.wake();
        run.fill()?;
        while !run.cancel.is_cancelled()
            && let Some(entry) = run.hosts.start()
        {
            let (client, target, done) =
                (Arc::clone(&client), Arc::clone(&target), done_tx.clone());
            let lanes = Arc::clone(&lanes);
            let task = move || {
                let lane = LANE.with(|lane| {
                    *lane.get().get_or_insert_with(|| {
                        let id = lanes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        lane.set(Some(id));
                        id
                    })
                });
                let start = Instant::now();
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    CLIENT.with(|own| {
                        let own = own.get_or_init(|| client.sibling());
                        download::block_on(download::get_url(
                            own,
                            &target,
                            &entry.url,
                            &entry.name,
                            entry.key(),
                            options,
                        ))
                    })
                }))
                .unwrap_or_else(|_| UrlOutcome::Error("download task failed: it panicked".into()));
                let _ = done.send(Done {
                    entry,
                    outcome,
                    lane,
                    start,
                    end: Instant::now(),
                });
            };
            pool.submit(task).map_err(|_| Error::ThreadPoolRefused)?;
        }
        if run.is_over() {
            break;
        }
        let done = match done_rx.recv_timeout(wait) {
            Ok(done) => done,
            // Nothing finished for a while: what is done is made durable meanwhile.
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                run.journal.commit().map_err(Error::JournalWrite)?;
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        run.finished(done)?;
    }
    pool.shutdown(false, false);
    Ok(())
}

/// `--mode processes`: our `ProcessPoolExecutor`, `max_req` worker processes with a blocking
/// client each; each task's done-callback hands its outcome to the calling thread, which
/// schedules and counts as in the threads mode.
fn run_processes(run: &mut Run, plan: &GetPlan, target: &Target) -> Result<(), Error> {
    let options = UrlOptions {
        cap: plan.max_size,
        skip_existing: plan.skip_existing,
        timestamping: plan.timestamping,
    };
    let pool = UrlPool::new(plan.max_req.max(1), target, options)?;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
    // Lanes are the workers' pids, numbered in the order their first result arrives.
    let mut lanes = std::collections::HashMap::new();
    loop {
        let wait = run.wake();
        run.fill()?;
        while !run.cancel.is_cancelled()
            && let Some(entry) = run.hosts.start()
        {
            let (url, name, key) = (entry.url.clone(), entry.name.clone(), entry.key());
            let done = done_tx.clone();
            let start = Instant::now();
            let submitted = pool.submit(url, name, key, move |pid, outcome| {
                let outcome = outcome
                    .unwrap_or_else(|| UrlOutcome::Error("not attempted: interrupted".into()));
                let _ = done.send(Done {
                    entry,
                    outcome,
                    lane: pid as usize,
                    start,
                    end: Instant::now(),
                });
            });
            if let Err(error) = submitted {
                if run.cancel.is_cancelled() {
                    break;
                }
                return Err(error);
            }
        }
        if run.is_over() {
            break;
        }
        let mut done = match done_rx.recv_timeout(wait) {
            Ok(done) => done,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                run.journal.commit().map_err(Error::JournalWrite)?;
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let next = lanes.len();
        done.lane = *lanes.entry(done.lane).or_insert(next);
        run.finished(done)?;
    }
    pool.shutdown();
    Ok(())
}

/// `--mode async`: tokio tasks on one thread, at most `max_req` at once.
fn run_async(run: &mut Run, plan: &GetPlan, target: Arc<Target>) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async {
        let client = Arc::new(AsyncClient::new(
            "http://",
            plan.timeout,
            plan.max_req.max(1),
            Arc::clone(&target.cancel),
        )?);
        let options = UrlOptions {
            cap: plan.max_size,
            skip_existing: plan.skip_existing,
            timestamping: plan.timestamping,
        };
        let mut tasks = tokio::task::JoinSet::new();
        // The entry of each running task, to count it even if the task panics.
        let mut running = std::collections::HashMap::new();
        loop {
            let wait = run.wake();
            run.fill()?;
            while !run.cancel.is_cancelled()
                && let Some(entry) = run.hosts.start()
            {
                let (client, target) = (Arc::clone(&client), Arc::clone(&target));
                let (url, name, key) = (entry.url.clone(), entry.name.clone(), entry.key());
                let handle = tasks.spawn(async move {
                    let start = Instant::now();
                    let outcome =
                        download::get_url(&*client, &target, &url, &name, key, options).await;
                    (outcome, start, Instant::now())
                });
                running.insert(handle.id(), entry);
            }
            if run.is_over() {
                break;
            }
            if tasks.is_empty() {
                // Only retries wait: until the first is due.
                tokio::time::sleep(wait).await;
                run.journal.commit().map_err(Error::JournalWrite)?;
                continue;
            }
            let joined = match tokio::time::timeout(wait, tasks.join_next_with_id()).await {
                Ok(Some(joined)) => joined,
                Ok(None) => continue,
                // Nothing finished for a while: what is done is made durable meanwhile.
                Err(_) => {
                    run.journal.commit().map_err(Error::JournalWrite)?;
                    continue;
                }
            };
            let now = Instant::now();
            let (id, (outcome, start, end)) = match joined {
                Ok(done) => done,
                Err(error) => (
                    error.id(),
                    (
                        UrlOutcome::Error(format!("download task failed: {error}")),
                        now,
                        now,
                    ),
                ),
            };
            if let Some(entry) = running.remove(&id) {
                run.finished(Done {
                    entry,
                    outcome,
                    // One thread runs every task.
                    lane: 0,
                    start,
                    end,
                })?;
            }
        }
        Ok(())
    })
}
