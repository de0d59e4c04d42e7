//! Writing an access-log entry's fields: one list of fields ([`super::Entry::fields`]) goes
//! either to serde's struct serializer (for `Serialize`) or straight into the writer thread's
//! buffer. serde_json escapes every key of a struct on every line and goes through its
//! serializer machinery per field; the line writer writes the fixed keys as they are and only
//! the values through serde_json (a test checks the two texts agree): the writer thread, which
//! runs on the gateway's CPU, spends less per line. Text that needs no escaping (no control
//! character, quote or backslash: nearly every value) is copied as it is, the rest goes
//! through serde_json (escaping by hand byte by byte was slower than serde_json's table); the
//! time is formatted once per second; milliseconds are written from their integer
//! microseconds.

use serde::ser::SerializeStruct;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A field's name (plain ASCII: letters, digits, `_`, `.`; it needs no escaping) and its JSON
/// text with what goes before the value, `,"name":` (and a `"` for a text value), written by the
/// line writer as one block of [`KEY_ROOM`] bytes (a copy of fixed size: a few moves rather
/// than a call to `memcpy`) and cut to length.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key {
    pub(super) name: &'static str,
    /// `,"name":"`, then zeros.
    pub(super) json: [u8; KEY_ROOM],
    /// The length of `,"name":`.
    pub(super) len: usize,
}

/// Room for the longest key's text.
pub(super) const KEY_ROOM: usize = 32;

/// `text` padded with zeros to [`KEY_ROOM`] bytes (a longer key does not compile).
pub(super) const fn padded(text: &str) -> [u8; KEY_ROOM] {
    let bytes = text.as_bytes();
    assert!(bytes.len() <= KEY_ROOM, "a key longer than KEY_ROOM");
    let mut out = [0u8; KEY_ROOM];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// The [`Key`] named `$name`.
macro_rules! key {
    ($name:literal) => {
        const {
            $crate::observe::access_log::line::Key {
                name: $name,
                json: $crate::observe::access_log::line::padded(concat!(",\"", $name, "\":\"")),
                len: concat!(",\"", $name, "\":").len(),
            }
        }
    };
}
pub(super) use key;

/// Where an entry's fields go, in order.
pub(super) trait Fields {
    fn field<T: Serialize + ?Sized>(&mut self, key: Key, value: &T);

    /// A text value (`null` for `None`).
    fn text(&mut self, key: Key, value: Option<&str>) {
        self.field(key, &value);
    }

    /// A header's value: text when it is visible ASCII or tabs, `invalid` when it is not,
    /// `null` for none.
    fn header(&mut self, key: Key, value: Option<&[u8]>, invalid: Option<&'static str>) {
        self.text(key, value.and_then(|v| header_text(v).or(invalid)));
    }

    /// A text value that never needs escaping (an address, a method, a canonical host: no
    /// control character, quote or backslash).
    fn plain(&mut self, key: Key, value: Option<&str>) {
        self.text(key, value);
    }

    /// An IP address, as text.
    fn ip(&mut self, key: Key, value: Option<IpAddr>) {
        self.field(key, &value.map(super::IpText));
    }

    /// The peers tried, in order, under three keys: the last one (`address:port`), how many,
    /// and the list of them.
    fn peers(&mut self, keys: [Key; 3], tried: &[SocketAddr]) {
        self.field(keys[0], &tried.last().copied().map(super::AddrText));
        self.number(keys[1], Some(tried.len() as u64));
        self.field(keys[2], &super::Tried(tried));
    }

    /// A whole number (`null` for `None`).
    fn number(&mut self, key: Key, value: Option<u64>) {
        self.field(key, &value);
    }

    /// A time, as RFC 3339 UTC with milliseconds.
    fn time(&mut self, key: Key, value: SystemTime) {
        self.field(key, &time_text(value));
    }

    /// A duration in milliseconds, to the microsecond (`null` for `None`).
    fn millis(&mut self, key: Key, value: Option<Duration>) {
        self.field(key, &value.map(millis));
    }
}

/// `t` as RFC 3339 UTC with milliseconds; a clock set before 1970 or after 9999 (which
/// humantime cannot write: it panics) reads as the nearest of the two.
pub(super) fn time_text(t: SystemTime) -> String {
    let last = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    humantime::format_rfc3339_millis(t.clamp(UNIX_EPOCH, last)).to_string()
}

/// Milliseconds, to the microsecond (no `0.12272300000000001`).
pub(super) fn millis(d: Duration) -> f64 {
    micros(d) as f64 / 1000.0
}

/// Whole microseconds, rounded to the nearest (half a microsecond up).
fn micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((d.subsec_nanos() + 500) / 1000))
}

/// Fields into serde's struct serializer; the first error is kept.
pub(super) struct Serde<M: SerializeStruct> {
    pub(super) m: M,
    pub(super) failed: Option<M::Error>,
}

