//! Saving a downloaded flag: a staged file that receives the body as it arrives and takes its
//! name only once whole, and safe file names.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::SystemTime;

/// Held (shared) while a named temporary file is created or a staged file is given its name;
/// [`exit_between_saves`] takes it exclusively, so a forced exit never strands a temporary
/// file, and no file gets its name once the exit has begun. (An unnamed file that is still
/// receiving its body needs no guard: it vanishes with the process.)
static SAVES: RwLock<()> = RwLock::new(());

/// In a worker process of `--mode processes`: the pid of the `flags` process it works for.
/// Once that process is gone, no file gets its name ([`save_only_for`]).
static PARENT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// From now on, this process gives no staged file its name once its parent is no longer
/// `parent` (it died: this process was handed to another): a worker must not save flags for a
/// run that is over. The check and the naming happen under [`SAVES`], so a worker that exits
/// on its parent's death ([`exit_between_saves`]) names nothing after noticing it.
pub(crate) fn save_only_for(parent: u32) {
    let _ = PARENT.set(parent);
}

/// Whether this process is a worker whose `flags` process is gone.
fn orphaned() -> bool {
    #[cfg(unix)]
    return PARENT
        .get()
        .is_some_and(|&parent| std::os::unix::process::parent_id() != parent);
    #[cfg(not(unix))]
    false
}

