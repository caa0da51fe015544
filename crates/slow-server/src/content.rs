//! What the server answers for a path: the built-in flag set or a directory's files.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::countries::{country_codes, country_name};
use crate::error::ServerError;
use crate::image::flag_gif;
use crate::listing::{self, Entry};
use crate::target::Target;

/// `Content-Type` of HTML listings.
pub(crate) const HTML: &str = "text/html; charset=utf-8";

/// The answer to a path (before fault injection).
#[derive(Clone, Debug)]
pub(crate) enum Reply {
    /// `200 OK` with this body.
    Body {
        /// The bytes served.
        bytes: Bytes,
        /// Their `Content-Type`.
        content_type: &'static str,
    },
    /// `301 Moved Permanently` to this location (a directory asked for without its `/`).
    Redirect(String),
    /// `404 Not Found`.
    NotFound,
}

/// What a server serves.
#[derive(Clone, Debug)]
pub(crate) enum Content {
    /// The generated flag set, shared by every server of the process.
    Builtin(&'static Builtin),
    /// The files under a directory.
    Dir(Arc<DirContent>),
}

impl Content {
    /// Opens the content: the built-in set, or `dir` after checking that it is a directory.
    pub(crate) fn open(dir: Option<&Path>, check_interval: Duration) -> Result<Self, ServerError> {
        let Some(dir) = dir else {
            return Ok(Self::Builtin(Builtin::get()));
        };
        let error = |source| ServerError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        let root = fs::canonicalize(dir).map_err(error)?;
        if !fs::metadata(&root).map_err(error)?.is_dir() {
            return Err(ServerError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Ok(Self::Dir(Arc::new(DirContent {
            root,
            cache: Mutex::new(Cache::default()),
            check_interval,
        })))
    }

    /// The answer to the request path `raw` (as sent, without the query).
    pub(crate) async fn reply(&self, raw: &str) -> Reply {
        match self {
            Self::Builtin(builtin) => builtin.reply(raw),
            Self::Dir(dir) => {
                let Some(target) = Target::parse(raw) else {
                    return Reply::NotFound;
                };
                if let Some(reply) = dir.cached(&target) {
                    return reply;
                }
                let (dir, raw) = (Arc::clone(dir), raw.to_owned());
                // One trip to the blocking pool for the whole lookup and read.
                tokio::task::spawn_blocking(move || dir.reply(&raw, target))
                    .await
                    .unwrap_or(Reply::NotFound)
            }
        }
    }
}

/// The most bytes of one file kept in memory.
const CACHE_FILE_MAX: u64 = 1 << 20;
/// The most bytes of all files kept in memory.
const CACHE_TOTAL_MAX: u64 = 64 << 20;

/// A served directory and the files read from it so far.
#[derive(Debug)]
pub(crate) struct DirContent {
    /// The directory, canonical: absolute and without symbolic links.
    root: PathBuf,
    cache: Mutex<Cache>,
    /// How long a cached file is served without checking its path and version again.
    check_interval: Duration,
}

/// Small files already read, keyed by path, with what identifies their version.
#[derive(Debug, Default)]
struct Cache {
    files: HashMap<PathBuf, Cached>,
    bytes: u64,
}

#[derive(Debug)]
struct Cached {
    version: Version,
    /// When the path and the version were last checked.
    checked: Instant,
    bytes: Bytes,
    content_type: &'static str,
}

impl Cached {
    fn reply(&self) -> Reply {
        Reply::Body {
            bytes: self.bytes.clone(),
            content_type: self.content_type,
        }
    }
}

/// What tells one version of a file from the next: device, inode, length, modification time.
#[derive(Debug, PartialEq, Eq)]
struct Version {
    dev_ino: (u64, u64),
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Version {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let dev_ino = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let dev_ino = (0, 0);
        Self {
            dev_ino,
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

impl DirContent {
    /// The fast path, run on the runtime's thread: a cached file checked less than the check
    /// interval ago, or one that is still reached through plain directories (no symbolic link
    /// on the way, checked with one `lstat` per segment) with the cached version. `None` sends
    /// the request to the slow path.
    ///
    /// Cached bytes were read through a checked path, so serving them never reads outside the
    /// root; the interval only bounds how long a change to the file may go unseen.
    fn cached(&self, target: &Target) -> Option<Reply> {
        let Target::Flags {
            segments,
            slash: false,
        } = target
        else {
            return None;
        };
        let mut path = self.root.clone();
        path.extend(segments);
        let now = Instant::now();
        if let Ok(cache) = self.cache.lock()
            && let Some(cached) = cache.files.get(&path)
            && now.saturating_duration_since(cached.checked) < self.check_interval
        {
            return Some(cached.reply());
        }
        // Check again: every segment a plain directory or file (no link), same version.
        let mut walked = self.root.clone();
        let mut meta = None;
        for segment in segments {
            walked.push(segment);
            let here = fs::symlink_metadata(&walked).ok()?;
            if here.file_type().is_symlink() {
                return None;
            }
            meta = Some(here);
        }
        let meta = meta?;
        if !meta.is_file() {
            return None;
        }
        let mut cache = self.cache.lock().ok()?;
        let cached = cache.files.get_mut(&path)?;
        if cached.version != Version::of(&meta) {
            return None;
        }
        cached.checked = now;
        Some(cached.reply())
    }

    /// The slow path, on the blocking pool: resolve, check, list or read (and cache).
    fn reply(&self, raw: &str, target: Target) -> Reply {
        let root = &self.root;
        let (segments, slash) = match target {
            Target::Root => {
                return Reply::Body {
                    bytes: Bytes::from(root_listing()),
                    content_type: HTML,
                };
            }
            Target::Flags { segments, slash } => (segments, slash),
        };
        let mut path = root.clone();
        path.extend(&segments);
        // Resolving every symbolic link and checking the result is still below the root is
        // what keeps links that point outside from being followed.
        let Ok(resolved) = fs::canonicalize(&path) else {
            return Reply::NotFound;
        };
        if !resolved.starts_with(root) {
            return Reply::NotFound;
        }
        let Ok(meta) = fs::metadata(&resolved) else {
            return Reply::NotFound;
        };
        if meta.is_dir() {
            if !slash {
                return Reply::Redirect(format!("{raw}/"));
            }
            let mut shown = String::from("/flags/");
            for segment in &segments {
                shown.push_str(segment);
                shown.push('/');
            }
            return match dir_entries(&resolved) {
                Ok(entries) => Reply::Body {
                    bytes: Bytes::from(listing::render(&shown, &entries)),
                    content_type: HTML,
                },
                Err(_) => Reply::NotFound,
            };
        }
        // Only regular files: a FIFO or a device could block or never end.
        if !meta.is_file() || slash {
            return Reply::NotFound;
        }
        let Ok((bytes, version)) = read_file(&resolved) else {
            return Reply::NotFound;
        };
        let content_type = content_type(&resolved);
        self.remember(resolved, bytes.clone(), version, content_type);
        Reply::Body {
            bytes,
            content_type,
        }
    }

    /// Keeps a small file in the cache, within the total budget. The key is the canonical
    /// path, which is what the fast path builds for a path without links.
    fn remember(&self, path: PathBuf, bytes: Bytes, version: Version, content_type: &'static str) {
        let len = bytes.len() as u64;
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let previous = cache
            .files
            .get(&path)
            .map_or(0, |old| old.bytes.len() as u64);
        if len > CACHE_FILE_MAX || cache.bytes - previous + len > CACHE_TOTAL_MAX {
            return;
        }
        cache.bytes = cache.bytes - previous + len;
        cache.files.insert(
            path,
            Cached {
                version,
                checked: Instant::now(),
                bytes,
                content_type,
            },
        );
    }
}

/// Reads a whole file with the version of what was read.
fn read_file(path: &Path) -> io::Result<(Bytes, Version)> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok((Bytes::from(bytes), Version::of(&meta)))
}

/// The built-in flag set: every answer keyed by its canonical path. Images are drawn on first
/// request, so that starting a server costs little.
#[derive(Debug)]
pub(crate) struct Builtin {
    replies: HashMap<String, Stored>,
    /// The image of `country_codes()[i]`, once drawn.
    gifs: Vec<OnceLock<Bytes>>,
}

/// An answer of the built-in set.
#[derive(Debug)]
enum Stored {
    Ready(Reply),
    /// The image of `country_codes()[i]`.
    Gif(usize),
}

impl Builtin {
    /// The set, generated on first use.
    pub(crate) fn get() -> &'static Self {
        static BUILTIN: OnceLock<Builtin> = OnceLock::new();
        BUILTIN.get_or_init(Self::generate)
    }

    fn generate() -> Self {
        let mut replies = HashMap::new();
        let mut add = |path: String, bytes: Vec<u8>, content_type| {
            let bytes = Bytes::from(bytes);
            replies.insert(
                path,
                Stored::Ready(Reply::Body {
                    bytes,
                    content_type,
                }),
            );
        };
        add("/".into(), root_listing().into_bytes(), HTML);
        let dirs: Vec<Entry> = country_codes()
            .iter()
            .map(|cc| Entry {
                name: cc.to_ascii_lowercase(),
                dir: true,
            })
            .collect();
        add(
            "/flags/".into(),
            listing::render("/flags/", &dirs).into_bytes(),
            HTML,
        );
        let mut gifs = Vec::new();
        for cc in country_codes() {
            let lower = cc.to_ascii_lowercase();
            let dir = format!("/flags/{lower}/");
            let files = [
                Entry {
                    name: format!("{lower}.gif"),
                    dir: false,
                },
                Entry {
                    name: "metadata.json".into(),
                    dir: false,
                },
            ];
            add(
                dir.clone(),
                listing::render(&dir, &files).into_bytes(),
                HTML,
            );
            gifs.push((format!("{dir}{lower}.gif"), gifs.len()));
            add(
                format!("{dir}metadata.json"),
                metadata(cc).into_bytes(),
                "application/json",
            );
        }
        let redirect = |to: String| Stored::Ready(Reply::Redirect(to));
        replies.insert("/flags".into(), redirect("/flags/".into()));
        for cc in country_codes() {
            let lower = cc.to_ascii_lowercase();
            replies.insert(
                format!("/flags/{lower}"),
                redirect(format!("/flags/{lower}/")),
            );
        }
        let count = gifs.len();
        for (path, index) in gifs {
            replies.insert(path, Stored::Gif(index));
        }
        Self {
            replies,
            gifs: (0..count).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The answer stored for a canonical path.
    fn stored(&self, stored: &Stored) -> Reply {
        match stored {
            Stored::Ready(reply) => reply.clone(),
            Stored::Gif(index) => {
                let (Some(gif), Some(cc)) = (self.gifs.get(*index), country_codes().get(*index))
                else {
                    return Reply::NotFound;
                };
                Reply::Body {
                    bytes: gif.get_or_init(|| Bytes::from(flag_gif(cc))).clone(),
                    content_type: "image/gif",
                }
            }
        }
    }

    /// The answer to `raw`: a direct hit for canonical paths, else the decoded path's.
    fn reply(&self, raw: &str) -> Reply {
        if let Some(stored) = self.replies.get(raw) {
            return self.stored(stored);
        }
        let canonical = match Target::parse(raw) {
            Some(Target::Root) => "/".to_owned(),
            Some(Target::Flags { segments, slash }) => {
                let mut path = String::from("/flags");
                for segment in &segments {
                    path.push('/');
                    path.push_str(segment);
                }
                if slash {
                    path.push('/');
                }
                path
            }
            None => return Reply::NotFound,
        };
        match self.replies.get(&canonical) {
            // A redirect goes to the path as the client wrote it, plus the slash.
            Some(Stored::Ready(Reply::Redirect(_))) => Reply::Redirect(format!("{raw}/")),
            Some(stored) => self.stored(stored),
            None => Reply::NotFound,
        }
    }
}

/// The listing of `/`, which holds `flags/` only.
fn root_listing() -> String {
    listing::render(
        "/",
        &[Entry {
            name: "flags".into(),
            dir: true,
        }],
    )
}

/// The `metadata.json` of a built-in country, shaped as the book's files:
/// `{"tld_cc": ".br", "iso_cc": "BR", "country": "Brazil", "gec_cc": "BR"}`.
///
/// The built-in set has no table of the CIA's GEC codes, so `gec_cc` repeats the ISO code.
fn metadata(cc: &str) -> String {
    let name = country_name(cc).unwrap_or(cc);
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    format!(
        "{{\"tld_cc\": {}, \"iso_cc\": {}, \"country\": {}, \"gec_cc\": {}}}",
        quoted(&format!(".{}", cc.to_ascii_lowercase())),
        quoted(cc),
        quoted(name),
        quoted(cc),
    )
}

/// The entries of a directory, sorted without regard to case, as `http.server` does. Names that
/// are not UTF-8 are left out (no request could name them).
fn dir_entries(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // Follows links, so a link to a directory is listed as one.
        let dir = fs::metadata(entry.path()).is_ok_and(|meta| meta.is_dir());
        entries.push(Entry { name, dir });
    }
    entries.sort_by_cached_key(|entry| (entry.name.to_lowercase(), entry.name.clone()));
    Ok(entries)
}

/// The `Content-Type` of a file, from its extension.
fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|ext| ext.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("gif") => "image/gif",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("html" | "htm") => HTML,
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_has_the_books_shape() {
        assert_eq!(
            metadata("BR"),
            r#"{"tld_cc": ".br", "iso_cc": "BR", "country": "Brazil", "gec_cc": "BR"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&metadata("CI")).expect("valid JSON");
        assert_eq!(parsed["country"], "Côte d'Ivoire");
    }

    #[test]
    fn builtin_paths() {
        let builtin = Builtin::get();
        assert!(matches!(
            builtin.reply("/flags/br/br.gif"),
            Reply::Body {
                content_type: "image/gif",
                ..
            }
        ));
        assert!(matches!(
            builtin.reply("/flags/%62r/br.gif"),
            Reply::Body {
                content_type: "image/gif",
                ..
            }
        ));
        assert!(matches!(builtin.reply("/flags/BR/BR.gif"), Reply::NotFound));
        assert!(matches!(
            builtin.reply("/flags/br/br.gif/"),
            Reply::NotFound
        ));
        assert!(
            matches!(builtin.reply("/flags/%62r"), Reply::Redirect(to) if to == "/flags/%62r/")
        );
    }
}
