//! The lazy, bounded `map` shared by both pools: ordered ([`Map`]) and in completion
//! order ([`MapUnordered`]).
//!
//! The input is pulled on the consumer's thread, batched into chunks and submitted
//! through a [`ChunkSubmit`], with at most `window` chunks in flight. A chunk's items
//! run one after another inside one task; a panicking item is caught and recorded at
//! its position while the rest of the chunk goes on. With automatic chunking, the
//! chunk size follows the measured cost of one call so that a chunk takes about
//! [`AUTO_TARGET_NANOS`]: tiny calls are batched by the thousand, slow calls (I/O) go
//! one per task so that they still run concurrently.
//!
//! [`Map`] and [`MapUnordered`] are `Send` when the input iterator and the results are
//! (the submitter is boxed as `dyn ChunkSubmit + Send`), so a lazy map can be returned,
//! consumed on another thread or held across an `.await` in a spawned task. They are not
//! `Sync`, and need not be: an iterator advances through `&mut self`, so a shared
//! reference to one is of no use to another thread.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{FutureError, MapError, MapItemError, PanicError, ResultTimeoutError};
use crate::future::FutureHandle;

/// The work one automatic chunk aims for, in nanoseconds.
pub(crate) const AUTO_TARGET_NANOS: u64 = 100_000;
/// The largest automatic chunk.
pub(crate) const AUTO_MAX_CHUNK: usize = 16_384;

/// Options of `map`, `map_with` and `map_unordered`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::MapOptions;
///
/// let options = MapOptions::new()
///     .window(8)                        // at most 8 chunks in flight
///     .chunksize(16)                    // 16 items per task (default: adaptive)
///     .timeout(Duration::from_secs(5)); // measured from the call to map
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct MapOptions {
    window: Option<usize>,
    chunksize: Option<usize>,
    timeout: Option<Duration>,
}

impl MapOptions {
    /// The defaults: a window of twice the worker count, adaptive chunks, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many chunks may be in flight (submitted and not yet consumed). Zero is refused.
    pub fn window(mut self, chunks: usize) -> Self {
        self.window = Some(chunks);
        self
    }

    /// A fixed number of items per task, Python's `chunksize`. Zero is refused. Without
    /// it the size adapts to the measured cost of a call.
    pub fn chunksize(mut self, items: usize) -> Self {
        self.chunksize = Some(items);
        self
    }

    /// A deadline for the whole map, measured from the call. A timeout too large to add
    /// to the current time means no deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The result of one chunk: the successful values in order and the failures with
/// their positions in the chunk.
#[derive(Debug)]
pub(crate) struct ChunkOutput<R> {
    pub(crate) values: Vec<R>,
    pub(crate) failures: Vec<(usize, FutureError)>,
    pub(crate) nanos_per_item: u64,
}

impl<R> ChunkOutput<R> {
    /// Runs `f` on each item of `chunk`, catching each panic at its position.
    pub(crate) fn run<A, F: Fn(A) -> R + ?Sized>(chunk: Vec<A>, f: &F) -> Self {
        let start = Instant::now();
        let len = chunk.len();
        let mut failures = Vec::new();
        let mut position = 0;
        // `into_iter().filter_map(..).collect()` runs in place when `A` and `R` have the
        // same layout (std reuses the chunk's buffer): no second allocation, and the
        // results stay in the cache lines the items came through.
        let values: Vec<R> = chunk
            .into_iter()
            .filter_map(|item| {
                let at = position;
                position += 1;
                catch_unwind(AssertUnwindSafe(|| f(item)))
                    .map_err(|payload| {
                        failures.push((at, FutureError::Panicked(PanicError::new(payload))));
                    })
                    .ok()
            })
            .collect();
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Self {
            values,
            failures,
            nanos_per_item: nanos / len.max(1) as u64,
        }
    }
}

/// Submits one chunk of a map to a pool.
pub(crate) trait ChunkSubmit<A, R> {
    fn submit_chunk(&self, chunk: Vec<A>) -> Result<FutureHandle<ChunkOutput<R>>, MapError>;
}

/// The chunk size: fixed, or adapting to the measured cost of a call.
#[derive(Debug, Clone, Copy)]
enum Chunking {
    Fixed(usize),
    Auto(usize),
}

impl Chunking {
    fn size(self) -> usize {
        match self {
            Self::Fixed(n) | Self::Auto(n) => n,
        }
    }

