//! The console's HTML writer. Markup can only come from `&'static str`
//! (the page code's own literals); everything else — names, tags, digests,
//! messages, any value that came from a request or the index — enters
//! through [`Html::text`] or an attribute value, both escaped. So no value
//! a user chose can open an element or an attribute: the class of bugs
//! "forgot to escape" cannot be written.
//!
//! URLs are attribute values like any other (escaped), and the page code
//! builds them from the console's base path and percent-encoded segments
//! ([`seg`]); no URL comes from a request as a whole, so no `javascript:`
//! link can be made.

use std::fmt::Write;

/// An HTML document or fragment being written.
#[derive(Default)]
pub struct Html {
    out: String,
}

impl Html {
    pub fn new() -> Html {
        Html {
            out: String::with_capacity(16 << 10),
        }
    }

    /// Markup: only the page code's own literals.
    pub fn raw(&mut self, markup: &'static str) -> &mut Html {
        self.out.push_str(markup);
        self
    }

    /// Text, escaped.
    pub fn text(&mut self, s: &str) -> &mut Html {
        escape_into(&mut self.out, s);
        self
    }

    /// A number as text.
    pub fn num(&mut self, n: u64) -> &mut Html {
        let _ = write!(self.out, "{n}");
        self
    }

    /// `<tag a="v" …>`; attribute values escaped.
    pub fn open(&mut self, tag: &'static str, attrs: &[(&'static str, &str)]) -> &mut Html {
        self.out.push('<');
        self.out.push_str(tag);
        for (name, value) in attrs {
            self.attr(name, value);
        }
        self.out.push('>');
        self
    }

    /// ` name="value"` inside an open tag written with [`Html::raw`].
    pub fn attr(&mut self, name: &'static str, value: &str) -> &mut Html {
        self.out.push(' ');
        self.out.push_str(name);
        self.out.push_str("=\"");
        escape_into(&mut self.out, value);
        self.out.push('"');
        self
    }

    /// `</tag>`.
    pub fn close(&mut self, tag: &'static str) -> &mut Html {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag attrs>text</tag>`.
    pub fn el(
        &mut self,
        tag: &'static str,
        attrs: &[(&'static str, &str)],
        text: &str,
    ) -> &mut Html {
        self.open(tag, attrs).text(text).close(tag)
    }

    /// A link: `<a href="href">text</a>`.
    pub fn link(&mut self, href: &str, text: &str) -> &mut Html {
        self.el("a", &[("href", href)], text)
    }

    /// A fragment written by another function.
    pub fn append(&mut self, other: Html) -> &mut Html {
        self.out.push_str(&other.out);
        self
    }

    pub fn into_string(self) -> String {
        self.out
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// A path segment, percent-encoded: everything but unreserved characters
/// and `/` (repository names keep their slashes, as in `/v2` paths).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A query value, percent-encoded (no `/`, `&`, `=`, `+`).
pub fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_open_markup() {
        let mut h = Html::new();
        h.el(
            "td",
            &[("title", "\"><script>x</script>")],
            "<img src=x onerror=alert(1)>&",
        );
        assert_eq!(
            h.into_string(),
            "<td title=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\">\
             &lt;img src=x onerror=alert(1)&gt;&amp;</td>"
        );
    }

    #[test]
    fn segments_keep_slashes_and_encode_the_rest() {
        assert_eq!(seg("lib/app-1.2_x"), "lib/app-1.2_x");
        assert_eq!(seg("a b?#\"<"), "a%20b%3F%23%22%3C");
        assert_eq!(query_value("a/b&c=d e"), "a%2Fb%26c%3Dd%20e");
    }
}
