//! Response compression per route, with Pingora's encoders (gzip, brotli, zstd): the coding is
//! negotiated from `Accept-Encoding` with its q-values (between codings a client likes as much,
//! the route's order wins), and only answers that may be compressed are: a success other than
//! `206`, not already encoded, no `Content-Range`, no `Cache-Control: no-transform`, one of the
//! route's content types, not known to be below `min_size`. The cache stores what the upstream
//! sent; each answer is compressed on its way to its client.

use crate::config::{Coding, Compression};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use pingora_core::protocols::http::compression::{Algorithm, Encode};
use pingora_error::{ErrorType, OrErr};
use pingora_http::ResponseHeader;
use std::io::Write;
use std::time::{Duration, Instant};

/// A running encoder.
pub type Encoder = Box<dyn Encode + Send + Sync>;

/// A route's compression rules.
#[derive(Debug)]
pub struct RouteCompression {
    codings: Vec<Coding>,
    min_size: u64,
    /// `(type, subtype)`, `None` for `type/*`.
    types: Vec<(String, Option<String>)>,
}

impl RouteCompression {
    pub fn new(c: &Compression) -> RouteCompression {
        RouteCompression {
            codings: c.codings.clone(),
            min_size: c.min_size,
            types: c
                .content_types
                .iter()
                .filter_map(|t| {
                    let (a, b) = t.split_once('/')?;
                    Some((a.to_string(), (b != "*").then(|| b.to_string())))
                })
                .collect(),
        }
    }

    /// The coding for a request with these headers: the route's coding the client gives the
    /// highest q-value above 0 (`*` stands for codings it does not name); `None` for none.
    pub fn negotiate(&self, request: &HeaderMap) -> Option<Coding> {
        let mut named: Vec<(Coding, f32)> = Vec::new();
        let mut star: Option<f32> = None;
        for value in request.get_all(header::ACCEPT_ENCODING) {
            let Ok(text) = value.to_str() else { continue };
            for item in text.split(',') {
                let mut parts = item.split(';');
                let token = parts.next().unwrap_or("").trim();
                let mut q = Some(1.0f32);
                for p in parts {
                    if let Some((k, v)) = p.split_once('=') {
                        if k.trim().eq_ignore_ascii_case("q") {
                            q = qvalue(v.trim());
                        }
                    }
                }
                // An unreadable q-value accepts nothing rather than everything.
                let q = q.unwrap_or(0.0);
                if token == "*" {
                    star = Some(q);
                } else if let Some(c) = Coding::from_token(token) {
                    match named.iter_mut().find(|(n, _)| *n == c) {
                        Some(entry) => entry.1 = entry.1.min(q),
                        None => named.push((c, q)),
                    }
                }
            }
        }
        let mut best: Option<(Coding, f32)> = None;
        for &c in &self.codings {
            let q = named
                .iter()
                .find(|(n, _)| *n == c)
                .map(|(_, q)| *q)
                .or(star)
                .unwrap_or(0.0);
            if q > 0.0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((c, q));
            }
        }
        best.map(|(c, _)| c)
    }

    /// Whether this answer may be compressed at all (whatever the client accepts): then its
    /// representation depends on `Accept-Encoding`.
    pub fn applies(&self, resp: &ResponseHeader) -> bool {
        let status = resp.status.as_u16();
        let h = &resp.headers;
        (200..300).contains(&status)
            && status != 204
            && status != 206
            && !h.contains_key(header::CONTENT_ENCODING)
            && !h.contains_key(header::CONTENT_RANGE)
            && !h.get_all(header::CACHE_CONTROL).iter().any(|v| {
                v.to_str().is_ok_and(|v| {
                    v.split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
                })
            })
            && self.type_listed(h.get(header::CONTENT_TYPE))
            && h.get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_none_or(|n| n >= self.min_size)
    }

    fn type_listed(&self, content_type: Option<&HeaderValue>) -> bool {
        let Some(t) = content_type.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = t.split(';').next().unwrap_or("").trim();
        let Some((a, b)) = media.split_once('/') else {
            return false;
        };
        // A stream of events must reach the client as each is sent: an encoder holds bytes
        // back until it has enough to compress.
        if a.eq_ignore_ascii_case("text") && b.eq_ignore_ascii_case("event-stream") {
            return false;
        }
        self.types.iter().any(|(ta, tb)| {
            ta.eq_ignore_ascii_case(a) && tb.as_ref().is_none_or(|tb| tb.eq_ignore_ascii_case(b))
        })
    }
}