    fn observe(&mut self, nanos_per_item: u64) {
        if let Self::Auto(size) = self {
            let fit = AUTO_TARGET_NANOS / nanos_per_item.max(1);
            *size = usize::try_from(fit)
                .unwrap_or(AUTO_MAX_CHUNK)
                .clamp(1, AUTO_MAX_CHUNK);
        }
    }

    /// Takes a finished chunk of `len` items for the iterators (learning the cost of a call
    /// from it): its values to yield straight when all succeeded, otherwise a drain.
    fn load<R>(
        &mut self,
        finished: Result<ChunkOutput<R>, FutureError>,
        len: usize,
    ) -> (std::vec::IntoIter<R>, Option<ChunkDrain<R>>) {
        match finished {
            Ok(output) => {
                self.observe(output.nanos_per_item);
                ChunkDrain::split(output, len)
            }
            Err(error) => (Vec::new().into_iter(), Some(ChunkDrain::failed(error, len))),
        }
    }
}

/// What both map iterators share: the input, the submitter and the options.
struct Feeder<'a, I: Iterator, R> {
    submitter: Box<dyn ChunkSubmit<I::Item, R> + Send + 'a>,
    source: I,
    exhausted: bool,
    chunking: Chunking,
    window: usize,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// Why submitting stopped early; reported after the chunks in flight.
    stopped: Option<MapError>,
}

impl<'a, I: Iterator, R> Feeder<'a, I, R> {
    fn new(
        submitter: Box<dyn ChunkSubmit<I::Item, R> + Send + 'a>,
        source: I,
        default_window: usize,
        options: MapOptions,
    ) -> Result<Self, MapError> {
        let window = options.window.unwrap_or(default_window);
        if window == 0 {
            return Err(MapError::InvalidOption("window must be at least 1"));
        }
        let chunking = match options.chunksize {
            Some(0) => return Err(MapError::InvalidOption("chunksize must be at least 1")),
            Some(n) => Chunking::Fixed(n),
            None => Chunking::Auto(1),
        };
        Ok(Self {
            submitter,
            source,
            exhausted: false,
            chunking,
            window,
            timeout: options.timeout,
            deadline: options.timeout.and_then(|t| Instant::now().checked_add(t)),
            stopped: None,
        })
    }

    /// Takes the next chunk from the input and submits it; `None` when the input is
    /// exhausted or submitting failed (recorded in `stopped`).
    fn submit_next(&mut self) -> Option<(FutureHandle<ChunkOutput<R>>, usize)> {
        if self.exhausted || self.stopped.is_some() {
            return None;
        }
        let size = self.chunking.size();
        let chunk: Vec<I::Item> = self.source.by_ref().take(size).collect();
        if chunk.len() < size {
            self.exhausted = true;
        }
        if chunk.is_empty() {
            return None;
        }
        let len = chunk.len();
        match self.submitter.submit_chunk(chunk) {
            Ok(handle) => Some((handle, len)),
            Err(e) => {
                self.stopped = Some(e);
                None
            }
        }
    }

    /// After the first fill: the error that refused the very first chunk, if nothing could
    /// be submitted (the map call then fails); otherwise it is reported after the chunks in
    /// flight.
    fn refused_at_start(&mut self, nothing_in_flight: bool) -> Result<(), MapError> {
        match self.stopped.take() {
            Some(e) if nothing_in_flight => Err(e),
            stopped => {
                self.stopped = stopped;
                Ok(())
            }
        }
    }

    /// The last item of a map whose submitting stopped early: why it stopped.
    fn stopped_item(&mut self) -> Option<Result<R, MapItemError>> {
        self.stopped.take().map(|e| Err(MapItemError::Stopped(e)))
    }

    fn timeout_error(&self) -> MapItemError {
        MapItemError::Timeout(self.timeout.unwrap_or(Duration::MAX))
    }
}

