//! Whether a Unix account may log in, as sshd decides it before any session: a system
//! daemon refuses a principal whose shell says the account is not for logins, whose password
//! is locked, or whose account has expired. (Keys still have to be authorized: this only
//! takes logins away.)

use std::ffi::CString;

/// Shells that mean "no logins" (nologin(8), false(1)).
const NO_LOGIN_SHELLS: &[&str] = &["nologin", "false"];

/// `Ok` if `name` may log in; otherwise why not.
pub fn usable(name: &str) -> Result<(), String> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("cannot look it up: {e}"))?
        .ok_or_else(|| "no such user".to_string())?;
    let shell = user.shell.display().to_string();
    let base = user
        .shell
        .file_name()
        .and_then(|b| b.to_str())
        .unwrap_or_default();
    if NO_LOGIN_SHELLS.contains(&base) {
        return Err(format!("its shell is {shell}"));
    }
    if let Some(shadow) = shadow(name) {
        if shadow.locked {
            return Err("its password is locked".into());
        }
        if shadow.expired {
            return Err("the account has expired".into());
        }
    }
    Ok(())
}

struct Shadow {
    locked: bool,
    expired: bool,
}

/// The account's shadow entry as far as logins go; `None` when it cannot be read (a daemon
/// that is not root, or no entry).
fn shadow(name: &str) -> Option<Shadow> {
    let c = CString::new(name).ok()?;
    // SAFETY: getspnam returns a pointer into static storage (or null) that stays valid
    // until the next call; everything needed is copied out before returning. Only a system
    // daemon calls this, from one blocking-pool thread per attempt, so the rare concurrent
    // call could at worst read another entry's fields: the lock below prevents that.
    let _g = SHADOW_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    unsafe {
        let sp = libc::getspnam(c.as_ptr());
        if sp.is_null() {
            return None;
        }
        let pwdp = if (*sp).sp_pwdp.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr((*sp).sp_pwdp)
                .to_string_lossy()
                .into_owned()
        };
        let expire = (*sp).sp_expire;
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_secs() / 86_400) as libc::c_long)
            .unwrap_or(0);
        Some(Shadow {
            locked: locked(&pwdp),
            expired: expire >= 0 && today >= expire,
        })
    }
}

static SHADOW_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `passwd -l` and `usermod -L` put `!` before the hash; a bare `!` (or `*`) is an account
/// that never had a password, which key logins do not need (as sshd with PAM).
fn locked(pwdp: &str) -> bool {
    (pwdp.starts_with('!') && pwdp.len() > 1) || pwdp.starts_with("*LK*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_password_is_told_from_none_at_all() {
        assert!(locked("!$6$salt$hash"));
        assert!(locked("!!"));
        assert!(locked("*LK*"));
        assert!(!locked("!"));
        assert!(!locked("*"));
        assert!(!locked("$6$salt$hash"));
        assert!(!locked(""));
    }
}