/// A q-value (RFC 9110 §12.4.2): 0 to 1 with at most three decimals.
fn qvalue(v: &str) -> Option<f32> {
    let ok = match v.split_once('.') {
        Some((int, frac)) => {
            (int == "0" || int == "1")
                && frac.len() <= 3
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => v == "0" || v == "1",
    };
    let q: f32 = v.parse().ok()?;
    (ok && (0.0..=1.0).contains(&q)).then_some(q)
}

/// Say in `resp` that its representation depends on `Accept-Encoding`.
pub fn vary(resp: &mut ResponseHeader) {
    if let Some(name) = crate::wire::vary_adds(&resp.headers, "Accept-Encoding") {
        let _ = resp.append_header(header::VARY, name);
    }
}

/// Turn `resp` into the head of its `coding`-compressed version (no length, no ranges, a weak
/// ETag) and return the encoder for its body.
pub fn start(coding: Coding, resp: &mut ResponseHeader, chunked: bool) -> Option<Encoder> {
    let encoder: Encoder = match coding {
        Coding::Zstd => Algorithm::Zstd.compressor(coding.level())?,
        Coding::Gzip => Algorithm::Gzip.compressor(coding.level())?,
        Coding::Brotli => Box::new(Brotli::new(coding.level())),
    };
    resp.remove_header(&header::CONTENT_LENGTH);
    resp.remove_header(&header::ACCEPT_RANGES);
    let _ = resp.insert_header(header::CONTENT_ENCODING, coding.token());
    if chunked {
        let _ = resp.insert_header(header::TRANSFER_ENCODING, "chunked");
    }
    weaken_etag(resp);
    Some(encoder)
}

/// As nginx does: compressed bytes are another representation, so a strong ETag is made weak,
/// and an unreadable one is dropped.
fn weaken_etag(resp: &mut ResponseHeader) {
    let Some(etag) = resp.headers.get(header::ETAG).cloned() else {
        return;
    };
    let b = etag.as_bytes();
    if b.starts_with(b"W/") {
        return;
    }
    let weak = b
        .starts_with(b"\"")
        .then(|| HeaderValue::from_bytes(&[b"W/".as_slice(), b].concat()).ok())
        .flatten();
    match weak {
        Some(v) => {
            let _ = resp.insert_header(header::ETAG, v);
        }
        None => {
            resp.remove_header(&header::ETAG);
        }
    }
}

/// A `304` to a client that accepts one of the route's codings says what the compressed answer
/// it revalidates said: `Vary: Accept-Encoding` and the weak ETag.
pub fn not_modified(resp: &mut ResponseHeader) {
    vary(resp);
    weaken_etag(resp);
}

/// Brotli with the `brotli` crate, the one Pingora uses: Pingora 0.9's brotli encoder only
/// flushes at the end and never writes the stream's last meta-block, which decoders reject.
struct Brotli {
    writer: Option<brotli::CompressorWriter<Vec<u8>>>,
    total_in: usize,
    total_out: usize,
    took: Duration,
}

impl Brotli {
    fn new(level: u32) -> Brotli {
        Brotli {
            // 4 KiB buffer, a 2^19-byte window (as Pingora's).
            writer: Some(brotli::CompressorWriter::new(Vec::new(), 4096, level, 19)),
            total_in: 0,
            total_out: 0,
            took: Duration::ZERO,
        }
    }
}

impl Encode for Brotli {
    fn encode(&mut self, input: &[u8], end: bool) -> pingora_error::Result<Bytes> {
        let start = Instant::now();
        let Some(writer) = self.writer.as_mut() else {
            return Ok(Bytes::new());
        };
        self.total_in += input.len();
        writer
            .write_all(input)
            .or_err(ErrorType::InternalError, "while compressing with brotli")?;
        let out = if end {
            // The stream's end: its last meta-block.
            self.writer
                .take()
                .map(|w| w.into_inner())
                .unwrap_or_default()
        } else {
            std::mem::take(writer.get_mut())
        };
        self.total_out += out.len();
        self.took += start.elapsed();
        Ok(Bytes::from(out))
    }

    fn stat(&self) -> (&'static str, usize, usize, Duration) {
        ("br", self.total_in, self.total_out, self.took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RouteCompression {
        RouteCompression::new(&Compression {
            codings: vec![Coding::Zstd, Coding::Brotli, Coding::Gzip],
            min_size: 100,
            content_types: vec!["text/*".into(), "application/json".into()],
        })
    }

    fn negotiate(ae: &str) -> Option<&'static str> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(ae).unwrap());
        rules().negotiate(&h).map(Coding::token)
    }

    #[test]
    fn q_values_decide_and_the_route_breaks_ties() {
        assert_eq!(negotiate("gzip"), Some("gzip"));
        assert_eq!(negotiate("gzip, br"), Some("br"));
        assert_eq!(negotiate("br;q=0.5, gzip;q=0.8"), Some("gzip"));
        assert_eq!(negotiate("gzip;q=1.0, zstd;Q=0.999"), Some("gzip"));
        assert_eq!(negotiate("*"), Some("zstd"));
        assert_eq!(negotiate("*;q=0.1, gzip;q=0.2"), Some("gzip"));
        assert_eq!(negotiate("*, zstd;q=0"), Some("br"));
        assert_eq!(negotiate("gzip;q=0"), None);
        assert_eq!(negotiate("identity"), None);
        assert_eq!(negotiate("deflate, compress"), None);
        assert_eq!(negotiate(""), None);
        assert_eq!(negotiate("gzip;q=2"), None);
        assert_eq!(negotiate("gzip;q=abc"), None);
        assert_eq!(negotiate("gzip;q=0.0001"), None);
        assert_eq!(negotiate("GZIP"), Some("gzip"));
        assert_eq!(negotiate("x-gzip"), Some("gzip"));
        // Named twice: the lower value counts.
        assert_eq!(negotiate("br, br;q=0, gzip;q=0.5"), Some("gzip"));
        assert_eq!(rules().negotiate(&HeaderMap::new()), None);
    }

    #[test]
    fn only_answers_that_may_be_compressed_are() {
        let r = rules();
        let resp = |status: u16, headers: &[(&str, &str)]| {
            let mut h = ResponseHeader::build(status, None).unwrap();
            for (k, v) in headers {
                h.append_header(k.to_string(), *v).unwrap();
            }
            h
        };
        let json = ("content-type", "application/json; charset=utf-8");
        assert!(r.applies(&resp(200, &[json, ("content-length", "100")])));
        assert!(r.applies(&resp(200, &[("content-type", "TEXT/html")])));
        assert!(!r.applies(&resp(200, &[json, ("content-length", "99")])));
        assert!(!r.applies(&resp(206, &[json])));
        assert!(!r.applies(&resp(204, &[json])));
        assert!(!r.applies(&resp(304, &[json])));
        assert!(!r.applies(&resp(200, &[json, ("content-encoding", "gzip")])));
        assert!(!r.applies(&resp(200, &[json, ("content-range", "bytes 0-1/2")])));
        assert!(!r.applies(&resp(
            200,
            &[json, ("cache-control", "public, No-Transform")]
        )));
        assert!(!r.applies(&resp(200, &[("content-type", "image/png")])));
        assert!(!r.applies(&resp(200, &[("content-type", "text/event-stream")])));
        assert!(!r.applies(&resp(200, &[])));
        let mut h = resp(200, &[json, ("etag", "\"v1\""), ("content-length", "500")]);
        assert!(start(Coding::Gzip, &mut h, true).is_some());
        assert_eq!(h.headers.get("etag").unwrap(), "W/\"v1\"");
        assert_eq!(h.headers.get("content-encoding").unwrap(), "gzip");
        assert!(h.headers.get("content-length").is_none());
    }

    #[test]
    fn every_coding_gives_a_complete_stream() {
        let text = "hello, compressed world. ".repeat(200);
        for coding in [Coding::Zstd, Coding::Brotli, Coding::Gzip] {
            let mut h = ResponseHeader::build(200, None).unwrap();
            let mut e = start(coding, &mut h, false).unwrap();
            let (a, b) = text.split_at(1000);
            let mut out = e.encode(a.as_bytes(), false).unwrap().to_vec();
            out.extend_from_slice(&e.encode(b.as_bytes(), false).unwrap());
            out.extend_from_slice(&e.encode(b"", true).unwrap());
            let mut back = Vec::new();
            if coding == Coding::Brotli {
                use std::io::Read;
                brotli::Decompressor::new(&out[..], 4096)
                    .read_to_end(&mut back)
                    .unwrap();
                assert_eq!(back, text.as_bytes());
                assert_eq!(e.stat().1, text.len());
            }
            assert!(out.len() < text.len() / 5, "{coding:?}");
        }
    }
}
