//! Saving a downloaded flag: atomic writes and safe file names.

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{PoisonError, RwLock};

/// Held (shared) by every save while a named temporary file of it exists; [`exit_between_saves`]
/// takes it exclusively, so a forced exit never strands a temporary file. (An unnamed file needs
/// no guard: it vanishes with the process.)
static SAVES: RwLock<()> = RwLock::new(());

/// Exits the process with `code` once no save is in progress (a second Ctrl-C).
pub fn exit_between_saves(code: i32) -> ! {
    let _no_saves = SAVES.write().unwrap_or_else(PoisonError::into_inner);
    std::process::exit(code)
}

/// Longest file stem taken from a server-supplied country name, in bytes.
const MAX_STEM_BYTES: usize = 100;

/// Writes `body` to `dest/name` atomically: a failure (or the process dying) never leaves a
/// partial or empty `name`, and an existing `name` is replaced in one step.
///
/// On Linux the body goes into an unnamed file (`O_TMPFILE`) that is linked into place once
/// complete: nothing exists under any name until the file is whole, a killed process leaves no
/// trace, and the directory is locked once per save instead of twice, so concurrent saves queue
/// less on that lock. Where that is not available (other systems, a file system without
/// `O_TMPFILE`, no `/proc`), and to replace an existing file, a named temporary file in `dest`
/// is renamed over `name`; the temporary file is removed when anything fails.
///
/// # Errors
///
/// Any I/O error creating, writing, linking or renaming the file.
pub(crate) fn save_atomically(dest: &Path, name: &str, body: &[u8]) -> io::Result<PathBuf> {
    let path = dest.join(name);
    #[cfg(target_os = "linux")]
    if let Some(saved) = unnamed::save(dest, &path, body) {
        return saved.map(|()| path);
    }
    save_named(dest, &path, body)?;
    Ok(path)
}

/// Saves `body` as `path` through a named temporary file in `dest`, renamed over `path`.
fn save_named(dest: &Path, path: &Path, body: &[u8]) -> io::Result<()> {
    let _saving = SAVES.read().unwrap_or_else(PoisonError::into_inner);
    let mut file = temporary_file().tempfile_in(dest)?;
    file.write_all(body)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
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

/// Saving through an unnamed file: `O_TMPFILE`, then `linkat` by descriptor, or of
/// `/proc/self/fd/N` (the documented way without `CAP_DAC_READ_SEARCH`).
#[cfg(target_os = "linux")]
mod unnamed {
    use std::fs::{File, OpenOptions, Permissions};
    use std::io::{self, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{OnceLock, PoisonError};

    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};

    use super::{SAVES, temporary_file};

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

    /// Saves `body` as `path` through an unnamed file in `dest`; `None` when this way is not
    /// available here and the caller should use a named temporary file.
    pub(super) fn save(dest: &Path, path: &Path, body: &[u8]) -> Option<io::Result<()>> {
        if UNAVAILABLE.load(Ordering::Relaxed) {
            return None;
        }
        let mut file = match OpenOptions::new()
            .write(true)
            .mode(0o666)
            .custom_flags(OFlag::O_TMPFILE.bits())
            .open(dest)
        {
            Ok(file) => file,
            Err(e) if e.raw_os_error().is_some_and(unsupported) => {
                UNAVAILABLE.store(true, Ordering::Relaxed);
                return None;
            }
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = file.write_all(body).and_then(|()| apply_umask(&file)) {
            return Some(Err(e));
        }
        match link(&file, path) {
            Ok(()) => Some(Ok(())),
            Err(Errno::EEXIST) => Some(replace(&file, dest, path)),
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

    /// `path` exists: link the file under a temporary name, then rename that over `path`.
    fn replace(file: &File, dest: &Path, path: &Path) -> io::Result<()> {
        let _saving = SAVES.read().unwrap_or_else(PoisonError::into_inner);
        let named =
            temporary_file().make_in(dest, |temp| link(file, temp).map_err(io::Error::from))?;
        named.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The file name for a flag named after its country (`--name-by country`): `{Country_Name}.gif`.
///
/// The name comes from the server, so it is made safe: spaces become underscores; path
/// separators, control characters and characters that are invalid in Windows file names become
/// `_`; dots are never doubled and never lead or trail; the stem is at most 100 bytes. A name with
/// nothing left falls back to the country code.
pub(crate) fn country_file_name(country: &str, code: &str) -> String {
    let mut stem = String::with_capacity(country.len().min(MAX_STEM_BYTES));
    for c in country.trim().chars() {
        let c = match c {
            ' ' => '_',
            c if c.is_control() || c.is_whitespace() => '_',
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
    let name = format!("{stem}.gif");
    if stem.is_empty() || !is_plain_file_name(&name) {
        return format!("{code}.gif");
    }
    name
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

    #[test]
    fn save_is_atomic_and_overwrites() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = save_atomically(dir.path(), "BR.gif", b"GIF89a one")?;
        assert_eq!(std::fs::read(&path)?, b"GIF89a one");
        save_atomically(dir.path(), "BR.gif", b"GIF89a two")?;
        assert_eq!(std::fs::read(&path)?, b"GIF89a two");
        assert_eq!(names_in(dir.path())?, ["BR.gif"]);
        Ok(())
    }

    #[test]
    fn named_fallback_is_atomic_and_overwrites() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("BR.gif");
        save_named(dir.path(), &path, b"GIF89a one")?;
        save_named(dir.path(), &path, b"GIF89a two")?;
        assert_eq!(std::fs::read(&path)?, b"GIF89a two");
        std::fs::remove_file(&path)?;
        std::fs::create_dir(&path)?;
        assert!(save_named(dir.path(), &path, b"GIF89a").is_err());
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
        let fresh = save_atomically(dir.path(), "BR.gif", b"GIF89a")?;
        let replaced_path = dir.path().join("DE.gif");
        std::fs::write(&replaced_path, b"old")?;
        let replaced = save_atomically(dir.path(), "DE.gif", b"GIF89a")?;
        let named = dir.path().join("FR.gif");
        save_named(dir.path(), &named, b"GIF89a")?;
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
        assert!(save_atomically(dir.path(), "BR.gif", b"GIF89a").is_err());
        assert_eq!(names_in(dir.path())?, ["BR.gif"]);
        Ok(())
    }
}
