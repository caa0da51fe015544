//! What the server answers for a path: the built-in flag set or a directory's files.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::countries::{country_codes, country_name};
use crate::descriptors::{Budget, Descriptor};
use crate::error::ServerError;
use crate::image::flag_gif;
use crate::listing::{self, Entry};
use crate::target::Target;

/// `Content-Type` of HTML listings.
pub(crate) const HTML: &str = "text/html; charset=utf-8";

/// The answer to a path (before fault injection).
#[derive(Debug)]
pub(crate) enum Reply {
    /// `200 OK` with this body.
    Body {
        /// The bytes served.
        bytes: Bytes,
        /// Their `Content-Type`.
        content_type: &'static str,
    },
    /// `200 OK` with the contents of a file too large to keep in memory, sent as it is read.
    File {
        /// The file, open at its start.
        file: fs::File,
        /// Counts the file's descriptor until it is closed.
        descriptor: Descriptor,
        /// Its length when it was opened: the `Content-Length` sent.
        len: u64,
        /// Its `Content-Type`.
        content_type: &'static str,
    },
    /// `301 Moved Permanently` to this location (a directory asked for without its `/`).
    Redirect(String),
    /// `404 Not Found`.
    NotFound,
    /// `503 Service Unavailable`: the process has no descriptor to spare for the file.
    Busy,
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

    /// The answer to the request path `raw` (as sent, without the query); a file or directory
    /// is opened only with a descriptor to spare in `budget`.
    pub(crate) async fn reply(&self, raw: &str, budget: &Budget) -> Reply {
        match self {
            Self::Builtin(builtin) => builtin.reply(raw),
            Self::Dir(dir) => {
                let Some(target) = Target::parse(raw) else {
                    return Reply::NotFound;
                };
                if let Some(reply) = dir.cached(&target) {
                    return reply;
                }
                // The slow path may open a file or a directory.
                let Some(descriptor) = budget.serving() else {
                    return Reply::Busy;
                };
                let (dir, raw) = (Arc::clone(dir), raw.to_owned());
                // One trip to the blocking pool for the whole lookup and read.
                tokio::task::spawn_blocking(move || dir.reply(&raw, target, descriptor))
                    .await
                    .unwrap_or(Reply::NotFound)
            }
        }
    }
}

/// The most bytes of one file kept in memory; larger files are sent as they are read.
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

impl Cache {
    /// Whether `len` bytes for `path` fit within the limits, in place of what `path` holds now.
    fn room_for(&self, path: &Path, len: u64) -> bool {
        let previous = self.files.get(path).map_or(0, |old| old.bytes.len() as u64);
        len <= CACHE_FILE_MAX && self.bytes - previous + len <= CACHE_TOTAL_MAX
    }
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

    /// The slow path, on the blocking pool: resolve, check, list or read (and cache). What it
    /// opens is counted by `descriptor`, which goes with a file sent as it is read.
    fn reply(&self, raw: &str, target: Target, descriptor: Descriptor) -> Reply {
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
        // Open first, then ask the descriptor what it is: by now the path may name something
        // else than what `canonicalize` saw, such as a FIFO renamed over a file.
        let Ok(opened) = open(&resolved) else {
            return Reply::NotFound;
        };
        let (file, meta) = match opened {
            Opened::File(file, meta) => (file, meta),
            Opened::Other => return Reply::NotFound,
            Opened::Dir => {
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
        };
        if slash {
            return Reply::NotFound;
        }
        let content_type = content_type(&resolved);
        // Read whole only what the cache takes: anything else costs a chunk per connection,
        // not its size (a client that stops reading must not pin a large file in memory).
        if !self.has_room(&resolved, meta.len()) {
            return Reply::File {
                file,
                descriptor,
                len: meta.len(),
                content_type,
            };
        }
        let Ok((bytes, version)) = read_file(file, &meta) else {
            return Reply::NotFound;
        };
        self.remember(resolved, bytes.clone(), version, content_type);
        Reply::Body {
            bytes,
            content_type,
        }
    }

    /// Whether the cache would keep `len` bytes for `path`; [`remember`](Self::remember)
    /// decides again with what was read.
    fn has_room(&self, path: &Path, len: u64) -> bool {
        let Ok(cache) = self.cache.lock() else {
            return false;
        };
        cache.room_for(path, len)
    }

    /// Keeps a small file in the cache, within the total budget. The key is the canonical
    /// path, which is what the fast path builds for a path without links.
    fn remember(&self, path: PathBuf, bytes: Bytes, version: Version, content_type: &'static str) {
        let len = bytes.len() as u64;
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if !cache.room_for(&path, len) {
            return;
        }
        let previous = cache
            .files
            .get(&path)
            .map_or(0, |old| old.bytes.len() as u64);
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

/// What a path turned out to be once opened.
#[derive(Debug)]
enum Opened {
    /// A regular file, open for reading, with its metadata (from the descriptor).
    File(fs::File, fs::Metadata),
    /// A directory (closed again: listings read it by path, and `read_dir` opens it with
    /// `O_DIRECTORY`, which fails on anything else).
    Dir,
    /// Anything else (a FIFO, a socket, a device): never served, since reading it could block
    /// or never end.
    Other,
}

/// Opens `path` without blocking and without following a symbolic link in its last component,
/// then tells what the descriptor refers to.
///
/// `path` is canonical, so a link in its last component appeared after the root check and is
/// refused (`ELOOP`), never followed. `O_NONBLOCK` makes opening a FIFO return at once (a plain
/// `open` waits for a writer); it is cleared again on a regular file, so that reads behave as
/// usual on every file system.
#[cfg(unix)]
fn open(path: &Path) -> io::Result<Opened> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::os::unix::fs::OpenOptionsExt;

    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW).bits())
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Ok(Opened::Dir);
    }
    if !meta.is_file() {
        return Ok(Opened::Other);
    }
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(
        &file,
        FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)),
    )?;
    Ok(Opened::File(file, meta))
}

