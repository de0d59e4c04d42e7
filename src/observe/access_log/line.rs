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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A field's name (plain ASCII: letters, digits, `_`, `.`; it needs no escaping) and its JSON
/// text with what goes before the value, `,"name":`, written in one piece by the line writer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Key {
    pub(super) name: &'static str,
    pub(super) json: &'static str,
}

/// The [`Key`] named `$name`.
macro_rules! key {
    ($name:literal) => {
        $crate::observe::access_log::line::Key {
            name: $name,
            json: concat!(",\"", $name, "\":"),
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

    /// A text value that never needs escaping (an address, a method, a canonical host: no
    /// control character, quote or backslash).
    fn plain(&mut self, key: Key, value: Option<&str>) {
        self.text(key, value);
    }

    /// Socket addresses, as a list of `address:port` texts.
    fn addresses(&mut self, key: Key, value: &[std::net::SocketAddr]) {
        self.field(key, &super::Tried(value));
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
    first: bool,
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
/// `"` and `\\` (and nothing else). Eight bytes at a time: a word has such a byte when one of
/// its bytes is below 0x20 or equal to one of the two.
fn needs_no_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `v` is zero / below `n` (n <= 0x80; exact as a whole-word answer).
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH != 0;
    let clean = |v: u64| {
        !below(v, 0x20) && !below(v ^ (ONES * u64::from(b'"')), 1) && {
            !below(v ^ (ONES * u64::from(b'\\')), 1)
        }
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
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

impl Line<'_> {
    fn key(&mut self, key: Key) {
        let json = key.json.as_bytes();
        if self.first {
            self.first = false;
            self.out.push(b'{');
            self.out.extend_from_slice(&json[1..]);
        } else {
            self.out.extend_from_slice(json);
        }
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

    fn quoted(&mut self, text: &[u8]) {
        self.out.reserve(text.len() + 2);
        self.out.push(b'"');
        self.out.extend_from_slice(text);
        self.out.push(b'"');
    }
}

impl Fields for Line<'_> {
    fn field<T: Serialize + ?Sized>(&mut self, key: Key, value: &T) {
        self.key(key);
        self.value(value);
    }

    fn text(&mut self, key: Key, value: Option<&str>) {
        self.key(key);
        match value {
            None => self.out.extend_from_slice(b"null"),
            Some(s) if needs_no_escape(s.as_bytes()) => self.quoted(s.as_bytes()),
            Some(s) => self.value(s),
        }
    }

    fn plain(&mut self, key: Key, value: Option<&str>) {
        self.key(key);
        match value {
            None => self.out.extend_from_slice(b"null"),
            Some(s) => self.quoted(s.as_bytes()),
        }
    }

    fn addresses(&mut self, key: Key, value: &[std::net::SocketAddr]) {
        self.key(key);
        self.out.push(b'[');
        let mut buf = [0u8; 64];
        for (i, a) in value.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            let text = super::addr_text(*a, &mut buf);
            self.quoted(text.as_bytes());
        }
        self.out.push(b']');
    }

    fn number(&mut self, key: Key, value: Option<u64>) {
        self.key(key);
        match value {
            None => self.out.extend_from_slice(b"null"),
            Some(n) => self
                .out
                .extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        }
    }

    fn time(&mut self, key: Key, value: SystemTime) {
        self.key(key);
        match self.clock.text(value) {
            Some(text) => self.quoted(&text),
            None => self.value(&time_text(value)),
        }
    }

    fn millis(&mut self, key: Key, value: Option<Duration>) {
        self.key(key);
        let Some(d) = value else {
            self.out.extend_from_slice(b"null");
            return;
        };
        let us = micros(d);
        if us >= 1 << 40 {
            // Far beyond any request's time: serde_json's float text.
            return self.value(&millis(d));
        }
        // `whole.fraction` without the fraction's trailing zeros, as serde_json writes the
        // float (every such float is the closest one to this decimal, and none is shorter).
        let mut digits = itoa::Buffer::new();
        self.out
            .extend_from_slice(digits.format(us / 1000).as_bytes());
        let mut frac = us % 1000;
        if frac == 0 {
            self.out.extend_from_slice(b".0");
            return;
        }
        let mut width = 3;
        while frac.is_multiple_of(10) {
            frac /= 10;
            width -= 1;
        }
        self.out.push(b'.');
        let text = digits.format(frac);
        for _ in text.len()..width {
            self.out.push(b'0');
        }
        self.out.extend_from_slice(text.as_bytes());
    }
}

/// The fields `fields` gives, as one JSON object appended to `out`; `clock` keeps the time's
/// text between lines.
pub(super) fn write(out: &mut Vec<u8>, clock: &mut Clock, fields: impl FnOnce(&mut Line<'_>)) {
    out.reserve(1024);
    let mut line = Line {
        out,
        first: true,
        clock,
    };
    fields(&mut line);
    if line.first {
        line.out.push(b'{');
    }
    line.out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::super::tests::entry;
    use super::super::{Entry, RequestText, Strings};
    use std::sync::Arc;

    /// The line writer's text is exactly serde_json's for the same entry.
    fn same_as_serde(e: &Entry) {
        same_with_clock(e, &mut super::Clock::default());
    }

    fn same_with_clock(e: &Entry, clock: &mut super::Clock) {
        let mut line = Vec::new();
        e.write_line(&mut line, clock);
        let serde = serde_json::to_vec(e).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&line),
            String::from_utf8_lossy(&serde)
        );
    }

    #[test]
    fn the_line_writer_writes_what_serde_json_writes() {
        same_as_serde(&entry());
        let mut e = entry();
        // Every optional field empty.
        e.client_ip = None;
        e.method = None;
        e.strings = Strings::new(RequestText::default());
        e.route = None;
        e.upstream = None;
        e.tried.clear();
        e.upstream_status = None;
        e.upstream_connect = None;
        e.upstream_response = None;
        e.tls_version = None;
        e.tls_server_name = None;
        e.cache_status = None;
        same_as_serde(&e);
        // Strings that need escaping, non-ASCII text, IPv6 addresses, tracing ids and errors.
        let mut e = entry();
        e.strings = Strings::new(RequestText {
            host: Some("h\u{e9}te.test"),
            path: "/a\"b\\c",
            raw_path: Some("/a%22b"),
            raw_host: Some("H\u{e9}TE.test."),
            query: Some("q=\u{1}\t\n\u{7f}"),
            user_agent: Some("agent \"x\" \u{2028} \u{1f600}"),
        });
        e.client_ip = Some("2001:db8::1".parse().unwrap());
        e.tried = vec!["[::1]:8443".parse().unwrap()];
        e.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        e.span_id = Some("00f067aa0ba902b7".into());
        e.consumer = Some(Arc::from("c\u{0}"));
        e.error = Some("upstream_timeout");
        e.duration = std::time::Duration::from_nanos(1);
        same_as_serde(&e);
        // Every ASCII character, control characters and DEL included, in a text field.
        let all: String = (0u8..0x80).map(char::from).collect();
        let mut e = entry();
        e.strings = Strings::new(RequestText {
            path: &all,
            user_agent: Some(&all),
            ..RequestText::default()
        });
        same_as_serde(&e);
    }

    #[test]
    fn milliseconds_are_written_as_serde_json_writes_the_float() {
        let mut e = entry();
        for nanos in [
            0u64,
            1,
            499,
            500,
            1_000,
            10_000,
            100_000,
            120_000,
            999_499,
            999_500,
            1_000_000,
            1_500_000,
            1_234_567,
            12_000_000_000,
            123_456_789_000,
            3_600_000_000_000,
            (1 << 40) * 1_000 - 1,
            (1 << 40) * 1_000,
            u64::MAX,
        ] {
            e.duration = std::time::Duration::from_nanos(nanos);
            e.upstream_connect = Some(std::time::Duration::from_nanos(nanos / 3));
            e.upstream_response = Some(std::time::Duration::from_nanos(nanos / 7));
            same_as_serde(&e);
        }
    }

    #[test]
    fn the_clock_text_follows_the_lines_times() {
        use std::time::{Duration, UNIX_EPOCH};
        let mut clock = super::Clock::default();
        let mut e = entry();
        let base = UNIX_EPOCH + Duration::from_millis(1_764_466_413_000);
        for t in [
            base,
            base + Duration::from_millis(1),
            base + Duration::from_millis(999),
            base + Duration::from_micros(999_999),
            base + Duration::from_secs(1),
            base - Duration::from_secs(5),
            base + Duration::from_secs(86_400 * 400),
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::from_secs(1),
            UNIX_EPOCH + Duration::from_secs(253_402_300_799),
            UNIX_EPOCH + Duration::from_secs(253_402_300_800),
            UNIX_EPOCH + Duration::from_secs(u64::MAX / 4),
            base,
        ] {
            e.time = t;
            same_with_clock(&e, &mut clock);
        }
    }

    #[test]
    fn the_word_scan_finds_every_byte_that_needs_escaping() {
        let reference = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        for b in 0..=255u8 {
            for len in 1..=19 {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(
                        super::needs_no_escape(&s),
                        reference(&s),
                        "{b:#x} at {at}/{len}"
                    );
                    // Next to bytes that could borrow into it.
                    let mut t = vec![0xffu8; len];
                    t[at] = b;
                    assert_eq!(super::needs_no_escape(&t), reference(&t), "{b:#x} in 0xff");
                    let mut u = vec![0x21u8; len];
                    u[at] = b;
                    assert_eq!(super::needs_no_escape(&u), reference(&u), "{b:#x} in 0x21");
                }
            }
        }
        assert!(super::needs_no_escape(b""));
    }
}
