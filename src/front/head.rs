//! The strict reading of an HTTP/1 request head (request line and header section), done on the
//! raw bytes before Pingora's parser sees them. Pingora's parser is lenient where HTTP parsers
//! disagree: it accepts bare LF line ends, escapes a raw space in the target, collapses repeated
//! equal `Content-Length` values. A gateway in front of other parsers must refuse such requests
//! instead, since the upstream (or a proxy in front) may read the same bytes as a different
//! request; HTTP Garden and PortSwigger's request smuggling research list the cases.
//!
//! What passes here is a subset of what Pingora's parser reads identically, so the two never
//! disagree about where a request ends.

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Bytes from the start of the buffer to the end of the blank line closing the head
    /// (including any empty lines before the request line).
    pub len: usize,
    pub framing: Framing,
    /// The client asks for a protocol upgrade (HTTP/1.1, `Upgrade`, and `upgrade` listed in
    /// `Connection`): after a `101` the connection carries another protocol, so it is not read
    /// as HTTP again.
    pub upgrade: bool,
    /// Field lines (from the name to the CRLF, inclusive, in order) dropped before the request
    /// is read further: a `Host` line when the target is in absolute form and names another
    /// authority (the authority wins, RFC 9112 section 3.2.2), and `Upgrade` lines that do not
    /// make an upgrade (HTTP/1.0, or `upgrade` not listed in `Connection`, which an
    /// intermediary must not act on or forward), so that Pingora, which would act on them,
    /// reads the request as the gateway does.
    pub dropped: Vec<std::ops::Range<usize>>,
}

/// A refusal: the status to answer with and a short reason (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Stable, short, for the metric label and the access log's `error` field.
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// The most header fields a request may have (Pingora's parser holds 256).
pub const MAX_FIELDS: usize = 256;

/// Where the head ends: an incremental scan for the blank line that also refuses line ends
/// that are not CRLF as soon as they are seen.
#[derive(Debug, Default, Clone)]
pub struct HeadEnd {
    /// Bytes already scanned.
    scanned: usize,
    /// Bytes of empty lines (CRLF) before the request line, which RFC 9112 section 2.2 lets a
    /// server skip.
    leading: usize,
    /// Whether the request line has started.
    started: bool,
}

impl HeadEnd {
    /// Scan the new bytes of `buf`: `Ok(Some(len))` once the head (ending with CRLF CRLF) is
    /// complete, `Ok(None)` when more bytes are needed.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, Refusal> {
        let mut i = self.scanned;
        while i < buf.len() {
            if self.started {
                // Only line ends matter from here: jump to the next CR or LF.
                match memchr::memchr2(b'\r', b'\n', &buf[i..]) {
                    Some(at) => i += at,
                    None => {
                        i = buf.len();
                        break;
                    }
                }
            }
            let b = buf[i];
            if !self.started {
                match b {
                    b'\r' => {
                        match buf.get(i + 1) {
                            None => break,
                            Some(b'\n') => {}
                            Some(_) => return Err(refuse(400, "bare_cr")),
                        }
                        i += 2;
                        self.leading = i;
                        if self.leading > 8 {
                            return Err(refuse(400, "request_line"));
                        }
                        continue;
                    }
                    b'\n' => return Err(refuse(400, "bare_lf")),
                    _ => {
                        self.started = true;
                        i += 1;
                        continue;
                    }
                }
            }
            match b {
                b'\n' => {
                    if i == 0 || buf[i - 1] != b'\r' {
                        return Err(refuse(400, "bare_lf"));
                    }
                    if i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n" && i - 3 >= self.leading {
                        self.scanned = i + 1;
                        return Ok(Some(i + 1));
                    }
                }
                _ => match buf.get(i + 1) {
                    // A CR: it must be followed by LF.
                    None => break,
                    Some(b'\n') => {}
                    Some(_) => return Err(refuse(400, "bare_cr")),
                },
            }
            i += 1;
        }
        self.scanned = i;
        Ok(None)
    }
}

