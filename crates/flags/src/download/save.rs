//! Saving a downloaded flag: atomic writes and safe file names.

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{PoisonError, RwLock};

/// Held (shared) by every save while its temporary file exists; [`exit_between_saves`] takes it
/// exclusively, so a forced exit never strands a temporary file.
static SAVES: RwLock<()> = RwLock::new(());

/// Exits the process with `code` once no save is in progress (a second Ctrl-C).
pub(crate) fn exit_between_saves(code: i32) -> ! {
    let _no_saves = SAVES.write().unwrap_or_else(PoisonError::into_inner);
    std::process::exit(code)
}

/// Longest file stem taken from a server-supplied country name, in bytes.
const MAX_STEM_BYTES: usize = 100;

/// Writes `body` to `dest/name` atomically: into a temporary file in `dest`, then renamed over
/// `name`. A failure (or the process dying) never leaves a partial or empty `name`; the temporary
/// file is removed when it is dropped.
///
/// # Errors
///
/// Any I/O error creating, writing or renaming the file.
pub(crate) fn save_atomically(dest: &Path, name: &str, body: &[u8]) -> io::Result<PathBuf> {
    let path = dest.join(name);
    let _saving = SAVES.read().unwrap_or_else(PoisonError::into_inner);
    let mut builder = tempfile::Builder::new();
    builder.prefix(".flags-").suffix(".part");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Like a file created by `open`: 0o666 less the umask, not tempfile's private 0o600.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut file = builder.tempfile_in(dest)?;
    file.write_all(body)?;
    file.persist(&path).map_err(|e| e.error)?;
    Ok(path)
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

    #[test]
    fn save_is_atomic_and_overwrites() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = save_atomically(dir.path(), "BR.gif", b"GIF89a one")?;
        assert_eq!(std::fs::read(&path)?, b"GIF89a one");
        save_atomically(dir.path(), "BR.gif", b"GIF89a two")?;
        assert_eq!(std::fs::read(&path)?, b"GIF89a two");
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["BR.gif"]);
        Ok(())
    }

    #[test]
    fn failed_save_leaves_nothing() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        // The target is a directory: the rename fails and the temporary file goes away.
        std::fs::create_dir(dir.path().join("BR.gif"))?;
        assert!(save_atomically(dir.path(), "BR.gif", b"GIF89a").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["BR.gif"]);
        Ok(())
    }
}