/// The named temporary files that exist now (staged files where unnamed ones are not
/// available): [`exit_between_saves`] removes them.
static NAMED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Exits the process with `code` once no save is in progress (a second Ctrl-C), removing
/// the named temporary files of the downloads still receiving their bodies.
pub fn exit_between_saves(code: i32) -> ! {
    let _no_saves = SAVES.write().unwrap_or_else(PoisonError::into_inner);
    for path in NAMED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
    {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(code)
}

/// Longest file stem taken from a server-supplied country name, in bytes.
const MAX_STEM_BYTES: usize = 100;

/// A flag being received: a file in `--dest` that has no name until [`Staged::commit`], so
/// a failure, a crash or a kill never leaves a partial or empty flag.
///
/// On Linux it is an unnamed file (`O_TMPFILE`), linked into place once complete: nothing
/// exists under any name until the file is whole, and a killed process leaves no trace.
/// Where that is not available (other systems, a file system without `O_TMPFILE`), it is a
/// named temporary file (`.flags-XXXXXX.part`) in `dest`, renamed over the name at the end
/// and removed when anything fails (or by [`exit_between_saves`]).
#[derive(Debug)]
pub(crate) struct Staged {
    file: File,
    kind: Kind,
    dest: PathBuf,
    len: u64,
}

#[derive(Debug)]
enum Kind {
    /// `O_TMPFILE`: no name at all.
    #[cfg(target_os = "linux")]
    Unnamed,
    /// A named temporary file, listed in [`NAMED`] while it exists.
    Named(tempfile::TempPath),
    /// `flags get`'s partial file of a large body (`DEST/.flags-partial/KEY`): kept on failure
    /// and by a kill, so that a rerun can ask for the rest (`Range`); renamed when whole.
    Partial(PathBuf),
    /// Committed or removed.
    Gone,
}

impl Staged {
    /// A new, empty staged file in `dest`.
    ///
    /// # Errors
    ///
    /// Creating the file.
    pub(crate) fn new(dest: &Path) -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        if let Some(file) = unnamed::open(dest)? {
            return Ok(Self {
                file,
                kind: Kind::Unnamed,
                dest: dest.to_owned(),
                len: 0,
            });
        }
        Self::named(dest)
    }

    /// The partial file at `path` of a large body downloading into `dest`: emptied
    /// (`resume_at` `None`), or kept, with writes appended after its first `resume_at` bytes.
    ///
    /// # Errors
    ///
    /// Creating or opening the file, or its length not being `resume_at`.
    pub(crate) fn partial(dest: &Path, path: &Path, resume_at: Option<u64>) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(resume_at.is_none())
            .open(path)?;
        let len = file.seek(io::SeekFrom::End(0))?;
        if resume_at.is_some_and(|at| at != len) {
            return Err(io::Error::other("the partial file changed"));
        }
        Ok(Self {
            file,
            kind: Kind::Partial(path.to_owned()),
            dest: dest.to_owned(),
            len,
        })
    }

    /// A new, empty named temporary file in `dest`.
    fn named(dest: &Path) -> io::Result<Self> {
        let _saving = SAVES.read().unwrap_or_else(PoisonError::into_inner);
        Self::named_locked(dest)
    }

    /// [`Staged::named`], with [`SAVES`] held by the caller.
    fn named_locked(dest: &Path) -> io::Result<Self> {
        let (file, path) = temporary_file().tempfile_in(dest)?.into_parts();
        NAMED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(path.to_path_buf());
        Ok(Self {
            file,
            kind: Kind::Named(path),
            dest: dest.to_owned(),
            len: 0,
        })
    }

    /// Appends `chunk` to the file.
    ///
    /// # Errors
    ///
    /// Writing (a full file system, say).
    pub(crate) fn write_all(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk)?;
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Empties the file (a body received again, after a retry).
    ///
    /// # Errors
    ///
    /// Truncating the file.
    pub(crate) fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.len = 0;
        Ok(())
    }

    /// Sets the file's modification time (`flags get -N`: the server's `Last-Modified`).
    ///
    /// # Errors
    ///
    /// Setting the time.
    pub(crate) fn set_modified(&self, time: SystemTime) -> io::Result<()> {
        self.file.set_modified(time)
    }

    /// Bytes written so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Gives the file the name `dest/name`, replacing a file of that name in one step.
    ///
    /// # Errors
    ///
    /// Linking or renaming the file, or a worker's `flags` process gone; the staged file is
    /// gone either way.
    pub(crate) fn commit(self, name: &str) -> io::Result<PathBuf> {
        let _saving = SAVES.read().unwrap_or_else(PoisonError::into_inner);
        if orphaned() {
            return Err(io::Error::other(
                "the flags process this worker served is gone",
            ));
        }
        self.commit_locked(name)
    }

    /// [`Staged::commit`], with [`SAVES`] held by the caller.
    fn commit_locked(mut self, name: &str) -> io::Result<PathBuf> {
        let path = self.dest.join(name);
        match std::mem::replace(&mut self.kind, Kind::Gone) {
            #[cfg(target_os = "linux")]
            Kind::Unnamed => match unnamed::commit(&self.file, &self.dest, &path) {
                Some(done) => done.map(|()| path),
                // This file system cannot link an unnamed file: copy it to a named one.
                None => {
                    let mut named = Self::named_locked(&self.dest)?;
                    self.file.rewind()?;
                    io::copy(&mut self.file, &mut named.file)?;
                    named.commit_locked(name)
                }
            },
            Kind::Named(temp) => {
                let listed = temp.to_path_buf();
                let persisted = temp.persist(&path);
                forget_named(&listed);
                // On failure the temporary file is removed with the error's `TempPath`.
                persisted.map(|()| path).map_err(|e| e.error)
            }
            Kind::Partial(partial) => std::fs::rename(&partial, &path).map(|()| path),
            Kind::Gone => Err(io::Error::other("the staged file is gone")),
        }
    }
}

