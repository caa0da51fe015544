//! The resume journal of `flags get`: `DEST/.flags-journal`, append-only, one line per entry
//! whose file is in place (`{key:016x}\n`, the key a hash of the URL and the name,
//! [`Entry::key`]). Lines are written after the file is named and made durable in groups
//! (`fdatasync` every [`GROUP`] entries or [`GROUP_TIME`]), so after a crash the journal
//! lists a subset of the files in place: a rerun skips those and fetches the rest again,
//! at most one group more than the downloads that were in flight.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::list::Entry;

/// The journal's file name in `--dest`.
pub const JOURNAL: &str = ".flags-journal";
/// Entries per group commit.
const GROUP: usize = 1024;
/// The longest an entry waits for its group commit.
pub(super) const GROUP_TIME: Duration = Duration::from_millis(200);

/// The journal: the keys done before this run (sorted, 8 bytes each), and the file it
/// appends to.
#[derive(Debug)]
pub(crate) struct Journal {
    done: Vec<u64>,
    out: BufWriter<File>,
    pending: usize,
    last_sync: Instant,
}

impl Journal {
    /// Opens (or creates) the journal in `dest` and reads what it lists. A torn last line
    /// (a crash while it was written) is ignored.
    ///
    /// # Errors
    ///
    /// Opening or reading the journal.
    pub(crate) fn open(dest: &Path) -> io::Result<Self> {
        let path = dest.join(JOURNAL);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut done = Vec::new();
        let (mut reader, mut line) = (io::BufReader::new(&file), Vec::new());
        let mut torn = false;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            torn = line.last() != Some(&b'\n');
            let key = std::str::from_utf8(&line)
                .ok()
                .map(str::trim_end)
                .filter(|key| key.len() == 16)
                .and_then(|key| u64::from_str_radix(key, 16).ok());
            done.extend(key.filter(|_| !torn));
        }
        done.sort_unstable();
        done.dedup();
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        if torn {
            // The torn line ends here, so that the next entry is a line of its own.
            out.write_all(b"\n")?;
        }
        Ok(Self {
            done,
            out,
            pending: 0,
            last_sync: Instant::now(),
        })
    }

    /// Whether `entry` was done before this run.
    pub(crate) fn is_done(&self, entry: &Entry) -> bool {
        self.done.binary_search(&entry.key()).is_ok()
    }

    /// Entries listed before this run.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.done.len()
    }

    /// Records `entry` as done (its file is in place); commits the group when it is full
    /// or old enough.
    ///
    /// # Errors
    ///
    /// Writing or syncing the journal.
    pub(crate) fn record(&mut self, entry: &Entry) -> io::Result<()> {
        writeln!(self.out, "{:016x}", entry.key())?;
        self.pending += 1;
        if self.pending >= GROUP || self.last_sync.elapsed() >= GROUP_TIME {
            self.commit()?;
        }
        Ok(())
    }

    /// Writes and syncs what is pending.
    ///
    /// # Errors
    ///
    /// Writing or syncing the journal.
    pub(crate) fn commit(&mut self) -> io::Result<()> {
        if self.pending > 0 {
            self.out.flush()?;
            self.out.get_ref().sync_data()?;
            self.pending = 0;
        }
        self.last_sync = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            line: n,
            url: format!("http://h/{n}"),
            host: "h".into(),
            name: format!("h/{n}"),
            retries: 0,
        }
    }

    #[test]
    fn a_reopened_journal_knows_its_entries_and_ignores_a_torn_line() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut journal = Journal::open(dir.path())?;
        assert!(!journal.is_done(&entry(1)));
        journal.record(&entry(1))?;
        journal.record(&entry(2))?;
        journal.commit()?;
        drop(journal);
        // A crash in the middle of a line.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))?;
        file.write_all(b"0123ab")?;
        let mut journal = Journal::open(dir.path())?;
        assert_eq!(journal.len(), 2);
        assert!(journal.is_done(&entry(1)) && journal.is_done(&entry(2)));
        assert!(!journal.is_done(&entry(3)));
        journal.record(&entry(3))?;
        journal.commit()?;
        drop(journal);
        let journal = Journal::open(dir.path())?;
        assert_eq!(journal.len(), 3);
        assert!(journal.is_done(&entry(3)));
        Ok(())
    }
}
