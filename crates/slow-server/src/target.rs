//! Request paths: which resource a path names, with every path that could leave the served
//! root turned away before the file system is touched.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// The longest request path served, in bytes; longer ones get 404.
pub(crate) const MAX_PATH_LEN: usize = 1024;
/// The most segments a path below `/flags/` may have; deeper ones get 404.
const MAX_SEGMENTS: usize = 32;

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `/`: the server root, which lists `flags/`.
    Root,
    /// `/flags`, `/flags/` or a path below it.
    Flags {
        /// The decoded segments below `/flags/`, each a plain file or directory name.
        segments: Vec<String>,
        /// Whether the path ends with `/` (a directory listing is asked for).
        slash: bool,
    },
}

impl Target {
    /// Parses a request path as sent by the client (percent-encoded, without the query).
    ///
    /// Returns `None`, so 404, for anything outside `/` and `/flags/`, and for every segment
    /// that is empty, `.` or `..` (also when percent-encoded), holds an encoded `/`, a
    /// backslash, a NUL or another control character, or is not UTF-8 once decoded; also for
    /// over-long or over-deep paths.
    pub(crate) fn parse(raw: &str) -> Option<Self> {
        if raw.len() > MAX_PATH_LEN {
            return None;
        }
        if raw == "/" {
            return Some(Self::Root);
        }
        let rest = raw.strip_prefix("/flags")?;
        if rest.is_empty() {
            return Some(Self::Flags {
                segments: Vec::new(),
                slash: false,
            });
        }
        let rest = rest.strip_prefix('/')?;
        let (body, slash) = match rest.strip_suffix('/') {
            Some(body) => (body, true),
            None => (rest, rest.is_empty()),
        };
        if body.is_empty() {
            return Some(Self::Flags {
                segments: Vec::new(),
                slash,
            });
        }
        let segments = body
            .split('/')
            .map(decode_segment)
            .collect::<Option<Vec<_>>>()?;
        if segments.len() > MAX_SEGMENTS {
            return None;
        }
        Some(Self::Flags { segments, slash })
    }
}

/// Decodes one path segment, or `None` if it is not a plain name.
fn decode_segment(raw: &str) -> Option<String> {
    let decoded: Cow<'_, str> = percent_decode_str(raw).decode_utf8().ok()?;
    let plain = !decoded.is_empty()
        && decoded != "."
        && decoded != ".."
        && !decoded
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    plain.then(|| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(segments: &[&str], slash: bool) -> Option<Target> {
        Some(Target::Flags {
            segments: segments.iter().map(|s| s.to_string()).collect(),
            slash,
        })
    }

    #[test]
    fn plain_paths() {
        assert_eq!(Target::parse("/"), Some(Target::Root));
        assert_eq!(Target::parse("/flags"), flags(&[], false));
        assert_eq!(Target::parse("/flags/"), flags(&[], true));
        assert_eq!(Target::parse("/flags/br"), flags(&["br"], false));
        assert_eq!(Target::parse("/flags/br/"), flags(&["br"], true));
        assert_eq!(
            Target::parse("/flags/br/br.gif"),
            flags(&["br", "br.gif"], false)
        );
        assert_eq!(
            Target::parse("/flags/%62r/br.gif"),
            flags(&["br", "br.gif"], false)
        );
        assert_eq!(Target::parse("/flags/a%20b"), flags(&["a b"], false));
    }

    #[test]
    fn hostile_paths_are_refused() {
        let long = format!("/flags/{}", "a".repeat(MAX_PATH_LEN));
        let deep = format!("/flags{}", "/a".repeat(MAX_SEGMENTS + 1));
        for raw in [
            "",
            "flags/br",
            "/flagsx",
            "/etc/passwd",
            "//etc/passwd",
            "/flags/..",
            "/flags/../",
            "/flags/../etc/passwd",
            "/flags/br/../../etc/passwd",
            "/flags/%2e%2e/etc/passwd",
            "/flags/%2E%2E/etc/passwd",
            "/flags/.%2e/x",
            "/flags/.",
            "/flags/./br",
            "/flags/..%2fetc%2fpasswd",
            "/flags/%2fetc%2fpasswd",
            "/flags/br%2f..%2f..%2fx",
            "/flags/..\\..\\etc\\passwd",
            "/flags/%5c..%5cetc",
            "/flags//etc/passwd",
            "/flags/br//br.gif",
            "/flags/br%00.gif",
            "/flags/br/br.gif%00",
            "/flags/%0a",
            "/flags/%ff%fe",
            "/flags/%c0%ae%c0%ae/etc",
            long.as_str(),
            deep.as_str(),
        ] {
            assert_eq!(Target::parse(raw), None, "{raw:?}");
        }
    }
}