impl Staged {
    /// Gives the file the name `name`, unless a file written in this run has it: then the name
    /// with the code, `{stem}_{code}.gif`. A file of either name that predates the run (its
    /// status changed before `run_start`, see [`run_start`]) is replaced; one written since
    /// never is, whichever thread or worker process wrote it. Returns the name used.
    ///
    /// The choice and the naming are one step under [`NameLock`], so two saves of the run
    /// (threads, tasks or worker processes) cannot both take a name.
    ///
    /// # Errors
    ///
    /// Both names taken in this run, or linking or renaming the file.
    pub(crate) fn commit_unique(
        self,
        name: &str,
        code: &str,
        run_start: SystemTime,
    ) -> io::Result<String> {
        let with_code = match name.strip_suffix(".gif") {
            Some(stem) => format!("{stem}_{code}.gif"),
            None => format!("{name}_{code}"),
        };
        let _lock = NameLock::acquire(&self.dest);
        for candidate in [name, &with_code] {
            let taken = match std::fs::symlink_metadata(self.dest.join(candidate)) {
                Ok(meta) => !(meta.is_file() && changed(&meta) < run_start),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if !taken {
                self.commit(candidate)?;
                return Ok(candidate.to_owned());
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{name} and {with_code} were already saved in this run"),
        ))
    }
}

/// What [`Staged::commit_new`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// The file was given its name (new, or replacing a file from before the run).
    Saved,
    /// A file from before the run had the same content: it was kept, untouched.
    Unchanged,
}

impl Staged {
    /// `flags get`'s save: gives the file the relative path `name` under `dest` (creating its
    /// directories), unless a file of that name was saved in this run (since `run_start`):
    /// two URLs of one run never share a file. A file from before the run with the same bytes
    /// is kept as it is ([`Committed::Unchanged`]: no link, no rename, its times untouched);
    /// one with other bytes is replaced in one step.
    ///
    /// # Errors
    ///
    /// The name taken in this run (`AlreadyExists`), or creating the directories, comparing,
    /// linking or renaming.
    pub(crate) fn commit_new(self, name: &str, run_start: SystemTime) -> io::Result<Committed> {
        let path = self.dest.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Whether the name is free, or held by a file from before the run; `None` if taken
        // in this run.
        let before_run = |path: &Path| match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() && changed(&meta) < run_start => Ok(Some(Some(meta))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(None)),
            Err(e) => Err(e),
        };
        let taken = || {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another URL of this run was saved under this name",
            )
        };
        // The comparison is made without the lock: only the decision and the naming need
        // it, and holding it while reading would make every thread wait for each file.
        let same = match before_run(&path)?.ok_or_else(taken)? {
            Some(meta) => meta.len() == self.len && same_content(&self.file, self.len, &path)?,
            None => false,
        };
        // `flags get` runs in one process: the mutex is enough, no `flock`.
        let _lock = NameLock::in_process();
        match before_run(&path)? {
            None => Err(taken()),
            Some(Some(_)) if same => Ok(Committed::Unchanged),
            Some(_) => self.commit(name).map(|_| Committed::Saved),
        }
    }
}

/// Whether the staged `file` of `len` bytes holds the same bytes as the file at `path` (of
/// the same length).
fn same_content(file: &File, len: u64, path: &Path) -> io::Result<bool> {
    use std::io::Read as _;
    #[cfg(unix)]
    use std::os::unix::fs::FileExt as _;
    let size = usize::try_from(len.min(64 * 1024))
        .unwrap_or(64 * 1024)
        .max(1);
    let mut old = File::open(path)?;
    let (mut a, mut b) = (vec![0u8; size], vec![0u8; size]);
    let mut offset = 0u64;
    loop {
        let n = old.read(&mut a)?;
        if n == 0 {
            return Ok(offset == len);
        }
        if offset + n as u64 > len {
            return Ok(false);
        }
        #[cfg(unix)]
        file.read_exact_at(&mut b[..n], offset)?;
        #[cfg(not(unix))]
        {
            let _ = (file, &mut b);
            return Ok(false);
        }
        if a[..n] != b[..n] {
            return Ok(false);
        }
        offset += n as u64;
    }
}

