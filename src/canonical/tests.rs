//! Unit tests of [`super`].
use super::*;

fn canon(p: &str) -> Result<String, PathError> {
    path(p, &PathOptions::default()).map(|c| c.into_owned())
}

fn with(p: &str, merge: bool, escaped: EscapedSlashes) -> Result<String, PathError> {
    let opts = PathOptions {
        merge_slashes: merge,
        escaped_slashes: escaped,
        semicolons: true,
    };
    path(p, &opts).map(|c| c.into_owned())
}

#[test]
fn canonical_paths_are_borrowed() {
    for p in [
        "/",
        "/api/users/7",
        "/a/b/",
        "/a,b=c/d:e@f",
        "/.well-known/x",
        "/a/...",
        "/a/.b",
    ] {
        assert!(
            matches!(path(p, &PathOptions::default()), Ok(Cow::Borrowed(_))),
            "{p}"
        );
    }
}

#[test]
fn bypass_spellings_reach_the_same_path() {
    for p in [
        "//api/admin/x",
        "/api//admin/x",
        "/%61pi/admin/x",
        "/api/adm%69n/x",
        "/api/ADM%49N/../admin/x",
        "/x/../api/admin/x",
        "/x/%2e%2e/api/admin/x",
        "/x/%2E%2E/api/admin/x",
        "/x/.%2e/api/admin/x",
        "/./api/./admin/x",
        "///api///admin//x",
        "/api/admin/y/../x",
        "/%2e%2e/api/admin/x",
    ] {
        assert_eq!(canon(p).as_deref(), Ok("/api/admin/x"), "{p}");
    }
}

#[test]
fn escaped_slashes() {
    for p in [
        "/api%2fadmin/x",
        "/api/admin%2Fx",
        "/x/..%2fapi/admin/x",
        "/a%5Cb",
        "/a%5cb",
    ] {
        assert_eq!(canon(p), Err(PathError::EscapedSlash), "{p}");
    }
    assert_eq!(
        with("/api%2fadmin/x", true, EscapedSlashes::Decode).as_deref(),
        Ok("/api/admin/x")
    );
    assert_eq!(
        with("/x/..%2fapi/admin/x", true, EscapedSlashes::Decode).as_deref(),
        Ok("/api/admin/x")
    );
    assert_eq!(
        with("/a%5cb", true, EscapedSlashes::Decode).as_deref(),
        Ok("/a/b")
    );
    // Kept: one segment, hex upper-cased, never a separator for dot resolution.
    assert_eq!(
        with("/api%2fadmin/x", true, EscapedSlashes::Keep).as_deref(),
        Ok("/api%2Fadmin/x")
    );
    assert_eq!(
        with("/x/..%2fapi", true, EscapedSlashes::Keep).as_deref(),
        Ok("/x/..%2Fapi")
    );
}

