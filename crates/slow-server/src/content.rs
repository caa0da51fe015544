//! What the server answers for a path: the built-in flag set or a directory's files.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
    /// The files under this directory (canonical: absolute, without symbolic links).
    Dir(PathBuf),
}

impl Content {
    /// Opens the content: the built-in set, or `dir` after checking that it is a directory.
    pub(crate) fn open(dir: Option<&Path>) -> Result<Self, ServerError> {
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
        Ok(Self::Dir(root))
    }

    /// The answer to the request path `raw` (as sent, without the query).
    pub(crate) async fn reply(&self, raw: &str) -> Reply {
        match self {
            Self::Builtin(builtin) => builtin.reply(raw),
            Self::Dir(root) => {
                let Some(target) = Target::parse(raw) else {
                    return Reply::NotFound;
                };
                let (root, raw) = (root.clone(), raw.to_owned());
                // One trip to the blocking pool for the whole lookup and read.
                tokio::task::spawn_blocking(move || dir_reply(&root, &raw, target))
                    .await
                    .unwrap_or(Reply::NotFound)
            }
        }
    }
}

/// The built-in flag set: every answer keyed by its canonical path. Images are drawn on first
/// request (a few hundred microseconds each), so that starting a server costs little.
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

/// The answer to a path of the directory mode (blocking: runs on the blocking pool).
fn dir_reply(root: &Path, raw: &str, target: Target) -> Reply {
    let (segments, slash) = match target {
        Target::Root => {
            return Reply::Body {
                bytes: Bytes::from(root_listing()),
                content_type: HTML,
            };
        }
        Target::Flags { segments, slash } => (segments, slash),
    };
    let mut path = root.to_path_buf();
    path.extend(&segments);
    // Resolving every symbolic link and checking the result is still below the root is what
    // keeps links that point outside from being followed.
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
    match fs::read(&resolved) {
        Ok(bytes) => Reply::Body {
            bytes: Bytes::from(bytes),
            content_type: content_type(&resolved),
        },
        Err(_) => Reply::NotFound,
    }
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