/// When `meta`'s file last changed status (linked, renamed, written): its ctime where there is
/// one, else its modification time.
fn changed(meta: &std::fs::Metadata) -> SystemTime {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let (secs, nanos) = (meta.ctime(), meta.ctime_nsec());
        if let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) {
            return SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
        }
    }
    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The start of a run as `dest`'s file system dates it: the change time of a file created
/// there now. A file saved during the run changes status at or after it (it is created, then
/// linked or renamed, later), so it is never taken for a file from before the run; a file
/// that changed in the same clock tick as this probe (file systems date at a jiffy or worse)
/// is taken for one of the run's, which costs it a suffixed name, never its content.
///
/// # Errors
///
/// Creating the probe in `dest`.
pub(crate) fn run_start(dest: &Path) -> io::Result<SystemTime> {
    let probe = tempfile::tempfile_in(dest)?;
    Ok(changed(&probe.metadata()?))
}

/// The lock around choosing a name and linking a file under it (`--name-by country`): a mutex
/// for the threads and tasks of this process, and `flock` on `--dest` for worker processes.
/// Where the file system has no `flock` (NFS without lock support, say), only the mutex holds,
/// and two worker processes could still meet on one name.
struct NameLock {
    // Dropped in this order: the other processes' turn, then this one's threads'.
    #[cfg(unix)]
    _dir: Option<nix::fcntl::Flock<File>>,
    _process: std::sync::MutexGuard<'static, ()>,
}

/// The threads' and tasks' side of [`NameLock`].
static IN_PROCESS: Mutex<()> = Mutex::new(());

impl NameLock {
    /// The lock of this process's threads only (`flags get`, which has no worker processes).
    fn in_process() -> std::sync::MutexGuard<'static, ()> {
        IN_PROCESS.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire(dest: &Path) -> Self {
        let process = Self::in_process();
        #[cfg(unix)]
        let dir = File::open(dest)
            .ok()
            .and_then(|dir| nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusive).ok());
        Self {
            #[cfg(unix)]
            _dir: dir,
            _process: process,
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Kind::Named(temp) = std::mem::replace(&mut self.kind, Kind::Gone) {
            // Removed, then taken off the list: an exit in between removes it once more,
            // which does no harm, so no lock is needed (the caller may hold `SAVES`).
            let path = temp.to_path_buf();
            drop(temp);
            forget_named(&path);
        }
    }
}

/// Takes `path` off [`NAMED`] (it was renamed or is being removed).
fn forget_named(path: &Path) {
    NAMED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .retain(|listed| listed != path);
}

/// The builder of the named temporary files: `.flags-XXXXXX.part`, with the permissions of a
/// file created by `open`.
fn temporary_file() -> tempfile::Builder<'static, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".flags-").suffix(".part");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Like a file created by `open`: 0o666 less the umask, not tempfile's private 0o600.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder
}