/// Yields one chunk's items in order.
struct ChunkDrain<R> {
    values: std::vec::IntoIter<R>,
    failures: VecDeque<(usize, FutureError)>,
    whole: Option<FutureError>,
    position: usize,
    len: usize,
}

impl<R> ChunkDrain<R> {
    fn new(output: ChunkOutput<R>, len: usize) -> Self {
        Self {
            values: output.values.into_iter(),
            failures: output.failures.into(),
            whole: None,
            position: 0,
            len,
        }
    }

    /// A chunk that failed as a whole (cancelled, broken pool): every item gets the error.
    fn failed(error: FutureError, len: usize) -> Self {
        Self {
            values: Vec::new().into_iter(),
            failures: VecDeque::new(),
            whole: Some(error),
            position: 0,
            len,
        }
    }

    /// Splits a chunk's output for the iterators: when every item succeeded (the
    /// usual case), its values, to be yielded straight; otherwise a drain.
    fn split(output: ChunkOutput<R>, len: usize) -> (std::vec::IntoIter<R>, Option<Self>) {
        if output.failures.is_empty() && output.values.len() == len {
            (output.values.into_iter(), None)
        } else {
            (Vec::new().into_iter(), Some(Self::new(output, len)))
        }
    }

    fn next(&mut self) -> Option<Result<R, MapItemError>> {
        if self.position == self.len {
            return None;
        }
        let position = self.position;
        self.position += 1;
        if let Some(error) = &self.whole {
            return Some(Err(MapItemError::Failed(error.describe())));
        }
        if self.failures.front().is_some_and(|(at, _)| *at == position) {
            return self
                .failures
                .pop_front()
                .map(|(_, e)| Err(MapItemError::Failed(e)));
        }
        Some(self.values.next().ok_or_else(|| {
            MapItemError::Failed(FutureError::WorkerFailed(
                "a map chunk returned fewer results than items".to_owned(),
            ))
        }))
    }
}

/// The iterator of an ordered `map`: yields `Ok(value)` or the item's
/// [`MapItemError`], in input order.
///
/// Dropping it cancels the chunks that have not started.
pub struct Map<'a, I: Iterator, R> {
    feeder: Feeder<'a, I, R>,
    in_flight: VecDeque<(FutureHandle<ChunkOutput<R>>, usize)>,
    /// The values of the current chunk when all its items succeeded (the hot path).
    ready: std::vec::IntoIter<R>,
    /// The current chunk when some of its items failed.
    current: Option<ChunkDrain<R>>,
    finished: bool,
}

impl<'a, I: Iterator, R> Map<'a, I, R> {
    pub(crate) fn new(
        submitter: Box<dyn ChunkSubmit<I::Item, R> + Send + 'a>,
        source: I,
        default_window: usize,
        options: MapOptions,
    ) -> Result<Self, MapError> {
        let mut map = Self {
            feeder: Feeder::new(submitter, source, default_window, options)?,
            in_flight: VecDeque::new(),
            ready: Vec::new().into_iter(),
            current: None,
            finished: false,
        };
        map.fill();
        map.feeder.refused_at_start(map.in_flight.is_empty())?;
        Ok(map)
    }

    fn fill(&mut self) {
        while self.in_flight.len() < self.feeder.window {
            match self.feeder.submit_next() {
                Some(entry) => self.in_flight.push_back(entry),
                None => break,
            }
        }
    }

    fn cancel_all(&mut self) {
        for (handle, _) in self.in_flight.drain(..) {
            handle.cancel();
        }
    }
}

impl<I: Iterator, R> Iterator for Map<'_, I, R> {
    type Item = Result<R, MapItemError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The hot path, kept small enough to inline.
        if let Some(value) = self.ready.next() {
            return Some(Ok(value));
        }
        self.next_slow()
    }

    // Internal iteration (`for_each`, `sum`, `count`, ...) takes a whole chunk's values in
    // a tight loop instead of one `next` call per item.
    fn fold<B, G>(mut self, init: B, mut g: G) -> B
    where
        G: FnMut(B, Self::Item) -> B,
    {
        let mut acc = init;
        loop {
            acc = self
                .ready
                .by_ref()
                .fold(acc, |acc, value| g(acc, Ok(value)));
            match self.next_slow() {
                Some(item) => acc = g(acc, item),
                None => return acc,
            }
        }
    }
}

