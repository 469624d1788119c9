//! Where clients reach berth: the external URL rule, trusted proxies, CIDRs.
//!
//! Every URL berth hands to a client (the token realm, upload and manifest
//! `Location`s, chart URLs) is built from one [`Origin`], decided per
//! request in this order:
//!
//! 1. `BERTH_EXTERNAL_URL` (config `external_url`) when set: always wins.
//! 2. Otherwise, when the connection's peer address is inside one of the
//!    `BERTH_TRUSTED_PROXIES` CIDRs: the scheme and host that the client
//!    hop ([`ProxyConfig::client_hop`]) records, each falling back to the
//!    request's own scheme and `Host`.
//! 3. Otherwise the request itself: `https` if berth terminated TLS, else
//!    `http`, and its `Host` (or h2 `:authority`).
//!
//! Forwarded headers from any other peer are ignored: a client cannot make
//! berth announce a realm or upload URL of its choosing to itself through
//! an untrusted hop, and only trusted proxies' `X-Forwarded-For`/`for=`
//! name the client address used for login rate limiting.
//!
//! ## The client hop: one walk from the right
//!
//! Proxies *append* to forwarding headers, so only the elements to the
//! right are trustworthy: everything left of what the nearest trusted
//! proxy appended may have come from the client. [`ProxyConfig::client_hop`]
//! is the one function that reads them, for the origin and for the
//! rate-limited client address alike (RFC 7239 §5.2; nginx's
//! `real_ip_recursive`):
//!
//! - `Forwarded` (all lines, in order): walk the elements from the right,
//!   skipping each whose `for=` is itself a trusted proxy; the first
//!   element whose `for=` is not (or is obfuscated, `unknown`, missing) was
//!   appended by the trusted proxy that talked to the client. Its `for=` is
//!   the client address (if it is an address; else the proxy's own), and
//!   its `proto=`/`host=` are what the client used. If every hop is
//!   trusted, the leftmost element counts.
//! - `X-Forwarded-For`: the same walk over addresses.
//! - `X-Forwarded-Proto` / `X-Forwarded-Host` carry no per-hop address: the
//!   last element, which the nearest trusted proxy appended (or set).
//!
//! `Forwarded` wins when it names the client (`for=`) or the scheme and
//! host; `X-Forwarded-*` fill what it leaves out. A trusted proxy must set
//! or append the headers berth reads; one that passes a client's
//! forwarding headers through untouched lets the client pick them.
//!
//! Cases 1 and 2 are *authoritative*: berth then makes every `Location`
//! absolute. In case 3 `Location`s stay relative, which a client resolves
//! against the very URL it used — the one answer that cannot be wrong
//! whatever sits in between.

use std::net::{IpAddr, SocketAddr};

use hyper::header::{HeaderMap, HOST};
use hyper::Uri;

/// What berth knows about a connection; in every request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// berth terminated TLS on this connection itself.
    pub tls: bool,
}

/// An IPv4 or IPv6 network, `addr/prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128).
    /// Host bits after the prefix are ignored (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("{s:?}: prefix length must be 0-{max}")),
            },
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Parses a comma- or whitespace-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Cidr>, String> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(Cidr::parse)
            .collect()
    }

    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// The external-URL settings, from the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `scheme://host[:port]`, no trailing slash.
    pub external_url: Option<String>,
    /// The path of `BERTH_EXTERNAL_URL`, without a trailing slash (empty
    /// for none): where a proxy serves the web console, stripping it
    /// before it forwards. Only the console's links and calls carry it;
    /// the registry API is at the host's root (OCI clients ask `/v2/`).
    pub external_path: String,
    pub trusted: Vec<Cidr>,
}

/// Where the client reached berth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    /// From the configuration or a trusted proxy (rules 1 and 2), rather
    /// than from the request alone.
    pub authoritative: bool,
}