/// Unnamed files: `O_TMPFILE`, then `linkat` by descriptor, or of `/proc/self/fd/N` (the
/// documented way without `CAP_DAC_READ_SEARCH`).
#[cfg(target_os = "linux")]
mod unnamed {
    use std::fs::{File, OpenOptions, Permissions};
    use std::io;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::Path;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};

    use super::temporary_file;

    /// Set once unnamed files turned out to be unavailable here (the file system has none, or
    /// neither way of linking one works): every later save goes the named way at once.
    static UNAVAILABLE: AtomicBool = AtomicBool::new(false);

    /// Set once `linkat(fd, "", AT_EMPTY_PATH)` was refused where the `/proc` way worked
    /// (kernels before 6.10 allow it only with `CAP_DAC_READ_SEARCH`).
    static NO_EMPTY_PATH: AtomicBool = AtomicBool::new(false);

    /// The permissions every unnamed file must be given by hand, found on the first save:
    /// `Some` where the kernel does not apply the umask to `O_TMPFILE` files (file systems
    /// without ACLs, before the 2022 fix "fs: add missing umask strip in vfs_tmpfile").
    static MODE_BY_HAND: OnceLock<Option<u32>> = OnceLock::new();

    /// A new unnamed file in `dest`, with `open`'s permissions; `None` when this way is not
    /// available here and the caller should use a named temporary file.
    pub(super) fn open(dest: &Path) -> io::Result<Option<File>> {
        if UNAVAILABLE.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o666)
            .custom_flags(OFlag::O_TMPFILE.bits())
            .open(dest)
        {
            Ok(file) => file,
            Err(e) if e.raw_os_error().is_some_and(unsupported) => {
                UNAVAILABLE.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        apply_umask(&file)?;
        Ok(Some(file))
    }

    /// Gives the unnamed `file` the name `path` in `dest`, replacing a file of that name;
    /// `None` when this file system cannot link it and the caller should copy it instead.
    pub(super) fn commit(file: &File, dest: &Path, path: &Path) -> Option<io::Result<()>> {
        match link(file, path) {
            Ok(()) => Some(Ok(())),
            Err(Errno::EEXIST) => Some(replace(file, dest, path)),
            // A file system without hard links: the named way still works.
            Err(Errno::EPERM | Errno::EOPNOTSUPP) => {
                UNAVAILABLE.store(true, Ordering::Relaxed);
                None
            }
            // No /proc (or a vanished directory, which the named way reports).
            Err(Errno::ENOENT | Errno::EACCES) => None,
            Err(errno) => Some(Err(errno.into())),
        }
    }

    /// Whether an `O_TMPFILE` open failed because unnamed files are not supported.
    fn unsupported(code: i32) -> bool {
        [Errno::EOPNOTSUPP, Errno::EISDIR, Errno::EINVAL]
            .iter()
            .any(|errno| *errno as i32 == code)
    }

    /// Gives `file` `open`'s permissions (0o666 less the umask) where the kernel did not.
    fn apply_umask(file: &File) -> io::Result<()> {
        let by_hand = MODE_BY_HAND.get_or_init(|| {
            let mode = file.metadata().ok()?.permissions().mode() & 0o777;
            // A mode short of 0o666 means the kernel applied the umask (or a default ACL);
            // only a full 0o666 needs the umask itself, whose reading (a `/proc` file) is worth
            // sparing every worker process of `--mode processes`.
            if mode != 0o666 {
                return None;
            }
            let expected = 0o666 & !umask()?;
            (mode != expected).then_some(expected)
        });
        match by_hand {
            Some(mode) => file.set_permissions(Permissions::from_mode(*mode)),
            None => Ok(()),
        }
    }

    /// This process's umask, from `/proc/self/status` (reading it with `umask(2)` would set
    /// it, under the feet of the other threads saving files).
    fn umask() -> Option<u32> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let value = status
            .lines()
            .find_map(|line| line.strip_prefix("Umask:"))?;
        u32::from_str_radix(value.trim(), 8).ok()
    }

    /// Gives the unnamed `file` the name `path`: by its descriptor where the kernel allows it,
    /// else through `/proc/self/fd/N` (a path the kernel must resolve first).
    fn link(file: &File, path: &Path) -> nix::Result<()> {
        if !NO_EMPTY_PATH.load(Ordering::Relaxed) {
            match nix::unistd::linkat(file, "", AT_FDCWD, path, AtFlags::AT_EMPTY_PATH) {
                Err(Errno::ENOENT | Errno::EPERM | Errno::EINVAL) => {}
                done => return done,
            }
        }
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let linked = nix::unistd::linkat(
            AT_FDCWD,
            proc_path.as_str(),
            AT_FDCWD,
            path,
            AtFlags::AT_SYMLINK_FOLLOW,
        );
        if linked.is_ok() {
            // The descriptor way failed where this one worked: the kernel refuses it.
            NO_EMPTY_PATH.store(true, Ordering::Relaxed);
        }
        linked
    }

    /// `path` exists: link the file under a temporary name, then rename that over `path`
    /// (the caller holds `SAVES`, so no exit strands the temporary name).
    fn replace(file: &File, dest: &Path, path: &Path) -> io::Result<()> {
        let named =
            temporary_file().make_in(dest, |temp| link(file, temp).map_err(io::Error::from))?;
        named.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The file name for a flag named after its country (`--name-by country`): `{Country_Name}.gif`.
///
/// The name comes from the server, so it is made safe: spaces become underscores; path
/// separators, control characters, characters that are invalid in Windows file names, and
/// characters that change how a name reads without being seen (bidirectional controls such as
/// U+202E, zero-width and other format characters) become `_`; dots are never doubled and never
/// lead or trail; the stem is at most 100 bytes; a Windows device name (`CON`, `NUL`, `COM1`, …,
/// also with an extension, as Windows reads `nul.txt`) gets a leading `_`. A name with nothing
/// left falls back to the country code.
pub(crate) fn country_file_name(country: &str, code: &str) -> String {
    match safe_component(country) {
        Some(stem) => format!("{stem}.gif"),
        None => format!("{code}.gif"),
    }
}

/// One path component made safe by [`country_file_name`]'s rules (a Windows device name gets
/// a `_` before it), or `None` when nothing is left. `flags get` names each component of a
/// URL's host and path with it.
pub(crate) fn safe_component(country: &str) -> Option<String> {
    let mut stem = String::with_capacity(country.len().min(MAX_STEM_BYTES));
    for c in country.trim().chars() {
        let c = match c {
            ' ' => '_',
            c if c.is_control() || c.is_whitespace() || is_invisible(c) => '_',
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c => c,
        };
        if c == '.' && (stem.is_empty() || stem.ends_with('.')) {
            continue;
        }
        if stem.len() + c.len_utf8() > MAX_STEM_BYTES {
            break;
        }
        stem.push(c);
    }
    let stem = stem.trim_end_matches('.');
    let name = if is_device_name(stem) {
        format!("_{stem}")
    } else {
        stem.to_owned()
    };
    (!stem.is_empty() && is_plain_file_name(&name)).then_some(name)
}

/// Characters that change how a name is shown without being seen themselves: the
/// bidirectional controls (after U+202E the rest of a name is shown reversed), zero-width and
/// other default-ignorable format characters, and the invisible fillers.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether Windows takes a file whose name starts with `stem` for a device: `CON`, `PRN`,
/// `AUX`, `NUL`, `COM0`-`COM9`, `LPT0`-`LPT9` (also with a superscript digit), `CONIN$`,
/// `CONOUT$`, in any case, before the first dot, trailing spaces ignored.
fn is_device_name(stem: &str) -> bool {
    let base = stem.split('.').next().unwrap_or_default();
    let base = base.trim_end_matches([' ', '_']).to_ascii_uppercase();
    match base.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        _ => ["COM", "LPT"].iter().any(|port| {
            base.strip_prefix(port).is_some_and(|digit| {
                matches!(
                    digit,
                    "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9"
                ) || matches!(digit, "\u{00B9}" | "\u{00B2}" | "\u{00B3}")
            })
        }),
    }
}