impl<I: Iterator, R> Map<'_, I, R> {
    /// Collects every result in input order, stopping at the first item that failed
    /// (Python's `list(executor.map(f, items))`).
    ///
    /// The same as `.collect::<Result<Vec<R>, _>>()`, but each chunk's values are moved
    /// into the vector at once rather than one `next` call per item: for tiny calls it is
    /// several times faster. After a failure, the chunks that have not started are
    /// cancelled (the map is dropped).
    ///
    /// # Errors
    ///
    /// The first item's [`MapItemError`], in input order.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let squares = pool.map(|x: u64| x * x, 0..1000)?.try_collect_vec()?;
    /// assert_eq!(squares[999], 998_001);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_collect_vec(mut self) -> Result<Vec<R>, MapItemError> {
        // Room for what the input says is left, up to 16 MiB of results up front: an
        // iterator may claim `usize::MAX` items (an endless range), and the vector grows
        // past the first guess anyway.
        let most = (16 << 20) / std::mem::size_of::<R>().max(1);
        let mut out = Vec::with_capacity(self.feeder.source.size_hint().0.min(most));
        loop {
            // `Vec::extend` from an owned `vec::IntoIter` is one copy of its values.
            out.extend(std::mem::take(&mut self.ready));
            match self.next_slow() {
                Some(Ok(value)) => out.push(value),
                Some(Err(error)) => return Err(error),
                None => return Ok(out),
            }
        }
    }
}

impl<I: Iterator, R> Map<'_, I, R> {
    /// `next` at a chunk boundary or in a chunk with failures. Kept out of line so that
    /// `next`, called once per item, stays small enough to inline.
    #[inline(never)]
    fn next_slow(&mut self) -> Option<Result<R, MapItemError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(value) = self.ready.next() {
                return Some(Ok(value));
            }
            if let Some(item) = self.current.as_mut().and_then(ChunkDrain::next) {
                return Some(item);
            }
            self.current = None;
            self.fill();
            let Some((handle, len)) = self.in_flight.pop_front() else {
                self.finished = true;
                return self.feeder.stopped_item();
            };
            let waited = match self.feeder.deadline {
                None => handle.result().map_err(ResultTimeoutError::Failed),
                Some(deadline) => {
                    handle.result_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            };
            let finished = match waited {
                Ok(output) => Ok(output),
                Err(ResultTimeoutError::Failed(error)) => Err(error),
                Err(ResultTimeoutError::Timeout(handle)) => {
                    handle.cancel();
                    self.cancel_all();
                    self.finished = true;
                    return Some(Err(self.feeder.timeout_error()));
                }
            };
            (self.ready, self.current) = self.feeder.chunking.load(finished, len);
        }
    }
}

impl<I: Iterator, R> Drop for Map<'_, I, R> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

impl<I: Iterator, R> fmt::Debug for Map<'_, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.in_flight.len())
            .field("chunking", &self.feeder.chunking)
            .field("window", &self.feeder.window)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The iterator of `map_unordered`: yields results as chunks complete.
///
/// Dropping it cancels the chunks that have not started.
pub struct MapUnordered<'a, I: Iterator, R> {
    feeder: Feeder<'a, I, R>,
    in_flight: HashMap<u64, (FutureHandle<ChunkOutput<R>>, usize)>,
    next_id: u64,
    completions: Receiver<u64>,
    notify: Sender<u64>,
    /// The values of the current chunk when all its items succeeded (the hot path).
    ready: std::vec::IntoIter<R>,
    /// The current chunk when some of its items failed.
    current: Option<ChunkDrain<R>>,
    finished: bool,
}

