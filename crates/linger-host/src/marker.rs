//! Finding the end-of-command markers the shell's command loop writes into its output pipes.
//!
//! The marker is `\0\1LINGER:<nonce>:<status>\1\0` on stdout and `\0\1LINGER:<nonce>\1\0`
//! on stderr. Output bytes before it belong to the command; the scanner passes everything
//! else through untouched, holding back only a tail that could be the start of a marker.

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;

/// What a chunk of pipe data contained.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A slice of the chunk fed in (not a copy, except around a marker split across reads).
    Data(Bytes),
    /// The end marker; on stdout it carries the command's status.
    End(Option<i32>),
}

pub struct MarkerScanner {
    needle: Vec<u8>,
    with_status: bool,
    pending: Vec<u8>,
}

const TERMINATOR: &[u8] = b"\x01\x00";
/// Longest status text we accept before the terminator (`-2147483648`).
const MAX_STATUS_LEN: usize = 11;

impl MarkerScanner {
    pub fn stdout(nonce: &str) -> Self {
        MarkerScanner {
            needle: format!("\0\x01LINGER:{nonce}:").into_bytes(),
            with_status: true,
            pending: Vec::new(),
        }
    }

    pub fn stderr(nonce: &str) -> Self {
        MarkerScanner {
            needle: format!("\0\x01LINGER:{nonce}\x01\0").into_bytes(),
            with_status: false,
            pending: Vec::new(),
        }
    }

    /// Feeds a chunk read from the pipe; appends what it holds to `out`.
    pub fn feed(&mut self, chunk: Bytes, out: &mut Vec<Piece>) {
        let mut buf = if self.pending.is_empty() {
            chunk
        } else if self.pending_is_data(&chunk) {
            // What was held back is not a marker after all: the chunk goes on uncopied (output
            // of NULs ends every read with a possible marker start).
            out.push(Piece::Data(Bytes::from(std::mem::take(&mut self.pending))));
            chunk
        } else {
            let mut b = BytesMut::with_capacity(self.pending.len() + chunk.len());
            b.extend_from_slice(&self.pending);
            b.extend_from_slice(&chunk);
            self.pending.clear();
            b.freeze()
        };
        loop {
            match memmem::find(&buf, &self.needle) {
                Some(at) => {
                    let after = at + self.needle.len();
                    let (status, consumed) = if self.with_status {
                        let tail = &buf[after..];
                        match memmem::find(&tail[..tail.len().min(MAX_STATUS_LEN + 2)], TERMINATOR)
                        {
                            Some(end) => {
                                let status = std::str::from_utf8(&tail[..end])
                                    .ok()
                                    .and_then(|s| s.parse::<i32>().ok());
                                match status {
                                    Some(s) => (Some(s), after + end + TERMINATOR.len()),
                                    // Not our marker after all: pass the bytes through.
                                    None => {
                                        out.push(Piece::Data(buf.split_to(after)));
                                        continue;
                                    }
                                }
                            }
                            None if tail.len() < MAX_STATUS_LEN + 2 => {
                                // The status is still on its way.
                                if at > 0 {
                                    out.push(Piece::Data(buf.slice(..at)));
                                }
                                self.pending = buf[at..].to_vec();
                                return;
                            }
                            None => {
                                out.push(Piece::Data(buf.split_to(after)));
                                continue;
                            }
                        }
                    } else {
                        (None, after)
                    };
                    if at > 0 {
                        out.push(Piece::Data(buf.slice(..at)));
                    }
                    out.push(Piece::End(status));
                    buf.advance(consumed);
                }
                None => {
                    let keep = self.partial_suffix(&buf);
                    let emit = buf.len() - keep;
                    if keep > 0 {
                        self.pending = buf[emit..].to_vec();
                        buf.truncate(emit);
                    }
                    if !buf.is_empty() {
                        out.push(Piece::Data(buf));
                    }
                    return;
                }
            }
        }
    }

