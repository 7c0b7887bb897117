//! Text a peer chose (a user name it asked for, its program's name, what failed to decode),
//! made fit for a log line: control characters escaped, so it cannot forge lines or drive a
//! terminal, and its length bounded, so it cannot flood the log.

/// Characters of peer-chosen text kept in a log line.
pub const SHOWN_CHARS: usize = 100;

/// `text` as it may appear in a log: at most [`SHOWN_CHARS`] characters, control
/// characters (newlines, ESC, DEL…) escaped as `\n`, `\u{1b}`, and a note of the length
/// when it was cut.
pub fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!(
            "{}… ({} bytes)",
            linger_proto::text::escape_controls(&text[..cut]),
            text.len()
        ),
        None => linger_proto::text::escape_controls(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_a_line() {
        assert_eq!(
            shown("bob\n2026-01-01 INFO forged\x1b[2J"),
            "bob\\n2026-01-01 INFO forged\\u{1b}[2J"
        );
        assert_eq!(shown("plain é"), "plain é");
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(2_500_000);
        let s = shown(&long);
        assert!(s.len() < 200, "{}", s.len());
        assert!(s.ends_with("… (2500000 bytes)"));
    }
}