impl<'a, I: Iterator, R: Send + 'static> MapUnordered<'a, I, R> {
    pub(crate) fn new(
        submitter: Box<dyn ChunkSubmit<I::Item, R> + Send + 'a>,
        source: I,
        default_window: usize,
        options: MapOptions,
    ) -> Result<Self, MapError> {
        let (notify, completions) = crossbeam_channel::unbounded();
        let mut map = Self {
            feeder: Feeder::new(submitter, source, default_window, options)?,
            in_flight: HashMap::new(),
            next_id: 0,
            completions,
            notify,
            ready: Vec::new().into_iter(),
            current: None,
            finished: false,
        };
        map.fill();
        map.feeder.refused_at_start(map.in_flight.is_empty())?;
        Ok(map)
    }

    fn fill(&mut self) {
        while self.in_flight.len() < self.feeder.window {
            let Some((handle, len)) = self.feeder.submit_next() else {
                break;
            };
            let id = self.next_id;
            self.next_id += 1;
            let notify = self.notify.clone();
            handle.add_done_callback(move |_| {
                // The receiver lives as long as the iterator; after that nobody listens.
                let _ = notify.send(id);
            });
            self.in_flight.insert(id, (handle, len));
        }
    }
}

impl<I: Iterator, R> MapUnordered<'_, I, R> {
    fn cancel_all(&mut self) {
        for (_, (handle, _)) in self.in_flight.drain() {
            handle.cancel();
        }
    }
}

impl<I: Iterator, R: Send + 'static> Iterator for MapUnordered<'_, I, R> {
    type Item = Result<R, MapItemError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(value) = self.ready.next() {
            return Some(Ok(value));
        }
        self.next_slow()
    }
}

impl<I: Iterator, R: Send + 'static> MapUnordered<'_, I, R> {
    /// `next` at a chunk boundary or in a chunk with failures. Kept out of line so that
    /// `next`, called once per item, stays small enough to inline.
    #[inline(never)]
    fn next_slow(&mut self) -> Option<Result<R, MapItemError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(value) = self.ready.next() {
                return Some(Ok(value));
            }
            if let Some(item) = self.current.as_mut().and_then(ChunkDrain::next) {
                return Some(item);
            }
            self.current = None;
            self.fill();
            if self.in_flight.is_empty() {
                self.finished = true;
                return self.feeder.stopped_item();
            }
            let id = match self.feeder.deadline {
                None => self
                    .completions
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => self.completions.recv_deadline(deadline),
            };
            let Some((handle, len)) = id.ok().and_then(|id| self.in_flight.remove(&id)) else {
                // Only a timeout gets here: the iterator holds a sender, so the channel
                // never disconnects, and every id sent is in flight.
                self.cancel_all();
                self.finished = true;
                return Some(Err(self.feeder.timeout_error()));
            };
            (self.ready, self.current) = self.feeder.chunking.load(handle.result(), len);
        }
    }
}

impl<I: Iterator, R> Drop for MapUnordered<'_, I, R> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

impl<I: Iterator, R> fmt::Debug for MapUnordered<'_, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnordered")
            .field("in_flight", &self.in_flight.len())
            .field("chunking", &self.feeder.chunking)
            .field("window", &self.feeder.window)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(cf_loom)))]
mod tests {
    use super::*;

    #[test]
    fn chunk_records_panics_at_their_positions() {
        let out = ChunkOutput::run(vec![1, 2, 3, 4, 5], &|x: i32| {
            assert!(x % 2 == 0, "odd {x}");
            x * 10
        });
        assert_eq!(out.values, vec![20, 40]);
        let positions: Vec<usize> = out.failures.iter().map(|(i, _)| *i).collect();
        assert_eq!(positions, vec![0, 2, 4]);
        let mut drain = ChunkDrain::new(out, 5);
        let kinds: Vec<bool> = std::iter::from_fn(|| drain.next())
            .map(|r| r.is_ok())
            .collect();
        assert_eq!(kinds, vec![false, true, false, true, false]);
    }

    #[test]
    fn auto_chunking_follows_the_cost_of_a_call() {
        let mut chunking = Chunking::Auto(1);
        chunking.observe(1);
        assert_eq!(chunking.size(), AUTO_MAX_CHUNK);
        chunking.observe(1_000_000_000);
        assert_eq!(chunking.size(), 1);
        chunking.observe(10_000);
        assert_eq!(chunking.size(), 10);
        let mut fixed = Chunking::Fixed(7);
        fixed.observe(1);
        assert_eq!(fixed.size(), 7);
    }
}