impl<M: SerializeStruct> Fields for Serde<M> {
    fn field<T: Serialize + ?Sized>(&mut self, key: Key, value: &T) {
        if self.failed.is_none() {
            if let Err(e) = self.m.serialize_field(key.name, value) {
                self.failed = Some(e);
            }
        }
    }
}

/// Fields as one JSON object into a buffer.
pub(super) struct Line<'a> {
    out: &'a mut Vec<u8>,
    clock: &'a mut Clock,
}

/// The last second a time was written for, and its text (`2026-11-30T01:43:33.000Z`): lines
/// of the same second only change the milliseconds.
#[derive(Debug, Default)]
pub(super) struct Clock {
    second: Option<u64>,
    text: [u8; 24],
}

impl Clock {
    /// `t` as [`time_text`] writes it; `None` for a time this form cannot hold (before 1970,
    /// or after 9999).
    fn text(&mut self, t: SystemTime) -> Option<[u8; 24]> {
        let since = t.duration_since(UNIX_EPOCH).ok()?;
        if since.as_secs() >= 253_402_300_800 {
            return None;
        }
        if self.second != Some(since.as_secs()) {
            let s = time_text(UNIX_EPOCH + Duration::from_secs(since.as_secs()));
            self.text = s.as_bytes().try_into().ok()?;
            self.second = Some(since.as_secs());
        }
        let ms = since.subsec_millis();
        self.text[20] = b'0' + (ms / 100) as u8;
        self.text[21] = b'0' + (ms / 10 % 10) as u8;
        self.text[22] = b'0' + (ms % 10) as u8;
        Some(self.text)
    }
}

/// Whether serde_json writes `s` as it is, between quotes: it escapes control characters,
/// `"` and `\\` (and nothing else).
fn needs_no_escape(s: &[u8]) -> bool {
    scan::<false>(s)
}

/// Whether `s`, a header's value, is text serde_json writes as it is: visible ASCII but `"`
/// and `\\` (as [`needs_no_escape`], and no byte at or above 0x7f: `HeaderValue::to_str`
/// would refuse those).
fn plain_ascii(s: &[u8]) -> bool {
    scan::<true>(s)
}

/// A header's value as text, when every byte is visible ASCII or a tab (as
/// `HeaderValue::to_str` reads it).
pub(super) fn header_text(b: &[u8]) -> Option<&str> {
    if b.iter().all(|&c| c == b'\t' || (0x20..0x7f).contains(&c)) {
        std::str::from_utf8(b).ok()
    } else {
        None
    }
}

/// [`needs_no_escape`] (`ASCII`: [`plain_ascii`]), eight bytes at a time: a word has such a
/// byte when one of its bytes is below 0x20, equal to `"` or `\\` (or, for `ASCII`, at or
/// above 0x7f).
fn scan<const ASCII: bool>(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `v` is zero / below `n` (n <= 0x80; exact as a whole-word answer).
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH != 0;
    let clean = |v: u64| {
        !below(v, 0x20)
            && !below(v ^ (ONES * u64::from(b'"')), 1)
            && { !below(v ^ (ONES * u64::from(b'\\')), 1) }
            && (!ASCII || (v & HIGH == 0 && !below(v ^ (ONES * 0x7f), 1)))
    };
    let mut words = s.chunks_exact(8);
    for w in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(w);
        if !clean(u64::from_ne_bytes(bytes)) {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\' && (!ASCII || b < 0x7f))
}

impl Line<'_> {
    /// `,"name":`, and the opening quote of a text value when `quote`.
    fn key(&mut self, key: Key, quote: bool) {
        let at = self.out.len();
        self.out.extend_from_slice(&key.json);
        self.out.truncate(at + key.len + usize::from(quote));
    }

    fn null(&mut self, key: Key) {
        self.key(key, false);
        self.out.extend_from_slice(b"null");
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) {
        let at = self.out.len();
        // Writing to a `Vec` cannot fail, nor can serializing these values (a non-finite float
        // is written as null); should one fail, the field reads null rather than half a value.
        if serde_json::to_writer(&mut *self.out, value).is_err() {
            self.out.truncate(at);
            self.out.extend_from_slice(b"null");
        }
    }

    /// A text value that needs no escaping, after its key.
    fn quoted(&mut self, key: Key, text: &[u8]) {
        self.key(key, true);
        self.out.extend_from_slice(text);
        self.out.push(b'"');
    }

    /// The first `n` bytes of `buf` (`n <= N`), copied as one block of `N` bytes (a few moves,
    /// where a copy of a length known only at run time calls `memcpy`) and cut to length.
    fn put<const N: usize>(&mut self, buf: &[u8; N], n: usize) {
        let at = self.out.len();
        self.out.extend_from_slice(buf);
        self.out.truncate(at + n.min(N));
    }

    /// [`Line::quoted`] for text in the first `n` bytes of `buf`.
    fn quoted_in<const N: usize>(&mut self, key: Key, buf: &[u8; N], n: usize) {
        self.key(key, true);
        self.put(buf, n);
        self.out.push(b'"');
    }

    /// `n` in decimal.
    fn decimal(&mut self, n: u64) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
}

