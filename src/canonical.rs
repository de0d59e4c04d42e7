//! The canonical form of a request's path and host: the one reading of them that every decision
//! (route, policy, limit key, cache key, log line) is made on, and that the upstream receives.
//!
//! A gateway that matches routes on one reading of a path while the upstream serves another can
//! be walked around: `//api/admin`, `/%61pi/admin` or `/api%2fadmin` miss a protected
//! `/api/admin` route here but reach `/api/admin` at an upstream that merges slashes or decodes
//! escapes. So the path is normalised as RFC 3986 section 6.2.2 describes, and that form is
//! both matched and forwarded:
//!
//! - percent-encoded unreserved characters are decoded (`%61` → `a`, `%2E` → `.`), other
//!   percent-encodings are kept with upper-case hex digits (`%3b` → `%3B`), and characters that
//!   may not appear raw in a path (`"`, `{`, `|`, ...) are percent-encoded;
//! - `%2F` and `%5C` (an encoded slash or backslash) follow [`EscapedSlashes`];
//! - repeated slashes are merged (unless turned off), then `.` and `..` segments are resolved
//!   (RFC 3986 section 5.2.4, so `..` never climbs above the root);
//! - a malformed escape, an encoded control character (`%00`–`%1F`, `%7F`), a raw backslash or
//!   a byte that cannot be in a request target is refused.
//!
//! A host is lower-cased and loses one trailing dot; its port must be a number up to 65535 and
//! is kept apart from the name (routes match the name alone). Anything that is not a DNS name,
//! an IPv4 address or a bracketed IPv6 address, or has a malformed port, is refused
//! (`admin.example:80:80`, `a b`, `a/b`, `[not-v6]`, an empty host).
//!
//! This module is a leaf: configuration validation uses it to insist that route paths are
//! written in canonical form, and the proxy uses it on every request.

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// What happens to a percent-encoded slash (`%2F`) or backslash (`%5C`) in a request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EscapedSlashes {
    /// Refuse the request with `400` (the default): an upstream may decode it into a separator.
    #[default]
    Reject,
    /// Keep it encoded: it is part of a segment for matching and is forwarded as `%2F`/`%5C`.
    Keep,
    /// Decode both into `/`, then merge and resolve the path as if it had been written so.
    Decode,
}

/// How request paths are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Merge repeated slashes (`//a///b` → `/a/b`), as nginx's `merge_slashes` does.
    pub merge_slashes: bool,
    /// The action for `%2F` and `%5C`.
    pub escaped_slashes: EscapedSlashes,
    /// Accept a raw `;` in the path. Servlet containers (Tomcat, Jetty) cut `;...` path
    /// parameters out of each segment before matching, so `/api;x/admin` is `/api/admin` to
    /// them; refused by default (as Spring Security's firewall does).
    pub semicolons: bool,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            semicolons: false,
        }
    }
}

/// Why a request path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// It does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C` under [`EscapedSlashes::Reject`].
    EscapedSlash,
    /// An encoded control character, `%00` to `%1F` or `%7F`.
    ControlCharacter,
    /// A raw `\`, which some servers read as a separator and others as a character.
    Backslash,
    /// A byte that cannot be part of a request target (space, control, non-ASCII).
    InvalidByte,
    /// A raw `;` (a path parameter to servlet containers) while they are not accepted.
    Semicolon,
}

impl PathError {
    /// A short description, for logs and error details.
    pub fn describe(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the path does not start with '/'",
            PathError::BadEscape => "a '%' in the path is not followed by two hex digits",
            PathError::EscapedSlash => "the path contains an encoded slash or backslash",
            PathError::ControlCharacter => "the path contains an encoded control character",
            PathError::Backslash => "the path contains a backslash",
            PathError::InvalidByte => "the path contains a byte not allowed in a URI",
            PathError::Semicolon => "the path contains a ';' (a path parameter)",
        }
    }
}