/// Which bytes are `tchar`s (RFC 9110 section 5.6.2): letters, digits and ``!#$%&'*+-.^_`|~``;
/// a table, since every header name's bytes are looked up.
const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Whether `b` may appear in a field value (RFC 9110 section 5.5: visible characters, space,
/// tab and obs-text; never NUL, CR, LF or another control character).
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Parse the complete head `buf[..len]` (as found by [`HeadEnd`], `leading` empty lines first).
pub fn parse(buf: &[u8], len: usize) -> Result<Head, Refusal> {
    let head = &buf[..len];
    let mut start = 0;
    while head[start..].starts_with(b"\r\n") {
        start += 2;
    }
    // Lines without their CRLF, with their offset (every LF follows a CR: the scan checked);
    // the head ends with an empty line, left out here.
    let mut offset = start;
    let mut lines = std::iter::from_fn(move || {
        let rest = &head[offset..len - 2];
        let lf = memchr::memchr(b'\n', rest)?;
        let line = (offset, &rest[..lf.saturating_sub(1)]);
        offset += lf + 1;
        Some(line)
    });
    let (_, request_line) = lines.next().unwrap_or_default();
    let (version_10, authority) = request_line_ok(request_line)?;
    if let Some(a) = authority {
        host_ok(a)?;
    }
    let mut host_line = None;

    let mut fields = 0usize;
    let mut hosts = 0usize;
    let mut content_length: Option<u64> = None;
    let mut lengths = 0usize;
    let mut chunked = false;
    let mut codings = 0usize;
    let mut connection_upgrade = false;
    let mut upgrade_lines: Vec<std::ops::Range<usize>> = Vec::new();
    for (at, line) in lines {
        if line.is_empty() {
            // The closing blank line is not part of `lines`.
            return Err(refuse(400, "header_syntax"));
        }
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(refuse(431, "too_many_fields"));
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(refuse(400, "obs_fold"));
        }
        let colon = memchr::memchr(b':', line).ok_or(refuse(400, "header_syntax"))?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(refuse(400, "header_name"));
        }
        let raw_value = &line[colon + 1..];
        if !raw_value.iter().all(|b| is_value_byte(*b)) {
            return Err(refuse(400, "header_value"));
        }
        let value = trim_ows(raw_value);
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if hosts > 1 {
                return Err(refuse(400, "duplicate_host"));
            }
            if authority.is_none() {
                host_ok(value)?;
            }
            host_line = Some((at..at + line.len() + 2, value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if lengths > 1 {
                return Err(refuse(400, "content_length"));
            }
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(refuse(400, "content_length"));
            }
            content_length = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|b| *b == b',') {
                let coding = trim_ows(coding);
                if coding.is_empty() || chunked {
                    // An empty list element, or anything after `chunked` (which must be last
                    // and appear once).
                    return Err(refuse(400, "transfer_encoding"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else if coding.iter().all(|b| is_tchar(*b)) {
                    codings += 1;
                } else {
                    return Err(refuse(400, "transfer_encoding"));
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_upgrade |= value
                .split(|b| *b == b',')
                .any(|t| trim_ows(t).eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_lines.push(at..at + line.len() + 2);
        }
    }
    let te = chunked || codings > 0;
    let framing = if te {
        if version_10 {
            return Err(refuse(400, "transfer_encoding_http10"));
        }
        if lengths > 0 {
            return Err(refuse(400, "content_length_and_transfer_encoding"));
        }
        if !chunked {
            // RFC 9112 section 6.3: without `chunked` last the length cannot be known.
            return Err(refuse(400, "transfer_encoding"));
        }
        if codings > 0 {
            // `gzip, chunked`: well framed, but a coding the gateway does not decode.
            return Err(refuse(501, "transfer_coding"));
        }
        Framing::Chunked
    } else {
        match (lengths, content_length) {
            (0, _) | (_, Some(0)) => Framing::None,
            (_, Some(n)) => Framing::Length(n),
            (_, None) => return Err(refuse(400, "content_length")),
        }
    };
    if hosts == 0 && authority.is_none() && !version_10 {
        // RFC 9112 section 3.2: an HTTP/1.1 request must say which host it is for.
        return Err(refuse(400, "missing_host"));
    }
    let mut dropped = Vec::new();
    if let (Some(a), Some((range, value))) = (authority, host_line) {
        if a != value {
            dropped.push(range);
        }
    }
    let upgrade = !upgrade_lines.is_empty() && connection_upgrade && !version_10;
    if !upgrade {
        dropped.extend(upgrade_lines);
    }
    dropped.sort_by_key(|r| r.start);
    Ok(Head {
        len,
        framing,
        upgrade,
        dropped,
    })
}

/// A host (the `Host` value or the target's authority) must have a canonical form.
fn host_ok(host: &[u8]) -> Result<(), Refusal> {
    let text = std::str::from_utf8(host).map_err(|_| refuse(400, "host"))?;
    crate::canonical::host(text)
        .map(|_| ())
        .map_err(|_| refuse(400, "host"))
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Check `METHOD SP request-target SP HTTP-version`: whether it is HTTP/1.0, and the target's
/// authority when it is in absolute form.
fn request_line_ok(line: &[u8]) -> Result<(bool, Option<&[u8]>), Refusal> {
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse(400, "request_line"));
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
        return Err(refuse(400, "request_line"));
    }
    if method.iter().any(u8::is_ascii_lowercase) {
        // Methods are case-sensitive, but frameworks upper-case them: `delete` would miss a
        // `DELETE` route here and run as DELETE behind it (nginx refuses them too).
        return Err(refuse(400, "method"));
    }
    if target.is_empty() || !target.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return Err(refuse(400, "request_target"));
    }
    // Characters a URI may not hold raw that the HTTP stack behind would refuse (the `http`
    // crate's path and query tables): refused here, with the gateway's own answer.
    let (path, query) = match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    if path.iter().any(|b| matches!(b, b'<' | b'>' | b'#' | b'`'))
        || query.iter().any(|b| matches!(b, b'<' | b'>' | b'#' | b'"'))
    {
        return Err(refuse(400, "request_target"));
    }
    let version_10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(refuse(505, "http_version"));
        }
        _ => return Err(refuse(400, "request_line")),
    };
    if method == b"CONNECT" {
        return Err(refuse(405, "connect"));
    }
    if target[0] == b'/' {
        return Ok((version_10, None));
    }
    let after_scheme = if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        // Asterisk-form (`OPTIONS *`), authority-form and other schemes are not routed.
        return Err(refuse(400, "request_target"));
    };
    let end = after_scheme
        .iter()
        .position(|b| matches!(b, b'/' | b'?'))
        .unwrap_or(after_scheme.len());
    Ok((version_10, Some(&after_scheme[..end])))
}

#[cfg(test)]
mod tests;
