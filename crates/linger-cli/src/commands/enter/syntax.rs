//! What a typed line means before it is sent: whether bash would want more of it, whether it
//! is `exit`, and how the prompt looks.

use std::process::Stdio;

/// Past this size a command is not checked (an argument cannot be longer) and is sent as is.
const CHECK_LIMIT: usize = 100 * 1024;

/// Whether bash would ask for more before running `text` (an open quote, `if` without `fi`,
/// an unclosed `{` or `(`, a trailing `|`, `&&` or `\`, a here-document without its end).
/// A plain syntax error is not incomplete: the session reports it.
///
/// The check is local, with `bash -n`, so it costs no round trip; without a local bash every
/// line counts as complete except one ending in `\`.
pub async fn incomplete(text: &str) -> bool {
    if text.len() > CHECK_LIMIT {
        return false;
    }
    // `-c`, not standard input: a parser that stops early must not cut a pipe we write to.
    let checked = tokio::process::Command::new("bash")
        .arg("-n")
        .arg("-c")
        .arg(text)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await;
    match checked {
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            if wants_more(&err) {
                return true;
            }
            out.status.success() && ends_in_backslash(text)
        }
        Err(_) => ends_in_backslash(text),
    }
}

/// bash's messages for input that ended too soon.
fn wants_more(stderr: &str) -> bool {
    stderr.contains("unexpected end of file")
        || stderr.contains("unexpected EOF")
        || (stderr.contains("here-document") && stderr.contains("delimited by end-of-file"))
}

/// A last line ending in an unescaped backslash continues on the next line.
fn ends_in_backslash(text: &str) -> bool {
    let last = text.rsplit('\n').next().unwrap_or("");
    let trailing = last.bytes().rev().take_while(|&b| b == b'\\').count();
    trailing % 2 == 1
}

/// A command that leaves the interactive session.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit` (or `logout`) alone.
    Bare,
    /// `exit N`: the session evaluates N.
    WithStatus,
}

/// Whether `text` is `exit` / `exit N` (or `logout`), the whole command.
pub fn exit_command(text: &str) -> Option<Exit> {
    let t = text.trim();
    let t = t.strip_suffix(';').unwrap_or(t).trim_end();
    if t.contains('\n') {
        return None;
    }
    let mut words = t.split_whitespace();
    if !matches!(words.next(), Some("exit" | "logout")) {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    match rest.as_slice() {
        [] => Some(Exit::Bare),
        [status] if !status.contains(|c: char| ";&|<>()`".contains(c)) => Some(Exit::WithStatus),
        _ => None,
    }
}

/// `[computer]: cwd$ `, with the home directory shown as `~`.
pub fn prompt(computer: &str, cwd: &str, home: &str) -> String {
    let shown = match cwd.strip_prefix(home) {
        Some(rest)
            if !home.is_empty() && home != "/" && (rest.is_empty() || rest.starts_with('/')) =>
        {
            format!("~{rest}")
        }
        _ => cwd.to_string(),
    };
    let shown: String = shown
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    format!("[{computer}]: {shown}$ ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn incomplete_input_continues() {
        for text in [
            "echo 'abc",
            "echo \"abc",
            "if true; then",
            "if true; then\necho x",
            "f() {",
            "for x in 1 2; do",
            "echo a |",
            "true &&",
            "echo $(",
            "cat <<EOF\nline",
            "echo a \\",
            "case x in",
        ] {
            assert!(incomplete(text).await, "{text:?} should continue");
        }
    }

    #[tokio::test]
    async fn complete_input_and_syntax_errors_run() {
        for text in [
            "echo hi",
            "if true; then\necho x\nfi",
            "echo )",
            "fi",
            "cat <<EOF\nline\nEOF",
            "echo a \\\\",
            "echo 'a \\'",
            "",
            "# just a comment",
        ] {
            assert!(!incomplete(text).await, "{text:?} should run");
        }
    }

    #[test]
    fn exit_is_recognised() {
        assert_eq!(exit_command("exit"), Some(Exit::Bare));
        assert_eq!(exit_command("  exit ; "), Some(Exit::Bare));
        assert_eq!(exit_command("logout"), Some(Exit::Bare));
        assert_eq!(exit_command("exit 3"), Some(Exit::WithStatus));
        assert_eq!(exit_command("exit $x"), Some(Exit::WithStatus));
        assert_eq!(exit_command("exit; echo hi"), None);
        assert_eq!(exit_command("exit 1 2"), None);
        assert_eq!(exit_command("exit $(false)"), None);
        assert_eq!(exit_command("exitcode=1"), None);
        assert_eq!(exit_command("echo exit"), None);
        assert_eq!(exit_command("exit\n3"), None);
    }

    #[test]
    fn prompt_shows_home_as_tilde() {
        assert_eq!(
            prompt("localhost", "/tmp", "/home/u"),
            "[localhost]: /tmp$ "
        );
        assert_eq!(
            prompt("localhost", "/home/u", "/home/u"),
            "[localhost]: ~$ "
        );
        assert_eq!(prompt("h", "/home/u/src", "/home/u"), "[h]: ~/src$ ");
        assert_eq!(prompt("h", "/home/user2", "/home/u"), "[h]: /home/user2$ ");
        assert_eq!(prompt("h", "/etc", "/"), "[h]: /etc$ ");
        assert_eq!(prompt("h", "/a\nb", ""), "[h]: /a?b$ ");
    }
}
