//! A keep-alive HTTP/1.1 client: many requests over one connection, each
//! response read by its `Content-Length` (what the blob GET concurrency
//! tests need: several responses in a row on each connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One connection to a server.
pub struct Conn {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A response: status, headers (names lowercased), body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(120))))
            .expect("socket timeouts");
        let writer = s.try_clone().expect("clone socket");
        Conn {
            addr,
            reader: BufReader::with_capacity(64 << 10, s),
            writer,
        }
    }

    /// Sends a body-less request with `headers` and reads the response
    /// (no body for `HEAD`).
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.writer
            .write_all(head.as_bytes())
            .unwrap_or_else(|e| panic!("{method} {path}: send: {e}"));
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{method} {path}: status line: {e}"));
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("{method} {path}: header: {e}"));
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; if method == "HEAD" { 0 } else { len }];
        self.reader
            .read_exact(&mut body)
            .unwrap_or_else(|e| panic!("{method} {path}: body of {len} bytes: {e}"));
        Response {
            status,
            headers,
            body,
        }
    }
}
