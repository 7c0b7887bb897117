//! Which of a client's environment variables a new session takes (`NewSession.environment`):
//! locale and terminal type, as sshd's usual `AcceptEnv LANG LC_*` plus `TERM`, and nothing
//! that changes what programs run or load (`PATH`, `LD_*`, `BASH_ENV`, …). The client filters
//! with this before sending; the daemon applies it again, since any client can send anything.

use std::collections::BTreeMap;

/// Most variables a NewSession may carry.
pub const MAX_VARIABLES: usize = 32;
/// Longest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 256;

/// Whether a client may set variable `name` in a new session.
pub fn accepts_name(name: &str) -> bool {
    matches!(
        name,
        "LANG" | "LANGUAGE" | "TERM" | "COLORTERM" | "NO_COLOR"
    ) || name.strip_prefix("LC_").is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
    })
}

/// Whether `value` may be a session variable's value: short, one line, no NUL.
pub fn accepts_value(value: &str) -> bool {
    value.len() <= MAX_VALUE_LEN && !value.bytes().any(|b| b == 0 || b == b'\n' || b == b'\r')
}

/// What a client sends from its own environment: the accepted variables with acceptable
/// values, at most [`MAX_VARIABLES`] of them.
pub fn forwardable<I>(vars: I) -> BTreeMap<String, String>
where
    I: IntoIterator<Item = (String, String)>,
{
    vars.into_iter()
        .filter(|(k, v)| accepts_name(k) && accepts_value(v))
        .take(MAX_VARIABLES)
        .collect()
}

/// Why a NewSession's `environment` is refused, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a new session takes at most {MAX_VARIABLES} variables from the client, not {0}")]
    TooMany(usize),
    #[error(
        "the value of {0} is longer than {MAX_VALUE_LEN} bytes or holds a NUL or a line break"
    )]
    BadValue(String),
}

/// The variables of a NewSession's `environment` the session gets: names outside
/// [`accepts_name`] are left out (as sshd ignores what `AcceptEnv` does not list); too many
/// variables, or a bad value of an accepted one, refuse the request.
pub fn accepted(sent: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, Refused> {
    if sent.len() > MAX_VARIABLES {
        return Err(Refused::TooMany(sent.len()));
    }
    let mut out = Vec::new();
    for (k, v) in sent {
        if !accepts_name(k) {
            continue;
        }
        if !accepts_value(v) {
            return Err(Refused::BadValue(k.clone()));
        }
        out.push((k.clone(), v.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn locale_and_terminal_type_are_accepted() {
        for name in [
            "LANG",
            "LANGUAGE",
            "LC_ALL",
            "LC_TIME",
            "LC_MEASUREMENT",
            "TERM",
            "COLORTERM",
            "NO_COLOR",
        ] {
            assert!(accepts_name(name), "{name}");
        }
    }

    #[test]
    fn what_changes_what_runs_is_not() {
        for name in [
            "PATH",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "BASH_ENV",
            "ENV",
            "SHELLOPTS",
            "BASHOPTS",
            "PS4",
            "IFS",
            "PROMPT_COMMAND",
            "HOME",
            "SSH_AUTH_SOCK",
            "XDG_RUNTIME_DIR",
            "LC_",
            "LC_lower",
            "LC_A=B",
            "lang",
            "BASH_FUNC_ls%%",
            "TERMINFO",
            "",
        ] {
            assert!(!accepts_name(name), "{name}");
        }
    }

    #[test]
    fn unaccepted_names_are_left_out_and_bad_values_refused() {
        let got = accepted(&map(&[
            ("LANG", "C.UTF-8"),
            ("LD_PRELOAD", "/tmp/x.so"),
            ("BASH_ENV", "/tmp/rc"),
        ]));
        assert_eq!(got, Ok(vec![("LANG".to_string(), "C.UTF-8".to_string())]));
        assert_eq!(
            accepted(&map(&[("TERM", "xterm\nexport X=1")])),
            Err(Refused::BadValue("TERM".into()))
        );
        assert_eq!(
            accepted(&map(&[("LC_ALL", &"x".repeat(MAX_VALUE_LEN + 1))])),
            Err(Refused::BadValue("LC_ALL".into()))
        );
        // A bad value of a variable that would be ignored anyway is ignored with it.
        assert_eq!(accepted(&map(&[("FOO", "a\0b")])), Ok(vec![]));
        let many: BTreeMap<String, String> = (0..=MAX_VARIABLES)
            .map(|i| (format!("LC_X{}", "_".repeat(i)), "C".to_string()))
            .collect();
        assert_eq!(accepted(&many), Err(Refused::TooMany(MAX_VARIABLES + 1)));
    }

    #[test]
    fn a_client_forwards_only_what_the_daemon_takes() {
        let env = vec![
            ("LANG".to_string(), "de_DE.UTF-8".to_string()),
            ("PATH".to_string(), "/evil".to_string()),
            ("TERM".to_string(), "x".repeat(MAX_VALUE_LEN + 1)),
            ("LC_TIME".to_string(), "C".to_string()),
        ];
        let sent = forwardable(env);
        assert_eq!(sent, map(&[("LANG", "de_DE.UTF-8"), ("LC_TIME", "C")]));
        assert_eq!(accepted(&sent).map(|v| v.len()), Ok(2));
    }
}