/// Opens `path` and tells what it is (no FIFOs to fear without Unix).
#[cfg(not(unix))]
fn open(path: &Path) -> io::Result<Opened> {
    let meta = fs::metadata(path)?;
    if meta.is_dir() {
        return Ok(Opened::Dir);
    }
    if !meta.is_file() {
        return Ok(Opened::Other);
    }
    let file = fs::File::open(path)?;
    let meta = file.metadata()?;
    Ok(if meta.is_file() {
        Opened::File(file, meta)
    } else {
        Opened::Other
    })
}

/// Reads a whole open file, with the version of what was read (`meta` is the descriptor's).
fn read_file(mut file: fs::File, meta: &fs::Metadata) -> io::Result<(Bytes, Version)> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok((Bytes::from(bytes), Version::of(meta)))
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
    /// A listing or a `metadata.json`.
    Bytes {
        bytes: Bytes,
        content_type: &'static str,
    },
    /// `301` to this location.
    Redirect(String),
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
                Stored::Bytes {
                    bytes,
                    content_type,
                },
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
        let redirect = Stored::Redirect;
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
            Stored::Bytes {
                bytes,
                content_type,
            } => Reply::Body {
                bytes: bytes.clone(),
                content_type,
            },
            Stored::Redirect(to) => Reply::Redirect(to.clone()),
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
            Some(Stored::Redirect(_)) => Reply::Redirect(format!("{raw}/")),
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

    /// The race of issue 17, point 8, lost by construction: a FIFO is what the path names at
    /// `open()` time. Opening it must neither block (a plain `open` waits for a writer, for
    /// ever) nor let it be served.
    #[cfg(unix)]
    #[test]
    fn issue_17_a_fifo_at_open_time_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("br.gif");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let (done, opened) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || done.send(open(&path).map(|opened| format!("{opened:?}"))));
        let opened = opened
            .recv_timeout(Duration::from_secs(30))
            .expect("opening the FIFO blocked");
        assert_eq!(opened.expect("opened"), "Other");
    }

    /// The last component of the (canonical) path turned into a symbolic link after the root
    /// check: refused, not followed.
    #[cfg(unix)]
    #[test]
    fn a_link_at_open_time_is_not_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("secret"), "secret").expect("write");
        let link = dir.path().join("br.gif");
        std::os::unix::fs::symlink(dir.path().join("secret"), &link).expect("link");
        assert!(open(&link).is_err());
    }

    /// A file sent as it is read keeps its descriptor's permit until it is closed; without a
    /// permit to spare, the answer is `Busy` (503) and nothing is opened.
    #[tokio::test]
    async fn files_take_descriptors_from_the_budget() {
        let dir = tempfile::tempdir().expect("temp dir");
        let big = vec![7u8; (CACHE_FILE_MAX + 1) as usize];
        std::fs::write(dir.path().join("big.bin"), &big).expect("write");
        std::fs::write(dir.path().join("small.txt"), "small").expect("write");
        let content = Content::open(Some(dir.path()), Duration::ZERO).expect("open");
        // 16 descriptors: 8 in reserve, 1 for 503s, 7 for connections and files.
        let budget = Budget::for_limit(Some(16));
        let mut sending = Vec::new();
        for _ in 0..7 {
            let reply = content.reply("/flags/big.bin", &budget).await;
            assert!(matches!(reply, Reply::File { .. }), "{reply:?}");
            sending.push(reply);
        }
        for path in ["/flags/big.bin", "/flags/small.txt", "/flags/"] {
            let reply = content.reply(path, &budget).await;
            assert!(matches!(reply, Reply::Busy), "{path}: {reply:?}");
        }
        drop(sending.pop());
        let reply = content.reply("/flags/small.txt", &budget).await;
        assert!(matches!(reply, Reply::Body { .. }), "{reply:?}");
        let reply = content.reply("/flags/big.bin", &budget).await;
        assert!(matches!(reply, Reply::File { .. }), "{reply:?}");
        // The small file is cached now: served without a descriptor.
        let reply = content.reply("/flags/small.txt", &budget).await;
        assert!(matches!(reply, Reply::Body { .. }), "{reply:?}");
        assert!(matches!(
            content.reply("/flags/big.bin", &budget).await,
            Reply::Busy
        ));
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