/// Byte classes for path characters.
const RAW_OK: u8 = 1; // kept as is: unreserved, sub-delims, ':', '@', '/'
const UNRESERVED: u8 = 2; // decoded when percent-encoded
const ENCODE: u8 = 4; // visible ASCII that may not appear raw in a path: percent-encoded

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let unreserved = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        let sub_delim = matches!(
            c,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
        );
        if unreserved {
            t[b] = RAW_OK | UNRESERVED;
        } else if sub_delim || matches!(c, b':' | b'@' | b'/') {
            t[b] = RAW_OK;
        } else if c.is_ascii_graphic() && !matches!(c, b'%' | b'\\') {
            t[b] = ENCODE;
        }
        b += 1;
    }
    t
}

static CLASS: [u8; 256] = classes();

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The canonical form of `raw` (a path without its query); borrowed when `raw` already is.
pub fn path<'a>(raw: &'a str, opts: &PathOptions) -> Result<Cow<'a, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if !opts.semicolons && bytes.contains(&b';') {
        return Err(PathError::Semicolon);
    }
    if is_canonical(bytes, opts) {
        return Ok(Cow::Borrowed(raw));
    }
    // Decode and re-encode byte by byte; after this pass every '/' is a real separator.
    let mut text = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let class = CLASS[b as usize];
        if class & RAW_OK != 0 {
            text.push(b as char);
            i += 1;
            continue;
        }
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let decoded = hi << 4 | lo;
                i += 3;
                if decoded < 0x20 || decoded == 0x7f {
                    return Err(PathError::ControlCharacter);
                }
                if decoded == b'/' || decoded == b'\\' {
                    match opts.escaped_slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Decode => {
                            text.push('/');
                            continue;
                        }
                        EscapedSlashes::Keep => {}
                    }
                }
                if CLASS[decoded as usize] & UNRESERVED != 0 {
                    text.push(decoded as char);
                } else {
                    push_escape(&mut text, decoded);
                }
            }
            b'\\' => return Err(PathError::Backslash),
            _ if class & ENCODE != 0 => {
                push_escape(&mut text, b);
                i += 1;
            }
            _ => return Err(PathError::InvalidByte),
        }
    }
    Ok(Cow::Owned(resolve(&text, opts.merge_slashes)))
}

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(HEX_UPPER[(b >> 4) as usize] as char);
    out.push(HEX_UPPER[(b & 15) as usize] as char);
}

/// True when `p` (starting with '/') needs no change: only characters kept raw and escapes
/// already in canonical form (upper-case hex, of a byte that stays encoded), no dot segment,
/// and (when merging) no empty segment before the last.
fn is_canonical(p: &[u8], opts: &PathOptions) -> bool {
    let upper_hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    let mut seg_start = 1;
    let mut i = 1;
    while i < p.len() {
        let b = p[i];
        if b == b'%' {
            let (Some(&hi), Some(&lo)) = (p.get(i + 1), p.get(i + 2)) else {
                return false;
            };
            if !upper_hex(hi) || !upper_hex(lo) {
                return false;
            }
            let decoded = hex(hi).unwrap_or(0) << 4 | hex(lo).unwrap_or(0);
            let slash = decoded == b'/' || decoded == b'\\';
            if CLASS[decoded as usize] & UNRESERVED != 0
                || decoded < 0x20
                || decoded == 0x7f
                || (slash && opts.escaped_slashes != EscapedSlashes::Keep)
            {
                return false;
            }
            i += 3;
            continue;
        }
        if CLASS[b as usize] & RAW_OK == 0 {
            return false;
        }
        if b == b'/' {
            let seg = &p[seg_start..i];
            if (opts.merge_slashes && seg.is_empty()) || seg == b"." || seg == b".." {
                return false;
            }
            seg_start = i + 1;
        }
        i += 1;
    }
    let last = &p[seg_start..];
    last != b"." && last != b".."
}