#[test]
fn escapes_are_normalised() {
    assert_eq!(canon("/a%3bb").as_deref(), Ok("/a%3Bb"));
    assert_eq!(canon("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
    assert_eq!(canon("/%7euser").as_deref(), Ok("/~user"));
    assert_eq!(canon("/100%25").as_deref(), Ok("/100%25"));
    assert_eq!(canon("/a|b{c}").as_deref(), Ok("/a%7Cb%7Bc%7D"));
    assert_eq!(canon("/q\"<>^`").as_deref(), Ok("/q%22%3C%3E%5E%60"));
    assert_eq!(canon("/a%20b").as_deref(), Ok("/a%20b"));
}

#[test]
fn canonical_escapes_are_borrowed_too() {
    for p in ["/caf%C3%A9", "/a%20b", "/100%25", "/a%3Bb"] {
        assert!(
            matches!(path(p, &PathOptions::default()), Ok(Cow::Borrowed(_))),
            "{p}"
        );
    }
    let keep = PathOptions {
        escaped_slashes: EscapedSlashes::Keep,
        ..PathOptions::default()
    };
    assert!(matches!(path("/a%2Fb", &keep), Ok(Cow::Borrowed(_))));
    // Not canonical: lower-case hex, an encoded unreserved byte.
    for p in ["/caf%c3%a9", "/%61"] {
        assert!(
            matches!(path(p, &PathOptions::default()), Ok(Cow::Owned(_))),
            "{p}"
        );
    }
}

#[test]
fn semicolons() {
    for p in ["/api/admin;x", "/api;x/admin", "/api;/admin", "/a;"] {
        assert_eq!(canon(p), Err(PathError::Semicolon), "{p}");
    }
    assert_eq!(canon("/a%3Bb").as_deref(), Ok("/a%3Bb"));
    assert_eq!(
        with("/a;b=c/./d", true, EscapedSlashes::Reject).as_deref(),
        Ok("/a;b=c/d")
    );
}

#[test]
fn refused_paths() {
    assert_eq!(canon("api"), Err(PathError::NotAbsolute));
    assert_eq!(canon(""), Err(PathError::NotAbsolute));
    assert_eq!(canon("*"), Err(PathError::NotAbsolute));
    assert_eq!(canon("/a%zz"), Err(PathError::BadEscape));
    assert_eq!(canon("/a%4"), Err(PathError::BadEscape));
    assert_eq!(canon("/a%"), Err(PathError::BadEscape));
    assert_eq!(canon("/a%00b"), Err(PathError::ControlCharacter));
    assert_eq!(canon("/a%0d%0aX"), Err(PathError::ControlCharacter));
    assert_eq!(canon("/a%7f"), Err(PathError::ControlCharacter));
    assert_eq!(canon("/a\\b"), Err(PathError::Backslash));
    assert_eq!(canon("/a b"), Err(PathError::InvalidByte));
    assert_eq!(canon("/a\u{e9}"), Err(PathError::InvalidByte));
    assert_eq!(canon("/a\tb"), Err(PathError::InvalidByte));
}

#[test]
fn dot_segments_and_slashes() {
    assert_eq!(canon("/../../etc").as_deref(), Ok("/etc"));
    assert_eq!(canon("/a/./b/.").as_deref(), Ok("/a/b/"));
    assert_eq!(canon("/a/b/..").as_deref(), Ok("/a/"));
    assert_eq!(canon("/..").as_deref(), Ok("/"));
    assert_eq!(canon("//").as_deref(), Ok("/"));
    assert_eq!(canon("/a//").as_deref(), Ok("/a/"));
    assert_eq!(
        with("/a//b", false, EscapedSlashes::Reject).as_deref(),
        Ok("/a//b")
    );
    assert!(matches!(
        path(
            "/a//b",
            &PathOptions {
                merge_slashes: false,
                ..PathOptions::default()
            }
        ),
        Ok(Cow::Borrowed(_))
    ));
    // Without merging, dot segments still resolve as RFC 3986 says.
    assert_eq!(
        with("/a//../b", false, EscapedSlashes::Reject).as_deref(),
        Ok("/a/b")
    );
}

#[test]
fn canonical_form_is_stable() {
    for p in [
        "/a%2fb",
        "/x/%2e%2e/y",
        "/a|b",
        "//a/./b/../c%3b",
        "/%41%42%2F",
    ] {
        for escaped in [EscapedSlashes::Keep, EscapedSlashes::Decode] {
            let once = with(p, true, escaped).unwrap();
            assert_eq!(with(&once, true, escaped).unwrap(), once, "{p}");
        }
    }
}

fn h(raw: &str) -> Result<(String, Option<u16>), HostError> {
    host(raw).map(|h| (h.name.into_owned(), h.port))
}

#[test]
fn hosts() {
    assert_eq!(h("api.example.com"), Ok(("api.example.com".into(), None)));
    assert!(matches!(
        host("api.example.com").unwrap().name,
        Cow::Borrowed(_)
    ));
    assert_eq!(h("API.Example.COM."), Ok(("api.example.com".into(), None)));
    assert_eq!(
        h("admin.example:80"),
        Ok(("admin.example".into(), Some(80)))
    );
    assert_eq!(
        h("admin.example.:8080"),
        Ok(("admin.example".into(), Some(8080)))
    );
    assert_eq!(h("admin.example:"), Ok(("admin.example".into(), None)));
    assert_eq!(h("127.0.0.1:8080"), Ok(("127.0.0.1".into(), Some(8080))));
    assert_eq!(h("[::1]:8443"), Ok(("[::1]".into(), Some(8443))));
    assert_eq!(h("[2001:DB8:0::1]"), Ok(("[2001:db8::1]".into(), None)));
    assert_eq!(h("my_host"), Ok(("my_host".into(), None)));
}

#[test]
fn refused_hosts() {
    assert_eq!(h(""), Err(HostError::Empty));
    assert_eq!(h(":80"), Err(HostError::Empty));
    assert_eq!(h("admin.example:80:80"), Err(HostError::InvalidPort));
    assert_eq!(h("admin.example:http"), Err(HostError::InvalidPort));
    assert_eq!(h("admin.example:65536"), Err(HostError::InvalidPort));
    assert_eq!(h("admin.example:+80"), Err(HostError::InvalidPort));
    assert_eq!(h("admin.example:123456"), Err(HostError::InvalidPort));
    assert_eq!(h("a b"), Err(HostError::InvalidName));
    assert_eq!(h("a/b"), Err(HostError::InvalidName));
    assert_eq!(h("user@admin.example"), Err(HostError::InvalidName));
    assert_eq!(h("a..b"), Err(HostError::InvalidName));
    assert_eq!(h(".a"), Err(HostError::InvalidName));
    assert_eq!(h("a.."), Err(HostError::InvalidName));
    assert_eq!(h("."), Err(HostError::InvalidName));
    assert_eq!(h("%61dmin.example"), Err(HostError::InvalidName));
    assert_eq!(h("[admin.example]"), Err(HostError::InvalidIpv6));
    assert_eq!(h("[::1"), Err(HostError::InvalidIpv6));
    assert_eq!(h("[::1]x"), Err(HostError::InvalidPort));
    assert_eq!(h("[fe80::1%25eth0]"), Err(HostError::InvalidIpv6));
    assert_eq!(h("::1"), Err(HostError::InvalidPort));
    assert_eq!(h(&"a".repeat(64)), Err(HostError::InvalidName));
}

#[test]
fn hosts_written_canonically_are_known() {
    for raw in ["api.example.com", "127.0.0.1:8080", "a:0", "my_host:65535"] {
        assert!(host(raw).unwrap().as_written, "{raw}");
    }
    for raw in [
        "API.example.com",
        "api.example.com.",
        "api.example.com:",
        "api.example.com:080",
        "a:00",
        "api.example.com.:80",
        "[::1]:8443",
    ] {
        assert!(!host(raw).unwrap().as_written, "{raw}");
    }
}

#[test]
fn every_byte_of_a_host_name_is_classed_as_rfc_1123_names_and_underscores_allow() {
    for b in 0..=255u8 {
        let allowed = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        let mut name = b"a".to_vec();
        name.push(b);
        name.extend_from_slice(b"b.example");
        let Ok(text) = std::str::from_utf8(&name) else {
            continue;
        };
        let got = host(text);
        if allowed {
            let h = got.unwrap_or_else(|e| panic!("{b:#x}: {e:?}"));
            assert_eq!(h.name, text.to_ascii_lowercase(), "{b:#x}");
            assert_eq!(h.as_written, !b.is_ascii_uppercase(), "{b:#x}");
        } else if b == b'.' {
            assert_eq!(got.map(|h| h.name.into_owned()), Ok("a.b.example".into()));
        } else if b == b':' {
            assert_eq!(got.err(), Some(HostError::InvalidPort), "{b:#x}");
        } else {
            assert_eq!(got.err(), Some(HostError::InvalidName), "{b:#x}");
        }
    }
}
