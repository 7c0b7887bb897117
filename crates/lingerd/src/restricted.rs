//! Restricted sessions (SPEC §10, the seeds' restricted endpoints): a configuration with
//! `restricted = ["prog", …]` runs only those programs, as argv, with no shell syntax.
//!
//! A script is split into words the way a shell would split a plain command line: blanks
//! separate words, `'…'` and `"…"` quote, and anything else the shell would interpret is
//! refused before anything runs: separators and pipes, redirections, expansions and
//! substitutions, globs, comments, escapes, newlines. The first word must be on the list.
//! What the session's shell then runs is the program's absolute path (resolved when the
//! configuration was loaded) and the words re-quoted, each in single quotes: the shell sees
//! one simple command whose words it cannot expand, and a name with a slash is never a
//! builtin or a function, so an allowed `printf` cannot `-v PATH` the shell itself. A
//! program may also have an argument pattern (a regular expression the arguments, joined by
//! single spaces, must match whole: PowerShell JEA's ValidatePattern).
//!
//! Programs that run other programs (`env`, `find -exec`, `xargs`, `awk`, `git -c alias`,
//! `tar --checkpoint-action`, `sed e`, `timeout`, `nice`, shells, editors, pagers…) would
//! allow anything: [`LAUNCHERS`] are refused at load unless the configuration names them in
//! `allow_launchers`.

/// Programs known to run others (or a shell) as their arguments say.
pub const LAUNCHERS: &[&str] = &[
    "env",
    "find",
    "xargs",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "git",
    "tar",
    "sed",
    "timeout",
    "nice",
    "ionice",
    "nohup",
    "stdbuf",
    "setsid",
    "chrt",
    "taskset",
    "time",
    "watch",
    "flock",
    "chroot",
    "nsenter",
    "unshare",
    "systemd-run",
    "sudo",
    "su",
    "doas",
    "pkexec",
    "runuser",
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "csh",
    "tcsh",
    "fish",
    "busybox",
    "perl",
    "python",
    "ruby",
    "lua",
    "node",
    "php",
    "tclsh",
    "expect",
    "script",
    "ssh",
    "scp",
    "rsync",
    "make",
    "vi",
    "vim",
    "nvim",
    "ex",
    "ed",
    "emacs",
    "nano",
    "less",
    "more",
    "man",
    "strace",
    "ltrace",
    "gdb",
    "tmux",
    "screen",
    "crontab",
    "at",
    "dpkg",
    "rpm",
    "apt",
    "apt-get",
    "yum",
    "dnf",
    "docker",
    "podman",
    "kubectl",
    "ansible",
    "zip",
    "unzip",
    "mail",
];

/// Whether the program at `path` is a known launcher.
pub fn is_launcher(path: &str) -> bool {
    let base = std::path::Path::new(path)
        .file_name()
        .and_then(|b| b.to_str())
        .unwrap_or(path);
    LAUNCHERS.contains(&base) || base.starts_with("python")
}

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
    /// The arguments do not match the program's pattern.
    Arguments(String),
}

impl Refusal {
    /// The one-line message, naming the configuration and what it allows.
    pub fn message(&self, configuration: &str, allowed: &[String]) -> String {
        let why = match self {
            Refusal::Empty => "the command is empty".to_string(),
            Refusal::Syntax(what) => format!("{what} is shell syntax"),
            Refusal::NotAllowed(prog) => format!("'{prog}' is not an allowed program"),
            Refusal::Arguments(prog) => {
                format!("the arguments are not among those allowed for '{prog}'")
            }
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
/// words), if `allowed` (absolute paths) permits it and its arguments match the program's
/// entry in `patterns` (absolute path, regular expression), if any. The first word may be
/// the path itself or, without a slash, its file name.
pub fn command(
    script: &str,
    args: &[String],
    allowed: &[String],
    patterns: &[(String, String)],
) -> Result<String, Refusal> {
    let mut argv = words(script)?;
    let asked = argv[0].clone();
    let program = allowed
        .iter()
        .find(|path| {
            **path == asked
                || (!asked.contains('/')
                    && std::path::Path::new(path.as_str())
                        .file_name()
                        .is_some_and(|b| b == asked.as_str()))
        })
        .ok_or_else(|| Refusal::NotAllowed(asked.clone()))?
        .clone();
    argv.extend(args.iter().cloned());
    if let Some((_, pattern)) = patterns.iter().find(|(p, _)| *p == program) {
        let whole = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|_| Refusal::Arguments(asked.clone()))?;
        if !whole.is_match(&argv[1..].join(" ")) {
            return Err(Refusal::Arguments(asked));
        }
    }
    argv[0] = program;
    let quoted: Vec<String> = argv.iter().map(|w| quote(w)).collect();
    Ok(quoted.join(" "))
}

/// `w` in single quotes, each `'` written as `'\''`.
fn quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["/bin/ls".into(), "/bin/echo".into(), "/usr/bin/id".into()]
    }

    fn command(script: &str, args: &[String], allowed: &[String]) -> Result<String, Refusal> {
        super::command(script, args, allowed, &[])
    }

    #[test]
    fn plain_words_and_quotes_pass() {
        assert_eq!(
            command("echo hello 'big world' \"it's\"\n", &[], &allowed()),
            Ok(r#"'/bin/echo' 'hello' 'big world' 'it'\''s'"#.to_string())
        );
        assert_eq!(
            command("ls", &["-l".into(), "a b".into()], &allowed()),
            Ok("'/bin/ls' '-l' 'a b'".to_string())
        );
        assert_eq!(
            command("  echo   --color=auto  x=1 ", &[], &allowed()),
            Ok("'/bin/echo' '--color=auto' 'x=1'".to_string())
        );
        assert!(command("/usr/bin/id -u", &[], &allowed()).is_ok());
        // Quotes make shell characters plain text.
        assert_eq!(
            command("echo ';' '$(id)' \"a|b\"", &[], &allowed()),
            Ok(r#"'/bin/echo' ';' '$(id)' 'a|b'"#.to_string())
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
            "whoami",
            "sh -c id",
            "bash",
            "command id",
            "exec ls",
            "FOO=1 ls",
            "./ls",
            "/usr/bin/ls",
            "eval ls",
            "printf -v PATH /tmp",
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
        assert!(m.contains("';' is shell syntax") && m.contains("/bin/ls, /bin/echo, /usr/bin/id"));
    }

    #[test]
    fn arguments_must_match_the_programs_pattern_whole() {
        let patterns = vec![("/bin/ls".to_string(), "-l /srv/[a-z]+".to_string())];
        let ok = super::command("ls -l /srv/www", &[], &allowed(), &patterns);
        assert_eq!(ok, Ok("'/bin/ls' '-l' '/srv/www'".to_string()));
        for bad in ["ls -l /srv/www /etc", "ls /etc", "ls -l /srv/www2", "ls"] {
            assert_eq!(
                super::command(bad, &[], &allowed(), &patterns),
                Err(Refusal::Arguments("ls".into())),
                "{bad}"
            );
        }
        // Other programs have no pattern.
        assert!(super::command("id -u", &[], &allowed(), &patterns).is_ok());
    }

    #[test]
    fn launchers_are_known() {
        for l in [
            "/usr/bin/env",
            "find",
            "/usr/bin/python3.11",
            "xargs",
            "git",
        ] {
            assert!(is_launcher(l), "{l}");
        }
        assert!(!is_launcher("/usr/bin/journalctl"));
    }
}