/// Validates `BERTH_EXTERNAL_URL`: `http(s)://host[:port]`, then
/// optionally a path of plain segments (letters, digits, `.`, `_`, `~`,
/// `-`; no `.`/`..` segment, query or fragment). Returns the origin and
/// the path, both without a trailing slash.
pub fn parse_external_url(s: &str) -> Result<(String, String), String> {
    let t = s.trim().trim_end_matches('/');
    let (scheme, rest) = if let Some(r) = t.strip_prefix("https://") {
        ("https://", r)
    } else if let Some(r) = t.strip_prefix("http://") {
        ("http://", r)
    } else {
        return Err(format!(
            "external URL {s:?} must start with https:// or http://"
        ));
    };
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !valid_host(host) {
        return Err(format!(
            "external URL {s:?} must be scheme://host[:port][/path]"
        ));
    }
    let plain = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
    };
    if !path.is_empty() && !path[1..].split('/').all(plain) {
        return Err(format!(
            "external URL {s:?}: its path must be plain segments (letters, digits, . _ ~ -)"
        ));
    }
    Ok((format!("{scheme}{host}"), path.to_owned()))
}

/// `host[:port]` as it may appear in a URL we build: no spaces, quotes,
/// slashes or anything else that could break out of a header value.
pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
}

impl ProxyConfig {
    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }

    /// The origin of one request (see the module docs for the rule).
    pub fn origin(&self, conn: &ConnInfo, headers: &HeaderMap, uri: &Uri) -> Origin {
        if let Some(url) = &self.external_url {
            return Origin {
                base: url.clone(),
                authoritative: true,
            };
        }
        let own_scheme = if conn.tls { "https" } else { "http" };
        let own_host = headers
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.to_string()))
            .filter(|h| valid_host(h))
            .unwrap_or_else(|| "localhost".to_owned());
        let hop = self.client_hop(conn, headers);
        let proto = hop
            .proto
            .map(|p| p.to_ascii_lowercase())
            .filter(|p| p == "https" || p == "http");
        let host = hop.host.filter(|h| valid_host(h));
        if proto.is_some() || host.is_some() {
            return Origin {
                base: format!(
                    "{}://{}",
                    proto.as_deref().unwrap_or(own_scheme),
                    host.as_deref().unwrap_or(&own_host)
                ),
                authoritative: true,
            };
        }
        Origin {
            base: format!("{own_scheme}://{own_host}"),
            authoritative: false,
        }
    }

    /// The client's address: the peer, or — when the peer is a trusted
    /// proxy — the client hop's address (see the module docs).
    pub fn client_ip(&self, conn: &ConnInfo, headers: &HeaderMap) -> IpAddr {
        self.client_hop(conn, headers).ip
    }

    /// THE reading of forwarding headers (see "The client hop" in the
    /// module docs): who the client is and what scheme and host it used,
    /// as the trusted proxies nearest berth recorded them. From an
    /// untrusted peer: the peer, and no scheme or host.
    pub fn client_hop(&self, conn: &ConnInfo, headers: &HeaderMap) -> ClientHop {
        let peer = conn.peer.ip().to_canonical();
        if !self.is_trusted(peer) {
            return ClientHop {
                ip: peer,
                proto: None,
                host: None,
            };
        }
        let lines = |name: &'static str| {
            headers
                .get_all(name)
                .into_iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|el| !el.is_empty())
        };
        let elements: Vec<Forwarded> = lines("forwarded").map(forwarded_element).collect();
        let (fwd, fwd_ip) = match self.rightmost_untrusted(peer, &elements, |e| e.for_ip) {
            Some((el, ip)) => (Some(el), ip),
            None => (None, peer),
        };
        let names_client = elements.iter().any(|e| e.has_for);
        let ip = if names_client {
            fwd_ip
        } else {
            let xff: Vec<&str> = lines("x-forwarded-for").collect();
            self.rightmost_untrusted(peer, &xff, |a| parse_ip(a))
                .map_or(peer, |(_, ip)| ip)
        };
        let last = |name: &'static str| lines(name).next_back().map(str::to_owned);
        ClientHop {
            ip,
            proto: fwd
                .and_then(|f| f.proto.clone())
                .or_else(|| last("x-forwarded-proto")),
            host: fwd
                .and_then(|f| f.host.clone())
                .or_else(|| last("x-forwarded-host")),
        }
    }

    /// Walks `hops` (leftmost = farthest from berth) from the right,
    /// skipping each whose address is a trusted proxy, and returns the
    /// first that is not — with its address, or, if it names none, the
    /// address of the trusted proxy that appended it. All trusted: the
    /// leftmost. `None` only for no hops.
    fn rightmost_untrusted<'a, T>(
        &self,
        peer: IpAddr,
        hops: &'a [T],
        addr: impl Fn(&T) -> Option<IpAddr>,
    ) -> Option<(&'a T, IpAddr)> {
        // The address of the proxy that appended the hop being looked at.
        let mut appended_by = peer;
        for (i, hop) in hops.iter().enumerate().rev() {
            match addr(hop) {
                Some(ip) if self.is_trusted(ip) && i > 0 => appended_by = ip,
                Some(ip) => return Some((hop, ip)),
                None => return Some((hop, appended_by)),
            }
        }
        None
    }
}