/// The fraction of a millisecond count as serde_json writes it after the whole number: `.0`
/// for none, else `.` and the three digits without their trailing zeros (`.5`, `.05`, `.123`).
/// Indexed by microseconds (0..1000): the text padded to four bytes, and its length.
static FRACTIONS: [([u8; 4], u8); 1000] = {
    let mut table = [([0u8; 4], 0u8); 1000];
    table[0] = (*b".0\0\0", 2);
    let mut us = 1;
    while us < 1000 {
        let digits = [
            b'0' + (us / 100) as u8,
            b'0' + (us / 10 % 10) as u8,
            b'0' + (us % 10) as u8,
        ];
        let mut len = 3;
        while digits[len - 1] == b'0' {
            len -= 1;
        }
        let mut text = [b'.', 0, 0, 0];
        let mut i = 0;
        while i < len {
            text[i + 1] = digits[i];
            i += 1;
        }
        table[us] = (text, len as u8 + 1);
        us += 1;
    }
    table
};

impl Fields for Line<'_> {
    fn field<T: Serialize + ?Sized>(&mut self, key: Key, value: &T) {
        self.key(key, false);
        self.value(value);
    }

    fn text(&mut self, key: Key, value: Option<&str>) {
        match value {
            None => self.null(key),
            Some(s) if needs_no_escape(s.as_bytes()) => self.quoted(key, s.as_bytes()),
            Some(s) => {
                self.key(key, false);
                self.value(s);
            }
        }
    }

    fn header(&mut self, key: Key, value: Option<&[u8]>, invalid: Option<&'static str>) {
        match value {
            // Nearly every value: checked once for both (a valid header, written as it is).
            Some(v) if plain_ascii(v) => self.quoted(key, v),
            _ => self.text(key, value.and_then(|v| header_text(v).or(invalid))),
        }
    }

    fn plain(&mut self, key: Key, value: Option<&str>) {
        match value {
            None => self.null(key),
            Some(s) => self.quoted(key, s.as_bytes()),
        }
    }

    fn ip(&mut self, key: Key, value: Option<IpAddr>) {
        match value {
            None => self.null(key),
            Some(a) => {
                let mut buf = [0u8; 48];
                let n = crate::wire::write_ip(a, &mut buf);
                self.quoted_in(key, &buf, n);
            }
        }
    }

    fn peers(&mut self, [peer, attempts, list]: [Key; 3], tried: &[SocketAddr]) {
        // The last peer is written twice (alone and at the list's end): formatted once.
        let mut text = [0u8; 64];
        let last = tried
            .last()
            .map(|a| crate::wire::write_socket_addr(*a, &mut text));
        match last {
            None => self.null(peer),
            Some(n) => self.quoted_in(peer, &text, n),
        }
        self.number(attempts, Some(tried.len() as u64));
        self.key(list, false);
        self.out.push(b'[');
        let mut buf = [0u8; 64];
        for (i, a) in tried.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.push(b'"');
            match last {
                Some(n) if i + 1 == tried.len() => self.put(&text, n),
                _ => {
                    let n = crate::wire::write_socket_addr(*a, &mut buf);
                    self.put(&buf, n);
                }
            }
            self.out.push(b'"');
        }
        self.out.push(b']');
    }

    fn number(&mut self, key: Key, value: Option<u64>) {
        match value {
            None => self.null(key),
            Some(n) => {
                self.key(key, false);
                self.decimal(n);
            }
        }
    }

    fn time(&mut self, key: Key, value: SystemTime) {
        match self.clock.text(value) {
            Some(text) => self.quoted_in(key, &text, text.len()),
            None => {
                self.key(key, false);
                self.value(&time_text(value));
            }
        }
    }

    fn millis(&mut self, key: Key, value: Option<Duration>) {
        let Some(d) = value else {
            return self.null(key);
        };
        self.key(key, false);
        let us = micros(d);
        if us >= 1 << 40 {
            // Far beyond any request's time: serde_json's float text.
            return self.value(&millis(d));
        }
        // `whole.fraction` without the fraction's trailing zeros, as serde_json writes the
        // float (every such float is the closest one to this decimal, and none is shorter).
        self.decimal(us / 1000);
        let (text, len) = &FRACTIONS[(us % 1000) as usize];
        self.put(text, usize::from(*len));
    }
}

/// The fields `fields` gives, as one JSON object appended to `out`; `clock` keeps the time's
/// text between lines.
pub(super) fn write(out: &mut Vec<u8>, clock: &mut Clock, fields: impl FnOnce(&mut Line<'_>)) {
    out.reserve(1024);
    let start = out.len();
    let mut line = Line { out, clock };
    fields(&mut line);
    // Every key starts with a comma: the first one's opens the object instead.
    match out.get_mut(start) {
        Some(comma) => *comma = b'{',
        None => out.push(b'{'),
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests;
