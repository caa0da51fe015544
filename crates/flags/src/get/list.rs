//! The URL list of `flags get`, read as a stream: one entry a line (`URL [NAME]`), blank lines
//! and `#` comments ignored, each line bounded; and the safe relative path of each entry.

use std::io::{self, BufRead};

use crate::download::safe_component;

/// The longest list line accepted, in bytes; a longer one is a bad line (and is skipped
/// without being held).
pub(crate) const MAX_LINE: usize = 8 * 1024;
/// The most path components a name may have (host included).
const MAX_COMPONENTS: usize = 32;

/// One entry of the list, ready to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Its line in the list, from 1.
    pub(crate) line: u64,
    /// The URL, as parsed (`http` or `https`).
    pub(crate) url: String,
    /// The host (and port) the per-host limit counts against.
    pub(crate) host: String,
    /// The safe relative path under `--dest`.
    pub(crate) name: String,
    /// Retries made so far.
    pub(crate) retries: u32,
}

impl Entry {
    /// The key of this entry in the journal: a hash of the URL and the name it is saved
    /// under (FNV-1a, 64 bits: stable across builds and versions).
    pub(crate) fn key(&self) -> u64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self
            .url
            .bytes()
            .chain(std::iter::once(b'\t'))
            .chain(self.name.bytes())
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }

    /// The entry as a list line (`URL NAME`), for `.flags-failed`.
    pub(crate) fn list_line(&self) -> String {
        format!("{} {}", self.url, self.name)
    }
}

/// A line of the list that cannot be downloaded: its number and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadLine {
    /// Its line in the list, from 1.
    pub(crate) line: u64,
    /// Why, in one line.
    pub(crate) reason: String,
}

/// The lines of a list, read one at a time into one bounded buffer.
#[derive(Debug)]
pub(crate) struct ListReader<R> {
    input: R,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> ListReader<R> {
    /// Reads the list from `input`.
    pub(crate) fn new(input: R) -> Self {
        Self {
            input,
            line: 0,
            buf: Vec::with_capacity(256),
        }
    }

    /// The next entry or bad line; blank lines and comments are skipped. `None` at the end.
    ///
    /// # Errors
    ///
    /// Reading the list.
    pub(crate) fn next_item(&mut self) -> io::Result<Option<Result<Entry, BadLine>>> {
        loop {
            let Some(too_long) = self.read_line()? else {
                return Ok(None);
            };
            let line = self.line;
            if too_long {
                return Ok(Some(Err(BadLine {
                    line,
                    reason: format!("line longer than {MAX_LINE} bytes"),
                })));
            }
            if let Some(item) = parse_line(line, &self.buf) {
                return Ok(Some(item));
            }
        }
    }

    /// Reads one line into `buf` (without its end); `Some(true)` when it was over
    /// [`MAX_LINE`] (the rest was skipped, not held), `None` at the end of the input.
    fn read_line(&mut self) -> io::Result<Option<bool>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (piece, end) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], Some(at + 1)),
                None => (available, None),
            };
            if !too_long {
                if self.buf.len() + piece.len() > MAX_LINE {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(piece);
                }
            }
            let used = end.unwrap_or(available.len());
            self.input.consume(used);
            if end.is_some() {
                break;
            }
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(Some(too_long))
    }
}

/// Parses list line number `line`: `None` for a blank line or a comment.
pub(crate) fn parse_line(line: u64, bytes: &[u8]) -> Option<Result<Entry, BadLine>> {
    let bad = |reason: String| Some(Err(BadLine { line, reason }));
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bad("not valid UTF-8".into());
    };
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    if text.contains('\0') {
        return bad("a NUL byte".into());
    }
    let mut columns = text.split_whitespace();
    let (Some(url), name, None) = (columns.next(), columns.next(), columns.next()) else {
        return bad("more than two columns (URL and NAME)".into());
    };
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return bad(format!("invalid URL ({e}): {url}")),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return bad(format!("unsupported scheme {}: {url}", parsed.scheme()));
    }
    let Some(host) = parsed.host_str() else {
        return bad(format!("URL without a host: {url}"));
    };
    let host = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let name = match name {
        Some(name) => given_name(name),
        None => url_name(&host, &parsed),
    };
    match name {
        Ok(name) => Some(Ok(Entry {
            line,
            url: parsed.into(),
            host,
            name,
            retries: 0,
        })),
        Err(reason) => bad(format!("{reason}: {url}")),
    }
}

/// The name of a URL without one: its host (`:` of a port as `_`) and path, each component
/// made safe ([`safe_component`]); the query is not part of it.
///
/// # Errors
///
/// A URL with no path to name the file after (`http://h/`, `http://h/dir/`).
fn url_name(host: &str, url: &reqwest::Url) -> Result<String, String> {
    let path = url.path();
    if path.ends_with('/') {
        return Err("URL without a file name in its path (give a NAME column)".into());
    }
    let components = std::iter::once(host).chain(path.split('/').filter(|c| !c.is_empty()));
    join_safe(components).ok_or_else(|| "no safe file name in the URL".into())
}

