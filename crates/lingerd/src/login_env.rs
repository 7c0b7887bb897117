//! The environment a session's shell starts with, built as sshd builds a login's and never
//! taken from the daemon's own environment (which is whatever shell first started it: its
//! `SSH_AUTH_SOCK`, `TERM`, `XDG_*`, `PATH`). In order, later names replacing earlier ones:
//! the account's `HOME USER LOGNAME SHELL MAIL`, a standard `PATH` and `XDG_RUNTIME_DIR`
//! when the user has one; the client's locale and terminal type
//! ([`linger_proto::environment`]); the configuration's `environment` (as sshd's `SetEnv`,
//! it wins, and may set `PATH`). The daemon adds its own `LINGER_*` variables after these.
//!
//! I/O-free: the caller looks the account up.

/// `PATH` of a new session unless the configuration sets one (Debian's login default for
/// an administrator's tools as well as a user's).
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// The Unix account a session runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub home: String,
    pub shell: String,
    /// `/run/user/UID` when it exists and belongs to the user (systemd-logind made it).
    pub runtime_dir: Option<String>,
}

/// The login variables of `account`.
pub fn login(account: &Account) -> Vec<(String, String)> {
    let mut env = vec![
        ("HOME".to_string(), account.home.clone()),
        ("USER".to_string(), account.name.clone()),
        ("LOGNAME".to_string(), account.name.clone()),
        ("SHELL".to_string(), account.shell.clone()),
        ("MAIL".to_string(), format!("/var/mail/{}", account.name)),
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
    ];
    if let Some(dir) = &account.runtime_dir {
        env.push(("XDG_RUNTIME_DIR".to_string(), dir.clone()));
    }
    env
}

/// `login`, then the client's accepted variables, then the configuration's: each name once,
/// the last value given for it winning.
pub fn compose<'a>(
    login: Vec<(String, String)>,
    from_client: Vec<(String, String)>,
    configured: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let configured = configured.into_iter().map(|(k, v)| (k.clone(), v.clone()));
    for (k, v) in login.into_iter().chain(from_client).chain(configured) {
        match env.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => env.push((k, v)),
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn account() -> Account {
        Account {
            name: "alice".into(),
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
            runtime_dir: None,
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_login_has_the_accounts_variables_and_a_standard_path() {
        let env = login(&account());
        assert_eq!(get(&env, "HOME"), Some("/home/alice"));
        assert_eq!(get(&env, "USER"), Some("alice"));
        assert_eq!(get(&env, "LOGNAME"), Some("alice"));
        assert_eq!(get(&env, "SHELL"), Some("/bin/bash"));
        assert_eq!(get(&env, "MAIL"), Some("/var/mail/alice"));
        assert_eq!(get(&env, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&env, "XDG_RUNTIME_DIR"), None);
        let with_dir = login(&Account {
            runtime_dir: Some("/run/user/1000".into()),
            ..account()
        });
        assert_eq!(get(&with_dir, "XDG_RUNTIME_DIR"), Some("/run/user/1000"));
    }

    #[test]
    fn the_configuration_wins_over_the_client_which_wins_over_the_login() {
        let client = vec![
            ("LANG".to_string(), "de_DE.UTF-8".to_string()),
            ("TERM".to_string(), "xterm".to_string()),
        ];
        let configured: BTreeMap<String, String> = [
            ("PATH", "/opt/tools/bin:/usr/bin"),
            ("LANG", "C.UTF-8"),
            ("EDITOR", "vi"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = compose(login(&account()), client, &configured);
        assert_eq!(get(&env, "PATH"), Some("/opt/tools/bin:/usr/bin"));
        assert_eq!(get(&env, "LANG"), Some("C.UTF-8"));
        assert_eq!(get(&env, "TERM"), Some("xterm"));
        assert_eq!(get(&env, "EDITOR"), Some("vi"));
        let mut names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "each name once");
    }
}
