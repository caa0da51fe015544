//! HTML directory listings in the style of Python's `http.server`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What `urllib.parse.quote` leaves alone: letters, digits and `_.-~/`.
const HREF: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');

/// One line of a listing.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The file or directory name.
    pub(crate) name: String,
    /// Whether the entry is a directory (shown and linked with a trailing `/`).
    pub(crate) dir: bool,
}

/// The listing page of the directory at `path` (the decoded request path, such as `/flags/`),
/// with its entries in the order given.
pub(crate) fn render(path: &str, entries: &[Entry]) -> String {
    let title = format!("Directory listing for {}", escape(path));
    let mut html = format!(
        "<!DOCTYPE HTML>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n<hr>\n<ul>\n"
    );
    for entry in entries {
        let shown = if entry.dir {
            format!("{}/", entry.name)
        } else {
            entry.name.clone()
        };
        html.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>\n",
            utf8_percent_encode(&shown, HREF),
            escape(&shown)
        ));
    }
    html.push_str("</ul>\n<hr>\n</body>\n</html>\n");
    html
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_encoded_and_text_escaped() {
        let html = render(
            "/flags/<x>/",
            &[
                Entry {
                    name: "br".into(),
                    dir: true,
                },
                Entry {
                    name: "a b&\"c\".gif".into(),
                    dir: false,
                },
            ],
        );
        assert!(html.contains("<title>Directory listing for /flags/&lt;x&gt;/</title>"));
        assert!(html.contains("<li><a href=\"br/\">br/</a></li>"));
        assert!(html.contains("href=\"a%20b%26%22c%22.gif\">a b&amp;&quot;c&quot;.gif</a>"));
    }
}
