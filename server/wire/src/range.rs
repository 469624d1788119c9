//! `Range` and `Content-Range` header values.
//!
//! [`ByteRange`] is a blob GET's `Range: bytes=…` (one range, `a-b`, `a-`
//! or `-n`; several ranges or another unit are ignored and the whole blob
//! served, as RFC 9110 allows). [`ChunkRange`] is an upload chunk's
//! `Content-Range: <first>-<last>`. Numbers are `u64`: a value past it does
//! not parse, and nothing computed from them wraps ([`ByteRange::resolve`]
//! saturates at the blob's end, [`ChunkRange::size`] is checked).

use std::fmt;
use std::ops::Range;

/// A `Range` header as far as blob serving is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `bytes=a-b` (inclusive) or `bytes=a-`.
    From { first: u64, last: Option<u64> },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
    /// A `bytes=` value that does not parse.
    Malformed,
}

impl ByteRange {
    /// Parses a `Range` header; `None` means serve the whole blob.
    pub fn parse(value: &[u8]) -> Option<ByteRange> {
        let s = std::str::from_utf8(value).ok()?.trim();
        let spec = s.strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None; // several ranges: ignored (RFC 9110 §14.2)
        }
        let num = |t: &str| -> Option<u64> {
            let t = t.trim();
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        let Some((a, b)) = spec.split_once('-') else {
            return Some(ByteRange::Malformed);
        };
        let r = if a.trim().is_empty() {
            num(b).map(ByteRange::Suffix)
        } else if b.trim().is_empty() {
            num(a).map(|first| ByteRange::From { first, last: None })
        } else {
            match (num(a), num(b)) {
                (Some(first), Some(last)) if first <= last => Some(ByteRange::From {
                    first,
                    last: Some(last),
                }),
                _ => None,
            }
        };
        Some(r.unwrap_or(ByteRange::Malformed))
    }

    /// The bytes `[start, end)` of a blob of `size` bytes, or `None` if the
    /// range is not satisfiable.
    pub fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            ByteRange::From { first, last } if first < size => {
                let end = last.map_or(size, |l| l.saturating_add(1).min(size));
                Some(first..end)
            }
            ByteRange::Suffix(n) if n > 0 && size > 0 => Some(size.saturating_sub(n)..size),
            _ => None,
        }
    }
}

/// The header value: `bytes=a-b`, `bytes=a-`, `bytes=-n`; `Malformed`
/// renders as `bytes=-` (which parses back as `Malformed`).
impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteRange::From {
                first,
                last: Some(last),
            } => write!(f, "bytes={first}-{last}"),
            ByteRange::From { first, last: None } => write!(f, "bytes={first}-"),
            ByteRange::Suffix(n) => write!(f, "bytes=-{n}"),
            ByteRange::Malformed => f.write_str("bytes=-"),
        }
    }
}

/// `Content-Range: <first>-<last>` of a chunk, inclusive, as sent. Any two
/// numbers parse; whether they describe a chunk berth can take is
/// [`ChunkRange::size`]'s answer (`None`: `last < first`, or a size past
/// `u64`), refused with `416` and where the upload stands, as the spec
/// refuses out-of-order chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRange {
    pub first: u64,
    pub last: u64,
}

impl ChunkRange {
    /// Parses a `Content-Range` value: the spec's `^[0-9]+-[0-9]+$`, also
    /// accepting a `bytes ` or `bytes=` prefix.
    pub fn parse(s: &str) -> Option<ChunkRange> {
        let s = s.trim();
        let s = s
            .strip_prefix("bytes=")
            .or_else(|| s.strip_prefix("bytes "))
            .unwrap_or(s);
        let (a, b) = s.split_once('-')?;
        let num = |t: &str| -> Option<u64> {
            if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        Some(ChunkRange {
            first: num(a)?,
            last: num(b)?,
        })
    }

    /// `last - first + 1`, or `None` when that is not a byte count: `last`
    /// before `first`, or `0-18446744073709551615` (2^64 bytes).
    pub fn size(self) -> Option<u64> {
        self.last.checked_sub(self.first)?.checked_add(1)
    }
}

impl fmt::Display for ChunkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        let p = |s: &str| ByteRange::parse(s.as_bytes());
        assert_eq!(
            p("bytes=0-9"),
            Some(ByteRange::From {
                first: 0,
                last: Some(9)
            })
        );
        assert_eq!(
            p("bytes=5-"),
            Some(ByteRange::From {
                first: 5,
                last: None
            })
        );
        assert_eq!(p("bytes=-3"), Some(ByteRange::Suffix(3)));
        assert_eq!(p("bytes=9-2"), Some(ByteRange::Malformed));
        assert_eq!(p("bytes=abc"), Some(ByteRange::Malformed));
        assert_eq!(p("bytes=-"), Some(ByteRange::Malformed));
        assert_eq!(p("bytes=+1-2"), Some(ByteRange::Malformed));
        assert_eq!(p("bytes=0-1,4-5"), None);
        assert_eq!(p("items=0-1"), None);
    }

    #[test]
    fn range_resolution() {
        let f = |first, last| ByteRange::From { first, last };
        assert_eq!(f(0, Some(9)).resolve(100), Some(0..10));
        assert_eq!(f(90, Some(200)).resolve(100), Some(90..100));
        assert_eq!(f(99, None).resolve(100), Some(99..100));
        assert_eq!(f(100, None).resolve(100), None);
        assert_eq!(f(0, Some(u64::MAX)).resolve(100), Some(0..100));
        assert_eq!(ByteRange::Suffix(10).resolve(100), Some(90..100));
        assert_eq!(ByteRange::Suffix(1000).resolve(100), Some(0..100));
        assert_eq!(ByteRange::Suffix(0).resolve(100), None);
        assert_eq!(ByteRange::Suffix(5).resolve(0), None);
        assert_eq!(f(0, None).resolve(0), None);
        assert_eq!(ByteRange::Malformed.resolve(100), None);
    }

    #[test]
    fn chunk_ranges() {
        assert_eq!(
            ChunkRange::parse("0-9"),
            Some(ChunkRange { first: 0, last: 9 })
        );
        assert_eq!(
            ChunkRange::parse("bytes 5-5"),
            Some(ChunkRange { first: 5, last: 5 })
        );
        assert_eq!(
            ChunkRange::parse("bytes=1-2"),
            Some(ChunkRange { first: 1, last: 2 })
        );
        for bad in [
            "",
            "5",
            "a-b",
            "-3",
            "3-",
            "1-2-3",
            "+1-2",
            "0-18446744073709551616",
        ] {
            assert_eq!(ChunkRange::parse(bad), None, "{bad}");
        }
        assert_eq!(ChunkRange { first: 3, last: 3 }.size(), Some(1));
        // Numbers that parse but are no chunk: refused (416), never wrapped.
        for unsatisfiable in ["9-2", "0-18446744073709551615"] {
            let r = ChunkRange::parse(unsatisfiable).unwrap();
            assert_eq!(r.size(), None, "{unsatisfiable}");
        }
        assert_eq!(
            ChunkRange::parse("1-18446744073709551615").unwrap().size(),
            Some(u64::MAX)
        );
    }
}
