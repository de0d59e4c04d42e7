//! Telling, from the bytes of an answer being written, whether the client's connection
//! switched protocols (a `101` after any interim `1xx` heads).

/// The start of an answer head being written: its status line's first 12 bytes, or, inside an
/// interim (1xx) head, how much of its closing blank line has been seen.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct AnswerHead {
    status: [u8; 12],
    have: usize,
    in_interim: bool,
    blank: u8,
}

impl AnswerHead {
    /// Read more of the answer: `Some(true)` once a head says `101`, `Some(false)` once a head
    /// has another final status, `None` while only interim heads (skipped to their blank line)
    /// or part of a status line have been seen.
    pub(super) fn feed(&mut self, data: &[u8]) -> Option<bool> {
        let mut i = 0;
        while i < data.len() {
            if self.in_interim {
                let b = data[i];
                i += 1;
                self.blank = match (b, self.blank) {
                    (b'\r', 0 | 2) | (b'\n', 1 | 3) => self.blank + 1,
                    (b'\r', _) => 1,
                    _ => 0,
                };
                if self.blank == 4 {
                    *self = AnswerHead::default();
                }
                continue;
            }
            let take = (self.status.len() - self.have).min(data.len() - i);
            self.status[self.have..self.have + take].copy_from_slice(&data[i..i + take]);
            self.have += take;
            i += take;
            if self.have < self.status.len() {
                continue;
            }
            // `HTTP/1.1 101`: the code is at 9..12.
            match &self.status[9..12] {
                b"101" => return Some(true),
                [b'1', _, _] => {
                    self.in_interim = true;
                    self.blank = 0;
                }
                _ => return Some(false),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(pieces: &[&[u8]]) -> Option<bool> {
        let mut a = AnswerHead::default();
        pieces.iter().find_map(|p| a.feed(p))
    }

    #[test]
    fn the_answer_to_an_upgrade_is_followed() {
        assert_eq!(
            verdict(&[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"]),
            Some(true)
        );
        assert_eq!(verdict(&[b"HTTP/1.1 200 OK\r\n\r\n"]), Some(false));
        // Written in pieces, and after interim answers.
        assert_eq!(verdict(&[b"HTTP/1", b".1 1", b"01 Switching"]), Some(true));
        assert_eq!(
            verdict(&[
                b"HTTP/1.1 100 Continue\r",
                b"\n\r",
                b"\nHTTP/1.1 101 Switching\r\n\r\n"
            ]),
            Some(true)
        );
        assert_eq!(
            verdict(&[b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 404 Not Found\r\n"]),
            Some(false)
        );
        // An interim head's lines are not read as a status.
        assert_eq!(
            verdict(&[b"HTTP/1.1 100 Continue\r\nX: HTTP/1.1 101\r\n"]),
            None
        );
        assert_eq!(verdict(&[b"HTTP/1.1 10"]), None);
    }
}