/// A name from the list's second column: a relative path inside `--dest` (no `..`, not
/// absolute), each component made safe.
fn given_name(name: &str) -> Result<String, String> {
    let absolute = name.starts_with('/') || name.starts_with('\\') || name.contains(':');
    let escapes = name.split(['/', '\\']).any(|c| c == "..");
    if absolute || escapes {
        return Err(format!("NAME {name} escapes --dest"));
    }
    join_safe(
        name.split(['/', '\\'])
            .filter(|c| !c.is_empty() && *c != "."),
    )
    .ok_or_else(|| format!("no safe file name in NAME {name}"))
}

/// The components made safe and joined with `/`; `None` when one has nothing safe left, or
/// there are none, or too many.
fn join_safe<'a>(components: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut name = String::new();
    for (i, component) in components.enumerate() {
        if i == MAX_COMPONENTS {
            return None;
        }
        let safe = safe_component(component)?;
        if !name.is_empty() {
            name.push('/');
        }
        name.push_str(&safe);
    }
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> Result<Entry, BadLine> {
        parse_line(7, text.as_bytes()).unwrap_or_else(|| {
            Err(BadLine {
                line: 0,
                reason: "skipped".into(),
            })
        })
    }

    fn name(text: &str) -> Result<String, String> {
        entry(text).map(|e| e.name).map_err(|e| e.reason)
    }

    #[test]
    fn names_come_from_host_and_path() {
        assert_eq!(name("http://h/a/b.gif"), Ok("h/a/b.gif".into()));
        assert_eq!(
            name("http://h:8080/a/b.gif?x=1"),
            Ok("h_8080/a/b.gif".into())
        );
        assert_eq!(
            name("http://h/a/../../../etc/passwd"),
            Ok("h/etc/passwd".into())
        );
        assert_eq!(name("http://h/%2e%2e/x"), Ok("h/x".into()));
        assert_eq!(name("http://h/nul.txt"), Ok("h/_nul.txt".into()));
        assert_eq!(name("http://h/a\u{202E}b"), Ok("h/a%E2%80%AEb".into()));
        assert!(name("http://h/x y.gif  out/z.gif").is_err());
        assert_eq!(name("http://h/x.gif  out/z.gif"), Ok("out/z.gif".into()));
        assert_eq!(name("http://h/x.gif out/\u{200B}z"), Ok("out/_z".into()));
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, why) in [
            ("ftp://h/x", "unsupported scheme ftp"),
            ("file:///etc/passwd", "unsupported scheme file"),
            ("http//h/x", "invalid URL"),
            ("http://h/", "without a file name"),
            ("http://h", "without a file name"),
            ("http://h/x ../y", "escapes --dest"),
            ("http://h/x /etc/y", "escapes --dest"),
            ("http://h/x a b", "more than two columns"),
            ("http://h/x\0", "NUL"),
        ] {
            let reason = name(line).unwrap_err();
            assert!(reason.contains(why), "{line}: {reason}");
        }
        assert!(parse_line(1, b"  # comment").is_none());
        assert!(parse_line(1, b"   ").is_none());
        assert_eq!(
            parse_line(3, b"http://h/\xff").and_then(Result::err),
            Some(BadLine {
                line: 3,
                reason: "not valid UTF-8".into()
            })
        );
    }

    #[test]
    fn long_lines_are_skipped_unheld() -> io::Result<()> {
        let long = "x".repeat(100 * 1024);
        let text = format!("# c\n\nhttp://h/a\n{long}\r\nhttp://h/b\r\nhttp://h/c");
        let mut reader = ListReader::new(io::BufReader::with_capacity(64, text.as_bytes()));
        let mut items = Vec::new();
        while let Some(item) = reader.next_item()? {
            items.push(item.map(|e| (e.line, e.name)).map_err(|e| e.line));
            assert!(reader.buf.capacity() <= 2 * MAX_LINE);
        }
        assert_eq!(
            items,
            [
                Ok((3, "h/a".into())),
                Err(4),
                Ok((5, "h/b".into())),
                Ok((6, "h/c".into()))
            ]
        );
        Ok(())
    }

    #[test]
    fn keys_depend_on_url_and_name() -> Result<(), BadLine> {
        let a = entry("http://h/a")?;
        assert_eq!(a.key(), entry("http://h/a")?.key());
        assert_ne!(a.key(), entry("http://h/a other")?.key());
        assert_ne!(a.key(), entry("http://h/b")?.key());
        Ok(())
    }
}