    /// Everything held back, as plain data (the pipe closed).
    pub fn finish(&mut self) -> Option<Bytes> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then(|| Bytes::from(rest))
    }

    /// Whether no marker starts in the held-back bytes, given the chunk that follows them
    /// (false when the chunk is too short to tell).
    fn pending_is_data(&self, chunk: &[u8]) -> bool {
        let need = self.needle.len() - 1;
        if chunk.len() < need {
            return false;
        }
        let mut bridge = self.pending.clone();
        bridge.extend_from_slice(&chunk[..need]);
        memmem::find(&bridge, &self.needle).is_none_or(|at| at >= self.pending.len())
    }

    /// Length of the longest suffix of `buf` that is a proper prefix of the needle.
    fn partial_suffix(&self, buf: &[u8]) -> usize {
        let max = (self.needle.len() - 1).min(buf.len());
        (1..=max)
            .rev()
            .find(|&k| buf[buf.len() - k..] == self.needle[..k])
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(b: &'static [u8]) -> Bytes {
        Bytes::from_static(b)
    }

    fn run(scanner: &mut MarkerScanner, chunks: &[&[u8]]) -> Vec<Piece> {
        let mut out = Vec::new();
        for c in chunks {
            scanner.feed(Bytes::copy_from_slice(c), &mut out);
        }
        // Merge adjacent data pieces so tests do not depend on chunking.
        let mut merged: Vec<Piece> = Vec::new();
        for p in out {
            match (merged.last_mut(), p) {
                (Some(Piece::Data(a)), Piece::Data(b)) => *a = [&a[..], &b[..]].concat().into(),
                (_, p) => merged.push(p),
            }
        }
        merged
    }

    #[test]
    fn finds_marker_with_status_across_every_split() {
        let stream = b"abc\0\x01LINGER:n1:42\x01\0tail".to_vec();
        for split in 0..stream.len() {
            let mut s = MarkerScanner::stdout("n1");
            let (a, b) = stream.split_at(split);
            let got = run(&mut s, &[a, b]);
            let mut tail = got;
            if let Some(rest) = s.finish() {
                tail.push(Piece::Data(rest));
            }
            assert_eq!(
                tail,
                vec![
                    Piece::Data(data(b"abc")),
                    Piece::End(Some(42)),
                    Piece::Data(data(b"tail"))
                ],
                "split at {split}"
            );
        }
    }

    /// A read ending in a possible marker start holds back only that; when the next read
    /// shows it was data, that read goes on as it is, not copied.
    #[test]
    fn a_held_back_byte_costs_no_copy_of_the_next_read() {
        let mut s = MarkerScanner::stdout("n1");
        let mut out = Vec::new();
        s.feed(data(b"abc\0"), &mut out);
        let next = Bytes::from(vec![0u8; 1 << 16]);
        let at = next.as_ptr();
        s.feed(next, &mut out);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0], Piece::Data(data(b"abc")));
        assert_eq!(out[1], Piece::Data(data(b"\0")));
        match &out[2] {
            Piece::Data(d) => {
                assert_eq!(d.as_ptr(), at, "the read was copied");
                assert_eq!(d.len(), (1 << 16) - 1, "its own last byte is held back");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn other_nonce_is_data() {
        let mut s = MarkerScanner::stderr("good");
        let got = run(&mut s, &[b"x\0\x01LINGER:evil\x01\0y"]);
        assert_eq!(got, vec![Piece::Data(data(b"x\0\x01LINGER:evil\x01\0y"))]);
    }

    #[test]
    fn holds_back_only_a_possible_prefix() {
        let mut s = MarkerScanner::stderr("n");
        let mut out = Vec::new();
        s.feed(data(b"prompt: "), &mut out);
        assert_eq!(out, vec![Piece::Data(data(b"prompt: "))]);
        out.clear();
        s.feed(data(b"ab\0\x01LIN"), &mut out);
        assert_eq!(out, vec![Piece::Data(data(b"ab"))]);
        assert_eq!(s.finish(), Some(data(b"\0\x01LIN")));
    }

    #[test]
    fn malformed_status_passes_through() {
        let mut s = MarkerScanner::stdout("n");
        let mut got = run(&mut s, &[b"\0\x01LINGER:n:zz\x01\0"]);
        if let (Some(Piece::Data(d)), Some(rest)) = (got.last_mut(), s.finish()) {
            *d = [&d[..], &rest[..]].concat().into();
        }
        assert_eq!(got, vec![Piece::Data(data(b"\0\x01LINGER:n:zz\x01\0"))]);
    }
}
