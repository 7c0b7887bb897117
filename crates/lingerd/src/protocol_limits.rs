//! docs/PROTOCOL.md §14 ("Limits and constants") names the constants a peer has to agree
//! with; this keeps each named value equal to the code's, and fails on a constant the table
//! names that is not checked here.

use std::collections::BTreeMap;

/// Every constant §14 names, with its value in the code.
fn in_code() -> BTreeMap<&'static str, u64> {
    use linger_proto::{auth, copy, environment, input};
    [
        ("MAX_FRAME_LEN", linger_proto::MAX_FRAME_LEN as u64),
        ("MAX_LOGIN_FRAME_LEN", auth::MAX_LOGIN_FRAME_LEN as u64),
        (
            "MAX_REQUESTS_PER_CONNECTION",
            crate::MAX_REQUESTS_PER_CONNECTION as u64,
        ),
        ("MAX_REQUESTS", crate::MAX_REQUESTS as u64),
        ("STDIN_CHUNK", input::STDIN_CHUNK as u64),
        ("STDIN_WINDOW", input::STDIN_WINDOW),
        ("OUTPUT_WINDOW", linger_host::OUTPUT_WINDOW),
        ("MAX_RUNNING_JOBS", linger_host::MAX_RUNNING_JOBS as u64),
        ("COPY_WINDOW", copy::COPY_WINDOW),
        ("COPY_CHUNK", copy::COPY_CHUNK as u64),
        ("COPY_ITEM_COST", copy::COPY_ITEM_COST),
        ("COPY_SEND_LIMIT", copy::COPY_SEND_LIMIT),
        ("COPY_PROGRESS_EVERY", copy::COPY_PROGRESS_EVERY),
        ("MAX_VARIABLES", environment::MAX_VARIABLES as u64),
        ("MAX_VALUE_LEN", environment::MAX_VALUE_LEN as u64),
    ]
    .into_iter()
    .collect()
}

/// `SCREAMING_SNAKE` with at least one `_` (so a message name such as `READY` is not one).
fn is_constant(name: &str) -> bool {
    name.contains('_')
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// The backticked constant names in `text`, in order, with where each starts.
fn constants(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut at = 0;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        let name = &rest[open + 1..open + 1 + len];
        if is_constant(name) {
            out.push((at + open, name));
        }
        at += open + len + 2;
        rest = &rest[open + len + 2..];
    }
    out
}

/// The first size in `text`: a number, an optional unit (bytes, KiB, MiB, GiB), and any
/// further `+ N unit` terms added to it. `None` if it holds no number.
fn size(text: &str) -> Option<u64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let mut words = text[start..].split_whitespace().peekable();
    let mut total = 0;
    loop {
        let word = words.next()?;
        let digits: String = word.chars().take_while(|c| c.is_ascii_digit()).collect();
        let n: u64 = digits.parse().ok()?;
        let unit = match words
            .peek()
            .map(|w| w.trim_end_matches([',', ';', ')', '(']))
        {
            Some("KiB") => 1 << 10,
            Some("MiB") => 1 << 20,
            Some("GiB") => 1 << 30,
            _ => 1,
        };
        if unit > 1 {
            words.next();
        }
        total += n * unit;
        if words.peek() != Some(&"+") {
            return Some(total);
        }
        words.next();
    }
}

/// What the table says each constant it names is: a constant in the value column is the
/// size just before it; one in the description column is the value at its position among
/// the `;`-separated values.
fn documented(doc: &str) -> BTreeMap<String, Option<u64>> {
    let table = doc
        .split("## 14. Limits and constants")
        .nth(1)
        .and_then(|t| t.split("\n## ").next())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for row in table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| what") && !l.starts_with("| ---"))
    {
        let cells: Vec<&str> = row.trim_matches('|').splitn(2, " | ").collect();
        let [what, value] = cells[..] else { continue };
        for (i, (_, name)) in constants(what).into_iter().enumerate() {
            let parts: Vec<&str> = value.split(';').collect();
            let part = if parts.len() == 1 {
                parts[0]
            } else {
                parts.get(i).copied().unwrap_or("")
            };
            out.insert(name.to_string(), size(part));
        }
        for (at, name) in constants(value) {
            let before = &value[..at];
            let before = before.rsplit([';', ',']).next().unwrap_or(before);
            out.insert(name.to_string(), size(before));
        }
    }
    out
}

#[test]
fn the_limits_table_says_what_the_code_does() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
    let documented = documented(&doc);
    let code = in_code();
    for (name, value) in &documented {
        let Some(actual) = code.get(name.as_str()) else {
            panic!(
                "PROTOCOL.md §14 names {name}, which this test does not check: add it to in_code()"
            );
        };
        assert_eq!(
            *value,
            Some(*actual),
            "PROTOCOL.md §14 says {name} is {value:?}, the code {actual}"
        );
    }
    for name in code.keys() {
        assert!(
            documented.contains_key(*name),
            "{name} is no longer in PROTOCOL.md §14"
        );
    }
}

#[test]
fn sizes_read_as_the_table_writes_them() {
    assert_eq!(size("≤ 256 KiB ("), Some(256 << 10));
    assert_eq!(size("8 MiB + 256 KiB"), Some((8 << 20) + (256 << 10)));
    assert_eq!(size("at most 32 ("), Some(32));
    assert_eq!(size("64 running at once ("), Some(64));
    assert_eq!(size("512 bytes"), Some(512));
    assert_eq!(size("no number"), None);
}