/// What the trusted proxies nearest berth say about the client (see
/// [`ProxyConfig::client_hop`]). `proto` and `host` are as sent, not yet
/// validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHop {
    pub ip: IpAddr,
    pub proto: Option<String>,
    pub host: Option<String>,
}

/// One `Forwarded` element.
#[derive(Default)]
struct Forwarded {
    proto: Option<String>,
    host: Option<String>,
    for_ip: Option<IpAddr>,
    /// It had a `for=`, address or not (`unknown`, `_hidden`).
    has_for: bool,
}

fn forwarded_element(el: &str) -> Forwarded {
    let mut f = Forwarded::default();
    for pair in el.split(';') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "proto" => f.proto = Some(v),
            "host" => f.host = Some(v),
            "for" => {
                f.has_for = true;
                f.for_ip = parse_ip(&v);
            }
            _ => {}
        }
    }
    f
}

/// `1.2.3.4`, `1.2.3.4:5`, `[::1]`, `[::1]:5`, `::1`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')
        .and_then(|r| r.split(']').next())
        .and_then(|ip| ip.parse::<IpAddr>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "v4-mapped");
        assert!(!c.contains(ip("::1")));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap(), c);
        assert_eq!(c.to_string(), "10.0.0.0/8");
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Cidr::parse_list("10.0.0.0/8, 127.0.0.1 ::1").unwrap().len(),
            3
        );
        assert!(Cidr::parse_list("10.0.0.0/8,nope").is_err());
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn conn(peer: &str) -> ConnInfo {
        ConnInfo {
            peer: SocketAddr::new(ip(peer), 40000),
            tls: false,
        }
    }

    #[test]
    fn origin_rule() {
        let uri: Uri = "/v2/".parse().unwrap();
        let trusted = ProxyConfig {
            external_url: None,
            external_path: String::new(),
            trusted: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        };
        let fwd = headers(&[
            ("host", "backend:5000"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "reg.example.com"),
        ]);
        // Trusted peer: forwarded headers count.
        let o = trusted.origin(&conn("10.1.1.1"), &fwd, &uri);
        assert_eq!(o.base, "https://reg.example.com");
        assert!(o.authoritative);
        // Untrusted peer: ignored.
        let o = trusted.origin(&conn("192.168.1.1"), &fwd, &uri);
        assert_eq!(o.base, "http://backend:5000");
        assert!(!o.authoritative);
        // Forwarded wins over X-Forwarded-*; proto only keeps the Host.
        let h = headers(&[
            ("host", "reg:443"),
            (
                "forwarded",
                "for=1.2.3.4;proto=https, for=10.0.0.2;proto=http",
            ),
            ("x-forwarded-proto", "http"),
        ]);
        assert_eq!(
            trusted.origin(&conn("10.1.1.1"), &h, &uri).base,
            "https://reg:443"
        );
        // Garbage proto or host is ignored.
        let h = headers(&[
            ("host", "reg"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil\"host"),
        ]);
        let o = trusted.origin(&conn("10.1.1.1"), &h, &uri);
        assert_eq!(o.base, "http://reg");
        assert!(!o.authoritative);
        // The external URL beats everything.
        let ext = ProxyConfig {
            external_url: Some("https://registry.example.com:8443".into()),
            external_path: String::new(),
            trusted: trusted.trusted.clone(),
        };
        assert_eq!(
            ext.origin(&conn("10.1.1.1"), &fwd, &uri).base,
            "https://registry.example.com:8443"
        );
        // TLS terminated by berth, no Host header (h2): the authority.
        let tls = ConnInfo {
            tls: true,
            ..conn("1.1.1.1")
        };
        let uri: Uri = "https://reg.example/v2/".parse().unwrap();
        assert_eq!(
            ProxyConfig::default()
                .origin(&tls, &HeaderMap::new(), &uri)
                .base,
            "https://reg.example"
        );
    }

    #[test]
    fn client_ips() {
        let p = ProxyConfig {
            external_url: None,
            external_path: String::new(),
            trusted: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        };
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4")]);
        assert_eq!(p.client_ip(&conn("10.0.0.1"), &h), ip("1.2.3.4"));
        assert_eq!(p.client_ip(&conn("9.9.9.9"), &h), ip("9.9.9.9"));
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\"")]);
        assert_eq!(p.client_ip(&conn("10.0.0.1"), &h), ip("2001:db8::1"));
        assert_eq!(
            p.client_ip(&conn("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    /// Appending proxies: only what the nearest trusted proxy appended
    /// counts, for the origin and the client address alike.
    #[test]
    fn client_hop_walks_from_the_right() {
        let uri: Uri = "/v2/".parse().unwrap();
        let p = ProxyConfig {
            external_url: None,
            external_path: String::new(),
            trusted: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        };
        let proxy = conn("10.0.0.1");
        let base = |h: &[(&str, &str)]| p.origin(&proxy, &headers(h), &uri).base;
        let ip_of = |h: &[(&str, &str)]| p.client_ip(&proxy, &headers(h));

        // X-Forwarded-Host/-Proto: the element the proxy appended (last),
        // in one header line or several.
        assert_eq!(
            base(&[
                ("x-forwarded-host", "evil.example, real.example"),
                ("x-forwarded-proto", "http, https"),
            ]),
            "https://real.example"
        );
        assert_eq!(
            base(&[
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-host", "real.example"),
            ]),
            "http://real.example"
        );
        // X-Forwarded-For: rightmost address that is not a trusted proxy;
        // all trusted: the leftmost; garbage: the proxy that appended it.
        assert_eq!(
            ip_of(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5")]),
            ip("1.2.3.4")
        );
        assert_eq!(
            ip_of(&[("x-forwarded-for", "10.0.0.7, 10.0.0.5")]),
            ip("10.0.0.7")
        );
        assert_eq!(
            ip_of(&[("x-forwarded-for", "6.6.6.6, junk, 10.0.0.5")]),
            ip("10.0.0.5")
        );
        assert_eq!(
            ip_of(&[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "1.2.3.4")
            ]),
            ip("1.2.3.4")
        );

        // Forwarded: the element whose for= is the first untrusted hop
        // gives the client and the host and scheme it used.
        let chain = [(
            "forwarded",
            "for=1.2.3.4;host=reg.example;proto=https, for=10.0.0.3;host=internal:8080;proto=http",
        )];
        assert_eq!(base(&chain), "https://reg.example");
        assert_eq!(ip_of(&chain), ip("1.2.3.4"));
        // A client posing as a trusted hop is stopped at the element the
        // proxy appended for it.
        let forged = [(
            "forwarded",
            "for=10.0.0.9;host=evil.example, for=5.6.7.8;host=real.example",
        )];
        assert_eq!(base(&forged), "http://real.example");
        assert_eq!(ip_of(&forged), ip("5.6.7.8"));
        // No for= (haproxy's set-header): X-Forwarded-For names the client.
        let h = [
            ("forwarded", "proto=https;host=reg.example"),
            ("x-forwarded-for", "1.2.3.4"),
        ];
        assert_eq!(base(&h), "https://reg.example");
        assert_eq!(ip_of(&h), ip("1.2.3.4"));
        // for=unknown: the proxy that said so.
        assert_eq!(ip_of(&[("forwarded", "for=unknown")]), ip("10.0.0.1"));
        // Untrusted peer: nothing forwarded counts.
        let hop = p.client_hop(&conn("9.9.9.9"), &headers(&chain));
        assert_eq!(
            hop,
            ClientHop {
                ip: ip("9.9.9.9"),
                proto: None,
                host: None
            }
        );
    }

    #[test]
    fn external_urls() {
        let ok = |s: &str, origin: &str, path: &str| {
            assert_eq!(
                parse_external_url(s).unwrap(),
                (origin.to_owned(), path.to_owned()),
                "{s}"
            );
        };
        ok("https://r.example.com/", "https://r.example.com", "");
        ok("http://127.0.0.1:8443", "http://127.0.0.1:8443", "");
        ok(
            "https://x.example/tools/registry/",
            "https://x.example",
            "/tools/registry",
        );
        for bad in [
            "r.example.com",
            "ftp://x",
            "https://",
            "https://x/a b",
            "https://x/a/../b",
            "https://x/a?q",
            "https://x//a",
            "https://x/a\"b",
        ] {
            assert!(parse_external_url(bad).is_err(), "{bad}");
        }
    }
}
