use super::super::tests::entry;
use super::super::{Entry, RequestText};
use std::net::SocketAddr;

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
    e.text = RequestText::default();
    e.route = None;
    e.upstream = None;
    e.tried = &[];
    e.upstream_status = None;
    e.upstream_connect = None;
    e.upstream_response = None;
    e.tls_version = None;
    e.tls_server_name = None;
    e.cache_status = None;
    same_as_serde(&e);
    // Strings that need escaping, non-ASCII text, IPv6 addresses, tracing ids and errors.
    let mut e = entry();
    e.text = RequestText {
        host: Some("h\u{e9}te.test"),
        path: "/a\"b\\c",
        raw_path: Some("/a%22b"),
        raw_host: Some("H\u{e9}TE.test."),
        query: Some("q=\u{1}\t\n\u{7f}"),
        user_agent: Some("agent \"x\" \u{2028} \u{1f600}".as_bytes()),
    };
    e.client_ip = Some("2001:db8::1".parse().unwrap());
    let tried: [SocketAddr; 3] = [
        "[::1]:8443".parse().unwrap(),
        "10.0.0.1:1".parse().unwrap(),
        "[2001:db8::5]:65535".parse().unwrap(),
    ];
    let one: [SocketAddr; 1] = ["127.0.0.1:1".parse().unwrap()];
    e.tried = &one;
    same_as_serde(&e);
    e.tried = &tried;
    e.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736");
    e.span_id = Some("00f067aa0ba902b7");
    e.consumer = Some("c\u{0}");
    e.error = Some("upstream_timeout");
    e.duration = std::time::Duration::from_nanos(1);
    same_as_serde(&e);
    // Header values: visible ASCII with a tab, quotes and a backslash (escaped); one with a
    // control character or a byte above ASCII (not text: `-` and null, as
    // `HeaderValue::to_str` reads them).
    e.request_id = b"id \"1\"\t\\";
    e.text.user_agent = Some(b"agent\t\"x\" \\ 1");
    same_as_serde(&e);
    e.request_id = b"id\x01";
    e.text.user_agent = Some(b"agent \xc3\xa9");
    same_as_serde(&e);
    let v: serde_json::Value = serde_json::to_value(&e).unwrap();
    assert_eq!(v["request_id"], "-");
    assert!(v["user_agent"].is_null());
    e.request_id = b"\x7f";
    e.text.user_agent = Some(b"\x7f");
    same_as_serde(&e);
    // Every ASCII character, control characters and DEL included, in a text field.
    let all: String = (0u8..0x80).map(char::from).collect();
    let mut e = entry();
    e.text = RequestText {
        path: &all,
        user_agent: Some(all.as_bytes()),
        ..RequestText::default()
    };
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
fn every_fraction_of_a_millisecond_is_written_as_serde_json_writes_it() {
    let mut e = entry();
    for us in (0..3_000).chain(123_456_000..123_457_000) {
        e.duration = std::time::Duration::from_micros(us);
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
fn the_word_scans_find_every_byte_that_needs_escaping_or_is_not_visible_ascii() {
    let escape = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
    let ascii = |s: &[u8]| escape(s) && s.iter().all(|&b| b < 0x7f);
    for b in 0..=255u8 {
        for len in 1..=19 {
            for at in 0..len {
                // Next to bytes that could borrow into it.
                for fill in [b'a', 0xff, 0x21, 0x7e, 0x80] {
                    let mut s = vec![fill; len];
                    s[at] = b;
                    let what = format!("{b:#x} at {at}/{len} in {fill:#x}");
                    assert_eq!(super::needs_no_escape(&s), escape(&s), "{what}");
                    assert_eq!(super::plain_ascii(&s), ascii(&s), "{what}");
                    if super::plain_ascii(&s) {
                        assert_eq!(super::header_text(&s), std::str::from_utf8(&s).ok());
                    }
                }
            }
        }
    }
    assert!(super::needs_no_escape(b"") && super::plain_ascii(b""));
}