/// Whether `name` is exactly one normal path component (no root, no `.` or `..`, no separator).
fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_names() {
        assert_eq!(country_file_name("Brazil", "BR"), "Brazil.gif");
        assert_eq!(
            country_file_name("United States of America", "US"),
            "United_States_of_America.gif"
        );
        assert_eq!(
            country_file_name("Côte d'Ivoire", "CI"),
            "Côte_d'Ivoire.gif"
        );
        assert_eq!(country_file_name("  Chad ", "TD"), "Chad.gif");
    }

    #[test]
    fn hostile_names_stay_in_dest() {
        for (hostile, expected) in [
            ("../../etc/x", "_._etc_x.gif"),
            ("..", "XX.gif"),
            ("", "XX.gif"),
            ("/", "_.gif"),
            ("/etc/passwd", "_etc_passwd.gif"),
            ("..\\..\\win", "_._win.gif"),
            ("a\0b\nc\u{7f}", "a_b_c_.gif"),
            ("C:evil", "C_evil.gif"),
            ("...hidden...", "hidden.gif"),
        ] {
            let name = country_file_name(hostile, "XX");
            assert_eq!(name, expected, "{hostile:?}");
            assert!(is_plain_file_name(&name), "{name:?}");
            assert!(!name.contains(".."), "{name:?}");
        }
    }

    #[test]
    fn invisible_characters_and_device_names() {
        for (hostile, expected) in [
            ("Evil\u{202E}fig.exe", "Evil_fig.exe.gif"),
            ("a\u{200B}b\u{2066}c\u{FEFF}", "a_b_c_.gif"),
            ("\u{E0041}tag", "_tag.gif"),
            ("CON", "_CON.gif"),
            ("con", "_con.gif"),
            ("nul.txt", "_nul.txt.gif"),
            ("Com9", "_Com9.gif"),
            ("LPT\u{00B3}", "_LPT\u{00B3}.gif"),
            ("CONOUT$", "_CONOUT$.gif"),
            ("Console", "Console.gif"),
            ("COM10", "COM10.gif"),
            ("Auxiliary", "Auxiliary.gif"),
        ] {
            assert_eq!(country_file_name(hostile, "XX"), expected, "{hostile:?}");
        }
    }

    #[test]
    fn a_name_of_this_run_is_never_replaced() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let stage = |body: &[u8]| -> io::Result<Staged> {
            let mut staged = Staged::new(dir.path())?;
            staged.write_all(body)?;
            Ok(staged)
        };
        std::fs::write(dir.path().join("Same.gif"), b"old")?;
        let old = changed(&std::fs::metadata(dir.path().join("Same.gif"))?);
        // A run that started after the old file replaces it.
        let later = old + std::time::Duration::from_nanos(1);
        assert_eq!(
            stage(b"GIF89a BR")?.commit_unique("Same.gif", "BR", later)?,
            "Same.gif"
        );
        // The file just saved changed after any start of the run: never replaced.
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(
            stage(b"GIF89a FR")?.commit_unique("Same.gif", "FR", epoch)?,
            "Same_FR.gif"
        );
        let both = stage(b"GIF89a FR")?.commit_unique("Same.gif", "FR", epoch);
        assert_eq!(
            both.map_err(|e| e.kind()),
            Err(io::ErrorKind::AlreadyExists)
        );
        assert_eq!(std::fs::read(dir.path().join("Same.gif"))?, b"GIF89a BR");
        assert_eq!(std::fs::read(dir.path().join("Same_FR.gif"))?, b"GIF89a FR");
        // A run that started no later than a file is never sure it predates it: not replaced.
        std::fs::write(dir.path().join("Other.gif"), b"old")?;
        let now = changed(&std::fs::metadata(dir.path().join("Other.gif"))?);
        assert_eq!(
            stage(b"GIF89a DE")?.commit_unique("Other.gif", "DE", now)?,
            "Other_DE.gif"
        );
        assert_eq!(std::fs::read(dir.path().join("Other.gif"))?, b"old");
        assert!(run_start(dir.path())? >= now);
        let mut names = names_in(dir.path())?;
        names.sort();
        assert_eq!(
            names,
            ["Other.gif", "Other_DE.gif", "Same.gif", "Same_FR.gif"]
        );
        Ok(())
    }

    #[test]
    fn long_names_are_bounded() {
        let name = country_file_name(&"é".repeat(500), "XX");
        assert!(name.len() <= MAX_STEM_BYTES + 4, "{}", name.len());
        assert!(name.ends_with(".gif"));
    }

    /// The names in `dir`.
    fn names_in(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect())
    }

    /// Saves `body` as `dest/name` through a staged file.
    fn save(dest: &Path, name: &str, body: &[u8]) -> io::Result<PathBuf> {
        let mut staged = Staged::new(dest)?;
        staged.write_all(body)?;
        staged.commit(name)
    }

    /// Saves `body` as `dest/name` through a named temporary file.
    fn save_named(dest: &Path, name: &str, body: &[u8]) -> io::Result<PathBuf> {
        let mut staged = Staged::named(dest)?;
        staged.write_all(body)?;
        staged.commit(name)
    }

    #[test]
    fn save_is_atomic_and_overwrites() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = save(dir.path(), "BR.gif", b"GIF89a one")?;
        assert_eq!(std::fs::read(&path)?, b"GIF89a one");
        save(dir.path(), "BR.gif", b"GIF89a two")?;
        assert_eq!(std::fs::read(&path)?, b"GIF89a two");
        assert_eq!(names_in(dir.path())?, ["BR.gif"]);
        Ok(())
    }

    #[test]
    fn a_staged_file_has_no_name_until_committed() -> io::Result<()> {
        for named in [false, true] {
            let dir = tempfile::tempdir()?;
            let mut staged = if named {
                Staged::named(dir.path())?
            } else {
                Staged::new(dir.path())?
            };
            staged.write_all(b"GIF89a partial")?;
            staged.clear()?;
            staged.write_all(b"GIF89a")?;
            assert_eq!(staged.len(), 6);
            let listed = names_in(dir.path())?;
            assert!(
                listed
                    .iter()
                    .all(|name| name.to_string_lossy().ends_with(".part")),
                "{listed:?}"
            );
            drop(staged);
            assert_eq!(names_in(dir.path())?, Vec::<std::ffi::OsString>::new());
            let still_listed = NAMED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|path| path.starts_with(dir.path()));
            assert!(!still_listed);
        }
        Ok(())
    }

    #[test]
    fn named_fallback_is_atomic_and_overwrites() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = save_named(dir.path(), "BR.gif", b"GIF89a one")?;
        save_named(dir.path(), "BR.gif", b"GIF89a two")?;
        assert_eq!(std::fs::read(&path)?, b"GIF89a two");
        std::fs::remove_file(&path)?;
        std::fs::create_dir(&path)?;
        assert!(save_named(dir.path(), "BR.gif", b"GIF89a").is_err());
        assert_eq!(names_in(dir.path())?, ["BR.gif"]);
        Ok(())
    }

    /// Saved files get `open`'s permissions (0o666 less the umask), whichever way they were
    /// written, not tempfile's private 0o600.
    #[cfg(target_os = "linux")]
    #[test]
    fn saved_files_get_the_umask_permissions() -> io::Result<()> {
        use nix::sys::stat::{Mode, umask};
        use std::os::unix::fs::PermissionsExt;
        // Reading the umask means setting it; it is put back at once.
        let mask = umask(Mode::empty());
        umask(mask);
        let expected = 0o666 & !mask.bits();
        let dir = tempfile::tempdir()?;
        let fresh = save(dir.path(), "BR.gif", b"GIF89a")?;
        std::fs::write(dir.path().join("DE.gif"), b"old")?;
        let replaced = save(dir.path(), "DE.gif", b"GIF89a")?;
        let named = save_named(dir.path(), "FR.gif", b"GIF89a")?;
        for path in [fresh, replaced, named] {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            assert_eq!(mode, expected, "{path:?}: {mode:o}");
        }
        Ok(())
    }

    #[test]
    fn failed_save_leaves_nothing() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        // The target is a directory: the rename fails and the temporary file goes away.
        std::fs::create_dir(dir.path().join("BR.gif"))?;
        assert!(save(dir.path(), "BR.gif", b"GIF89a").is_err());
        assert_eq!(names_in(dir.path())?, ["BR.gif"]);
        Ok(())
    }
}
