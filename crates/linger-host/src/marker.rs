//! Finding the end-of-command markers the shell's command loop writes into its output pipes.
//!
//! The marker is `\0\1LINGER:<nonce>:<status>\1\0` on stdout and `\0\1LINGER:<nonce>\1\0`
//! on stderr. Output bytes before it belong to the command; the scanner passes everything
//! else through untouched, holding back only a tail that could be the start of a marker.

use memchr::memmem;

/// What a chunk of pipe data contained.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Data(Vec<u8>),
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
    pub fn feed(&mut self, chunk: Vec<u8>, out: &mut Vec<Piece>) {
        let mut buf = if self.pending.is_empty() {
            chunk
        } else {
            let mut b = std::mem::take(&mut self.pending);
            b.extend_from_slice(&chunk);
            b
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
                                        self.emit_through(&mut buf, after, out);
                                        continue;
                                    }
                                }
                            }
                            None if tail.len() < MAX_STATUS_LEN + 2 => {
                                // The status is still on its way.
                                if at > 0 {
                                    out.push(Piece::Data(buf[..at].to_vec()));
                                }
                                self.pending = buf[at..].to_vec();
                                return;
                            }
                            None => {
                                self.emit_through(&mut buf, after, out);
                                continue;
                            }
                        }
                    } else {
                        (None, after)
                    };
                    if at > 0 {
                        out.push(Piece::Data(buf[..at].to_vec()));
                    }
                    out.push(Piece::End(status));
                    buf.drain(..consumed);
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
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = std::mem::take(&mut self.pending);
        (!rest.is_empty()).then_some(rest)
    }

    fn emit_through(&self, buf: &mut Vec<u8>, upto: usize, out: &mut Vec<Piece>) {
        out.push(Piece::Data(buf[..upto].to_vec()));
        buf.drain(..upto);
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

    fn run(scanner: &mut MarkerScanner, chunks: &[&[u8]]) -> Vec<Piece> {
        let mut out = Vec::new();
        for c in chunks {
            scanner.feed(c.to_vec(), &mut out);
        }
        // Merge adjacent data pieces so tests do not depend on chunking.
        let mut merged: Vec<Piece> = Vec::new();
        for p in out {
            match (merged.last_mut(), p) {
                (Some(Piece::Data(a)), Piece::Data(b)) => a.extend(b),
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
                    Piece::Data(b"abc".to_vec()),
                    Piece::End(Some(42)),
                    Piece::Data(b"tail".to_vec())
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn other_nonce_is_data() {
        let mut s = MarkerScanner::stderr("good");
        let got = run(&mut s, &[b"x\0\x01LINGER:evil\x01\0y"]);
        assert_eq!(
            got,
            vec![Piece::Data(b"x\0\x01LINGER:evil\x01\0y".to_vec())]
        );
    }

    #[test]
    fn holds_back_only_a_possible_prefix() {
        let mut s = MarkerScanner::stderr("n");
        let mut out = Vec::new();
        s.feed(b"prompt: ".to_vec(), &mut out);
        assert_eq!(out, vec![Piece::Data(b"prompt: ".to_vec())]);
        out.clear();
        s.feed(b"ab\0\x01LIN".to_vec(), &mut out);
        assert_eq!(out, vec![Piece::Data(b"ab".to_vec())]);
        assert_eq!(s.finish(), Some(b"\0\x01LIN".to_vec()));
    }

    #[test]
    fn malformed_status_passes_through() {
        let mut s = MarkerScanner::stdout("n");
        let mut got = run(&mut s, &[b"\0\x01LINGER:n:zz\x01\0"]);
        if let (Some(Piece::Data(d)), Some(rest)) = (got.last_mut(), s.finish()) {
            d.extend(rest);
        }
        assert_eq!(got, vec![Piece::Data(b"\0\x01LINGER:n:zz\x01\0".to_vec())]);
    }
}
