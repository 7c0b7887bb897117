//! Restricted sessions (SPEC §10, the seeds' restricted endpoints): a configuration with
//! `restricted = ["prog", …]` runs only those programs, as argv, with no shell syntax.
//!
//! A script is split into words the way a shell would split a plain command line — blanks
//! separate words, `'…'` and `"…"` quote — and anything else the shell would interpret is
//! refused before anything runs: separators and pipes, redirections, expansions and
//! substitutions, globs, comments, escapes, newlines. The first word must be on the list.
//! What the session's shell then runs is the words re-quoted, each in single quotes, after
//! `command --`: the shell sees one simple command whose words it cannot expand.

/// Characters that mean something to the shell outside quotes.
const SPECIAL: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '{', '}', '*', '?', '[', ']', '~', '!', '#', '\\',
    '\n', '\r',
];

/// Why a script was refused: for the message the client gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Empty,
    Syntax(String),
    NotAllowed(String),
}

impl Refusal {
    /// The one-line message, naming the configuration and what it allows.
    pub fn message(&self, configuration: &str, allowed: &[String]) -> String {
        let why = match self {
            Refusal::Empty => "the command is empty".to_string(),
            Refusal::Syntax(what) => format!("{what} is shell syntax"),
            Refusal::NotAllowed(prog) => format!("'{prog}' is not an allowed program"),
        };
        format!(
            "restricted session (configuration '{configuration}'): {why}; it runs only {}, as plain words without shell syntax",
            allowed.join(", ")
        )
    }
}

/// Splits `script` into words, refusing shell syntax.
pub fn words(script: &str) -> Result<Vec<String>, Refusal> {
    let script = script.trim_end_matches(['\n', '\r']);
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = script.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) if ch == '\n' || ch == '\r' => {
                            return Err(Refusal::Syntax("a newline".into()))
                        }
                        Some(ch) => word.push(ch),
                        None => return Err(Refusal::Syntax("an unclosed quote".into())),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(ch @ ('$' | '`' | '\\' | '!')) => {
                            return Err(Refusal::Syntax(format!("'{ch}' inside double quotes")))
                        }
                        Some(ch) if ch == '\n' || ch == '\r' => {
                            return Err(Refusal::Syntax("a newline".into()))
                        }
                        Some(ch) => word.push(ch),
                        None => return Err(Refusal::Syntax("an unclosed quote".into())),
                    }
                }
            }
            c if SPECIAL.contains(&c) => {
                let shown = match c {
                    '\n' | '\r' => "a newline".to_string(),
                    c => format!("'{c}'"),
                };
                return Err(Refusal::Syntax(shown));
            }
            c if c.is_control() => {
                return Err(Refusal::Syntax(format!("control character {:?}", c)));
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(Refusal::Empty);
    }
    Ok(words)
}

/// The command the session's shell runs for `script` (plus the invoke's arguments as more
/// words), if `allowed` permits it.
pub fn command(script: &str, args: &[String], allowed: &[String]) -> Result<String, Refusal> {
    let mut argv = words(script)?;
    if !allowed.iter().any(|a| *a == argv[0]) {
        return Err(Refusal::NotAllowed(argv[0].clone()));
    }
    argv.extend(args.iter().cloned());
    let quoted: Vec<String> = argv.iter().map(|w| quote(w)).collect();
    Ok(format!("command -- {}", quoted.join(" ")))
}

/// `w` in single quotes, each `'` written as `'\''`.
fn quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["ls".into(), "echo".into(), "/usr/bin/id".into()]
    }

    #[test]
    fn plain_words_and_quotes_pass() {
        assert_eq!(
            command("echo hello 'big world' \"it's\"\n", &[], &allowed()),
            Ok(r#"command -- 'echo' 'hello' 'big world' 'it'\''s'"#.to_string())
        );
        assert_eq!(
            command("ls", &["-l".into(), "a b".into()], &allowed()),
            Ok("command -- 'ls' '-l' 'a b'".to_string())
        );
        assert_eq!(
            command("  echo   --color=auto  x=1 ", &[], &allowed()),
            Ok("command -- 'echo' '--color=auto' 'x=1'".to_string())
        );
        assert!(command("/usr/bin/id -u", &[], &allowed()).is_ok());
        // Quotes make shell characters plain text.
        assert_eq!(
            command("echo ';' '$(id)' \"a|b\"", &[], &allowed()),
            Ok(r#"command -- 'echo' ';' '$(id)' 'a|b'"#.to_string())
        );
    }

    #[test]
    fn hostile_scripts_are_refused() {
        let refused = [
            "echo hi; id",
            "echo hi && id",
            "echo hi || id",
            "echo hi | sh",
            "echo hi & id",
            "echo $HOME",
            "echo ${HOME}",
            "echo `id`",
            "echo $(id)",
            "echo hi > /tmp/x",
            "echo < /etc/shadow",
            "echo hi >> x",
            "ls *",
            "ls ?",
            "ls [ab]",
            "ls ~",
            "ls ~root",
            "echo hi # comment",
            "echo \\; id",
            "echo hi\nid",
            "echo \"$HOME\"",
            "echo \"`id`\"",
            "echo 'unclosed",
            "echo \"unclosed",
            "(id)",
            "{ id; }",
            "echo !!",
            "echo <(id)",
            "echo a\x07b",
            "",
            "   \n",
        ];
        for s in refused {
            assert!(command(s, &[], &allowed()).is_err(), "accepted: {s:?}");
        }
    }

    #[test]
    fn only_listed_programs_run() {
        for s in [
            "id",
            "sh -c id",
            "bash",
            "command id",
            "exec ls",
            "FOO=1 ls",
            "./ls",
            "/bin/ls",
            "eval ls",
        ] {
            assert!(
                matches!(command(s, &[], &allowed()), Err(Refusal::NotAllowed(_))),
                "accepted: {s:?}"
            );
        }
    }

    #[test]
    fn the_message_says_why_and_what_is_allowed() {
        let m = Refusal::Syntax("';'".into()).message("ops", &allowed());
        assert!(m.contains("';' is shell syntax") && m.contains("ls, echo, /usr/bin/id"));
    }
}
