//! Writing an access-log entry's fields: one list of fields ([`super::Entry::fields`]) goes
//! either to serde's struct serializer (for `Serialize`) or straight into the writer thread's
//! buffer. serde_json escapes every key of a struct on every line and goes through its
//! serializer machinery per field; the line writer writes the fixed keys as they are and only
//! the values through serde_json (a test checks the two texts agree): the writer thread, which
//! runs on the gateway's CPU, spends less per line. (Escaping text by hand instead of through
//! serde_json's table was slower: 109.7k -> 111.4k instructions per logged request.)

use serde::ser::SerializeStruct;
use serde::Serialize;

/// Where an entry's fields go, in order.
pub(super) trait Fields {
    /// `key` is a plain ASCII name (letters, digits, `_`, `.`): it needs no escaping.
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T);
}

/// Fields into serde's struct serializer; the first error is kept.
pub(super) struct Serde<M: SerializeStruct> {
    pub(super) m: M,
    pub(super) failed: Option<M::Error>,
}

impl<M: SerializeStruct> Fields for Serde<M> {
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) {
        if self.failed.is_none() {
            if let Err(e) = self.m.serialize_field(key, value) {
                self.failed = Some(e);
            }
        }
    }
}

/// Fields as one JSON object into a buffer.
pub(super) struct Line<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Line<'_> {
    fn key(&mut self, key: &'static str) {
        self.out.push(if self.first { b'{' } else { b',' });
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }
}

impl Fields for Line<'_> {
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) {
        self.key(key);
        let at = self.out.len();
        // Writing to a `Vec` cannot fail, nor can serializing these values (a non-finite float
        // is written as null); should one fail, the field reads null rather than half a value.
        if serde_json::to_writer(&mut *self.out, value).is_err() {
            self.out.truncate(at);
            self.out.extend_from_slice(b"null");
        }
    }
}

/// The fields `fields` gives, as one JSON object appended to `out`.
pub(super) fn write(out: &mut Vec<u8>, fields: impl FnOnce(&mut Line<'_>)) {
    let mut line = Line { out, first: true };
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
        let mut line = Vec::new();
        e.write_json(&mut line);
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
}
