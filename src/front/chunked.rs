//! A strict reader of chunked body framing (RFC 9112 section 7.1), run over the raw bytes as they
//! pass to Pingora's parser. It finds where the body ends, so bytes after it (a pipelined next
//! request) are kept back for the next request, and it refuses what parsers read differently:
//! chunk extensions, line ends other than CRLF, non-hex or over-long sizes, missing CRLF after
//! the data, and trailer fields (which Pingora would silently drop).

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A size line that is not hex digits followed by CRLF (extensions, spaces, bare LF, ...).
    SizeLine,
    /// A size of more than 16 hex digits.
    SizeTooLong,
    /// The chunk data is not followed by CRLF.
    DataEnd,
    /// A trailer field after the last chunk.
    Trailer,
    /// The last chunk's closing line is not CRLF.
    End,
}

impl ChunkError {
    /// The reason label, for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            ChunkError::SizeLine => "chunk_size_line",
            ChunkError::SizeTooLong => "chunk_size",
            ChunkError::DataEnd => "chunk_data_end",
            ChunkError::Trailer => "chunk_trailer",
            ChunkError::End => "chunk_end",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size {
        digits: u8,
        value: u64,
    },
    /// After the size's CR.
    SizeLf {
        value: u64,
    },
    /// Inside chunk data.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// After the last chunk's size line: only the final CRLF may follow.
    LastCr,
    LastLf,
    Done,
}

/// Tracks one chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunked {
    state: State,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: State::Size {
                digits: 0,
                value: 0,
            },
        }
    }
}

impl Chunked {
    /// Whether the whole body has been seen.
    #[cfg(test)]
    fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Read `data`, the next bytes of the body: `Ok(Some(n))` when the body ends after its first
    /// `n` bytes, `Ok(None)` when all of it belongs to the body and more is to come.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, ChunkError> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.state = match self.state {
                State::Size { digits, value } => match b {
                    b'\r' if digits > 0 => State::SizeLf { value },
                    _ => {
                        let d = (b as char).to_digit(16).ok_or(ChunkError::SizeLine)?;
                        if digits == 16 {
                            return Err(ChunkError::SizeTooLong);
                        }
                        State::Size {
                            digits: digits + 1,
                            value: value << 4 | u64::from(d),
                        }
                    }
                },
                State::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => State::LastCr,
                    (b'\n', left) => State::Data { left },
                    _ => return Err(ChunkError::SizeLine),
                },
                State::Data { left } => {
                    let take = left.min((data.len() - i) as u64);
                    i += take as usize;
                    self.state = match left - take {
                        0 => State::DataCr,
                        left => State::Data { left },
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size {
                    digits: 0,
                    value: 0,
                },
                State::DataCr | State::DataLf => return Err(ChunkError::DataEnd),
                State::LastCr if b == b'\r' => State::LastLf,
                State::LastCr => return Err(ChunkError::Trailer),
                State::LastLf if b == b'\n' => State::Done,
                State::LastLf => return Err(ChunkError::End),
                State::Done => return Ok(Some(i)),
            };
            i += 1;
            if self.state == State::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<Option<usize>, ChunkError> {
        Chunked::default().feed(body)
    }

    #[test]
    fn finds_the_end() {
        assert_eq!(whole(b"5\r\nhello\r\n0\r\n\r\n"), Ok(Some(15)));
        assert_eq!(
            whole(b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n"),
            Ok(Some(15))
        );
        assert_eq!(whole(b"A\r\n0123456789\r\n00\r\n\r\n"), Ok(Some(21)));
        assert_eq!(whole(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(whole(b"5\r\nhel"), Ok(None));
    }

    #[test]
    fn byte_by_byte_is_the_same() {
        let body = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\nNEXT";
        let mut c = Chunked::default();
        let mut end = None;
        for (i, b) in body.iter().enumerate() {
            if let Some(n) = c.feed(std::slice::from_ref(b)).unwrap() {
                assert_eq!(n, 1);
                end = Some(i + 1);
                break;
            }
        }
        assert_eq!(end, Some(body.len() - 4));
        assert!(c.is_done());
    }

    #[test]
    fn refuses_ambiguous_framing() {
        assert_eq!(
            whole(b"5;ext=1\r\nhello\r\n0\r\n\r\n"),
            Err(ChunkError::SizeLine)
        );
        assert_eq!(
            whole(b"5 \r\nhello\r\n0\r\n\r\n"),
            Err(ChunkError::SizeLine)
        );
        assert_eq!(whole(b"5\nhello\r\n0\r\n\r\n"), Err(ChunkError::SizeLine));
        assert_eq!(whole(b"5\r\nhello\r\n0\n\r\n"), Err(ChunkError::SizeLine));
        assert_eq!(whole(b"5\r\nhello\n0\r\n\r\n"), Err(ChunkError::DataEnd));
        assert_eq!(whole(b"5\r\nhelloX\r\n0\r\n\r\n"), Err(ChunkError::DataEnd));
        assert_eq!(whole(b"\r\nhello\r\n0\r\n\r\n"), Err(ChunkError::SizeLine));
        assert_eq!(
            whole(b"zz\r\nhello\r\n0\r\n\r\n"),
            Err(ChunkError::SizeLine)
        );
        assert_eq!(
            whole(b"-5\r\nhello\r\n0\r\n\r\n"),
            Err(ChunkError::SizeLine)
        );
        assert_eq!(whole(b"0x5\r\nhello\r\n"), Err(ChunkError::SizeLine));
        assert_eq!(
            whole(b"fffffffffffffffff\r\nhello\r\n"),
            Err(ChunkError::SizeTooLong)
        );
        assert_eq!(
            whole(b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
            Err(ChunkError::Trailer)
        );
        assert_eq!(whole(b"0\r\n\rX"), Err(ChunkError::End));
    }
}