/// Merge empty segments (when asked) and resolve dot segments in `text`, whose '/' are all
/// separators and which starts with one.
fn resolve(text: &str, merge: bool) -> String {
    let segments: Vec<&str> = text[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.into_iter().enumerate() {
        match seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            "" if merge && i != last => {}
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(text.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// A request's host in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host<'a> {
    /// Lower case, without a trailing dot or port; an IPv6 address keeps its brackets and is
    /// written in its shortest form.
    pub name: Cow<'a, str>,
    /// The port, when one was given.
    pub port: Option<u16>,
    /// The host was already written in this form: `name[:port]` exactly, without a trailing
    /// dot, an empty port or a port's leading zeros (it may be passed on as it came).
    pub as_written: bool,
}

/// Why a host is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// No host at all.
    Empty,
    /// A byte that is not part of a DNS name or IP address, an empty label, or a name too long.
    InvalidName,
    /// The part after the last ':' is not a port number (or there are several ':').
    InvalidPort,
    /// A bracketed part that is not an IPv6 address.
    InvalidIpv6,
}

impl HostError {
    /// A short description, for logs and error details.
    pub fn describe(self) -> &'static str {
        match self {
            HostError::Empty => "the host is empty",
            HostError::InvalidName => "the host is not a valid name or address",
            HostError::InvalidPort => "the host's port is not a valid port",
            HostError::InvalidIpv6 => "the bracketed host is not an IPv6 address",
        }
    }
}

/// The canonical form of a `Host` header value or URI authority.
pub fn host(raw: &str) -> Result<Host<'_>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        let close = rest.find(']').ok_or(HostError::InvalidIpv6)?;
        let ip: Ipv6Addr = rest[..close].parse().map_err(|_| HostError::InvalidIpv6)?;
        let (port, _) = port(&rest[close + 1..])?;
        return Ok(Host {
            name: Cow::Owned(format!("[{ip}]")),
            port,
            as_written: false,
        });
    }
    let (name, (port, port_as_written)) = match memchr::memchr(b':', raw.as_bytes()) {
        Some(i) => (&raw[..i], port(&raw[i..])?),
        None => (raw, (None, true)),
    };
    let dotted = name.strip_suffix('.');
    let name = dotted.unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(if raw.starts_with(':') {
            HostError::Empty
        } else {
            HostError::InvalidName
        });
    }
    // One pass: labels of 1 to 63 letters, digits, '-' or '_', separated by single dots (each
    // byte's kind from a table: one load where the ranges took a chain of comparisons).
    let mut upper = false;
    let mut label = 0usize;
    for &b in name.as_bytes() {
        match HOST_BYTE[usize::from(b)] {
            HOST_NAME => {}
            HOST_UPPER => upper = true,
            HOST_DOT => {
                if label == 0 {
                    return Err(HostError::InvalidName);
                }
                label = 0;
                continue;
            }
            _ => return Err(HostError::InvalidName),
        }
        label += 1;
        if label > 63 {
            return Err(HostError::InvalidName);
        }
    }
    if label == 0 {
        return Err(HostError::InvalidName);
    }
    let as_written = !upper && dotted.is_none() && port_as_written;
    let name = if upper {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    Ok(Host {
        name,
        port,
        as_written,
    })
}

/// A host name's bytes: lower-case letters, digits, `-` and `_`; upper-case letters; the dot;
/// anything else (0) is not allowed.
const HOST_NAME: u8 = 1;
const HOST_UPPER: u8 = 2;
const HOST_DOT: u8 = 3;

static HOST_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => HOST_NAME,
            b'A'..=b'Z' => HOST_UPPER,
            b'.' => HOST_DOT,
            _ => 0,
        };
        b += 1;
    }
    t
};

/// The port in `s`, which is empty or `:` followed by the port (an empty port is no port), and
/// whether it is written canonically (no leading zeros; a `:` with no port is not).
fn port(s: &str) -> Result<(Option<u16>, bool), HostError> {
    let Some(digits) = s.strip_prefix(':') else {
        return if s.is_empty() {
            Ok((None, true))
        } else {
            Err(HostError::InvalidPort)
        };
    };
    if digits.is_empty() {
        return Ok((None, false));
    }
    if digits.len() > 5 {
        return Err(HostError::InvalidPort);
    }
    let mut value = 0u32;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return Err(HostError::InvalidPort);
        }
        value = value * 10 + u32::from(b - b'0');
    }
    let port = u16::try_from(value).map_err(|_| HostError::InvalidPort)?;
    let leading_zero = digits.len() > 1 && digits.starts_with('0');
    Ok((Some(port), !leading_zero))
}

#[cfg(test)]
mod tests;
