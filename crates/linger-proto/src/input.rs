//! Forwarded standard input (docs/PROTOCOL.md §12.1): a command's input is one byte stream,
//! each chunk stamped with its offset in it, so that a sender may repeat what it is unsure
//! was received (after a reconnect) and every receiver keeps each byte exactly once.

use std::ops::Range;

/// Most bytes of a command's input that may be in flight beyond what its session host has
/// written to the command: a sender keeps at most this much unacknowledged, and a receiver
/// refuses what lies beyond it. It bounds every queue on the path.
pub const STDIN_WINDOW: u64 = 4 << 20;

/// Largest chunk of input in one message.
pub const STDIN_CHUNK: usize = 256 * 1024;

/// The part of a chunk a receiver takes: `len` bytes at `offset`, for a receiver that holds
/// the stream up to `have` and may hold it up to `limit`. `None` when the chunk starts
/// beyond `have` (a gap: nothing may be taken); otherwise the range of the chunk's bytes that
/// are new and within the limit (possibly empty, and then `is_complete` says whether the
/// chunk ended inside what is held, so that an end-of-input flag it carries applies).
pub fn fresh_part(have: u64, limit: u64, offset: u64, len: usize) -> Option<Fresh> {
    if offset > have {
        return None;
    }
    let end = offset.saturating_add(len as u64);
    let from = have.min(end);
    let to = end.min(limit.max(from));
    Some(Fresh {
        range: (from - offset) as usize..(to - offset) as usize,
        is_complete: to == end,
    })
}

/// See [`fresh_part`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    /// The new bytes, as a range of the chunk.
    pub range: Range<usize>,
    /// Whether the chunk's last byte is now held (nothing was cut by the limit).
    pub is_complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(have: u64, limit: u64, offset: u64, len: usize) -> Option<(Range<usize>, bool)> {
        fresh_part(have, limit, offset, len).map(|f| (f.range, f.is_complete))
    }

    #[test]
    fn a_chunk_that_continues_the_stream_is_taken_whole() {
        assert_eq!(part(10, 100, 10, 5), Some((0..5, true)));
    }

    #[test]
    fn a_repeated_prefix_is_skipped() {
        assert_eq!(part(10, 100, 4, 10), Some((6..10, true)));
        assert_eq!(part(10, 100, 0, 10), Some((10..10, true)));
        assert_eq!(part(10, 100, 0, 4), Some((4..4, true)));
    }

    #[test]
    fn a_gap_takes_nothing() {
        assert_eq!(part(10, 100, 11, 5), None);
    }

    #[test]
    fn the_limit_cuts_the_chunk() {
        assert_eq!(part(10, 12, 10, 5), Some((0..2, false)));
        assert_eq!(part(12, 12, 10, 5), Some((2..2, false)));
        // A limit below what is held takes nothing more, and nothing is lost.
        assert_eq!(part(12, 11, 12, 5), Some((0..0, false)));
    }

    #[test]
    fn an_empty_chunk_at_the_end_is_complete() {
        assert_eq!(part(10, 10, 10, 0), Some((0..0, true)));
        assert_eq!(part(10, 10, 3, 0), Some((0..0, true)));
    }

    #[test]
    fn huge_offsets_do_not_overflow() {
        assert_eq!(
            part(u64::MAX, u64::MAX, u64::MAX - 1, 8),
            Some((1..1, true))
        );
    }
}
