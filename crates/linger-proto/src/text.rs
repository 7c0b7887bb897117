//! Textual forms shared by the daemon's configuration, the client's options and the CLI's
//! flags, so that "90s" or "1MiB" mean the same everywhere.

use std::time::Duration;

/// `text` with its control characters (newlines, ESC, BEL, DEL…) escaped as `\n`,
/// `\u{1b}`…: what a peer sent, fit to print or log without forging lines or driving a
/// terminal.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// OpenSSH's host and address patterns: `*` matches any run of characters, `?` any one,
/// letters compare without case (match_pattern in ssh's match.c). Used for authorized_keys'
/// `from=` and known_hosts' host patterns alike.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// "90", "90s", "5m", "2h 30m", "250ms". A bare number is seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(v)
            .map_err(|e| format!("invalid duration '{v}' ({e}); write e.g. 90s, 5m or 2h"))?,
    };
    // Beyond this nothing means more than "forever", and sums with instants stay exact.
    if d > MAX_DURATION {
        return Err(format!(
            "duration '{v}' is too long: at most {} (100 years)",
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(d)
}

/// The longest duration a flag or option accepts.
/// (100 years of 365.25 days, as humantime counts a year.)
pub const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// "1048576", "64KiB", "1MiB", "1GiB" (also KB/MB/GB, as powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size '{s}' (write e.g. 1048576 or 1MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "invalid size unit '{u}' in '{s}' (use KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid size '{s}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("4m").unwrap(), Duration::from_secs(240));
        assert!(parse_duration("soon").is_err());
        // Too long to mean anything (and once wrapped round to 1 h): refused.
        let e = parse_duration("18446744073713152s").expect_err("too long");
        assert!(e.contains("too long"), "{e}");
        assert!(parse_duration("100years").is_ok());
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert!(parse_size("0").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
