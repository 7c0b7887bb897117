//! The options of an authorized_keys line, as sshd reads them (sshd(8) "AUTHORIZED_KEYS FILE
//! FORMAT"), decided for one login: each is honoured, or the key is refused. None is ever
//! ignored. I/O-free: the caller gives the peer's address and the time.
//!
//! - `from="PATTERNS"`: the peer's address must match (`*`/`?` wildcards, `ADDR/BITS`, `!`
//!   negations; names are compared as addresses, as sshd does with UseDNS no).
//! - `expiry-time="YYYYMMDD[HHMM[SS]][Z]"`: refused from then on (UTC with `Z`, else the
//!   system's time zone, as sshd).
//! - `principal="NAME"`: linger's own (whom the key acts as).
//! - `no-pty` (and `restrict`, unless a `pty` follows it): commands get no terminal
//!   (`invoke --tty` is refused), as sshd refuses a pty request.
//! - `restrict`, `no-port-forwarding`, `no-agent-forwarding`, `no-X11-forwarding`,
//!   `no-user-rc`: restrictions of things linger never does (it forwards nothing and runs no
//!   rc file).
//! - `port-forwarding`, `agent-forwarding`, `X11-forwarding`, `user-rc`, `permitopen=`,
//!   `permitlisten=`, `tunnel=`, `no-touch-required`: grants of those things, which linger
//!   never gives anyway.
//! - Anything else (`command=`: a forced command linger cannot confine a session to;
//!   `environment=`, `cert-authority`, `principals=`, `verify-required`, unknown options):
//!   the key is refused.

use std::net::IpAddr;

/// What an accepted key's options say about the login.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Granted {
    /// `principal="NAME"`, if given (checked by the caller).
    pub principal: Option<String>,
    /// `no-pty`, or `restrict` without a later `pty`: no terminal for commands.
    pub no_pty: bool,
}

/// Decides a key's options for a login from `peer` at `now_unix` (seconds). `Err` says why
/// the key is refused.
pub fn judge(
    opts: &str,
    peer: IpAddr,
    now_unix: i64,
    local_offset: &dyn Fn(i64) -> i64,
) -> Result<Granted, String> {
    let parsed = ssh_key::authorized_keys::ConfigOpts::new(opts)
        .map_err(|e| format!("its options do not parse: {e}"))?;
    let mut granted = Granted::default();
    for opt in parsed.iter() {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(unquote(v))),
            None => (opt, None),
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("from", Some(patterns)) => {
                if !address_matches(&patterns, peer) {
                    return Err(format!("from=\"{patterns}\" does not match {peer}"));
                }
            }
            ("expiry-time", Some(when)) => {
                let expires = expiry(&when, local_offset)
                    .ok_or_else(|| format!("expiry-time=\"{when}\" is not a valid time"))?;
                if now_unix >= expires {
                    return Err(format!("it expired (expiry-time=\"{when}\")"));
                }
            }
            ("principal", Some(p)) => granted.principal = Some(p),
            ("restrict" | "no-pty", None) => granted.no_pty = true,
            ("pty", None) => granted.no_pty = false,
            (
                "no-port-forwarding"
                | "no-agent-forwarding"
                | "no-x11-forwarding"
                | "no-user-rc"
                | "port-forwarding"
                | "agent-forwarding"
                | "x11-forwarding"
                | "user-rc"
                | "no-touch-required",
                None,
            ) => {}
            ("permitopen" | "permitlisten" | "tunnel", Some(_)) => {}
            ("command", Some(_)) => {
                return Err(
                    "it has a forced command= (linger cannot confine a session to one command; \
                     use a restricted session configuration instead)"
                        .into(),
                )
            }
            (other, _) => return Err(format!("its option '{other}' is not supported")),
        }
    }
    Ok(granted)
}

fn unquote(v: &str) -> String {
    v.strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(v)
        .replace("\\\"", "\"")
}

/// sshd's `from=` list: the address must match a positive pattern and no negated one.
fn address_matches(patterns: &str, peer: IpAddr) -> bool {
    let text = match peer {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.to_string())
            .unwrap_or_else(|| v6.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    };
    let mut matched = false;
    for pattern in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        let hit = match pattern.split_once('/') {
            Some((net, bits)) => cidr_contains(net, bits, &text),
            None => linger_proto::text::wildcard(pattern, &text),
        };
        if hit && negated {
            return false;
        }
        matched |= hit && !negated;
    }
    matched
}

fn cidr_contains(net: &str, bits: &str, addr: &str) -> bool {
    let (Ok(net), Ok(bits), Ok(addr)) = (
        net.parse::<IpAddr>(),
        bits.parse::<u32>(),
        addr.parse::<IpAddr>(),
    ) else {
        return false;
    };
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// `YYYYMMDD[HHMM[SS]][Z]` as Unix seconds; without `Z`, in local time (`local_offset`
/// gives the zone's offset in seconds east of UTC for a UTC instant).
fn expiry(text: &str, local_offset: &dyn Fn(i64) -> i64) -> Option<i64> {
    let (digits, utc) = match text.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (text, false),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|d| d.parse::<i64>().ok());
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (
        num(8..10).unwrap_or(0),
        num(10..12).unwrap_or(0),
        num(12..14).unwrap_or(0),
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    Some(if utc {
        seconds
    } else {
        seconds - local_offset(seconds)
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The system time zone's offset from UTC, in seconds, at Unix time `t`.
pub fn local_offset(t: i64) -> i64 {
    let time = t as libc::time_t;
    // SAFETY: localtime_r writes only into the struct it is given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000; // 2026-11-30
    fn utc(_: i64) -> i64 {
        0
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn ok(opts: &str, peer: &str) -> Result<Granted, String> {
        judge(opts, ip(peer), NOW, &utc)
    }

    #[test]
    fn from_patterns_match_as_sshd() {
        assert!(ok(r#"from="127.0.0.1""#, "127.0.0.1").is_ok());
        assert!(ok(r#"from="10.0.0.*,127.0.0.?""#, "127.0.0.5").is_ok());
        assert!(ok(r#"from="10.1.0.0/16""#, "10.1.200.3").is_ok());
        assert!(ok(r#"from="10.1.0.0/16""#, "10.2.0.3").is_err());
        assert!(ok(r#"from="*,!127.0.0.2""#, "127.0.0.2").is_err());
        assert!(ok(r#"from="*,!127.0.0.2""#, "127.0.0.3").is_ok());
        assert!(ok(r#"from="::ffff:0:0/96""#, "::1").is_err());
        assert!(ok(r#"from="127.0.0.1""#, "::ffff:127.0.0.1").is_ok());
        assert!(ok(r#"from="host.example""#, "127.0.0.1").is_err());
    }

    #[test]
    fn an_expired_key_is_refused() {
        assert!(ok(r#"expiry-time="20260101""#, "127.0.0.1").is_err());
        assert!(ok(r#"expiry-time="20991231235959Z""#, "127.0.0.1").is_ok());
        assert!(ok(r#"expiry-time="2026""#, "127.0.0.1").is_err());
        assert_eq!(expiry("19700102", &utc), Some(86_400));
        assert_eq!(expiry("197001010001Z", &|_| 3600), Some(60));
        assert_eq!(expiry("197001010100", &|_| 3600), Some(0));
    }

    #[test]
    fn forced_commands_and_unknown_options_refuse_the_key() {
        assert!(ok(r#"command="/bin/backup""#, "127.0.0.1")
            .unwrap_err()
            .contains("forced command"));
        assert!(ok(r#"environment="A=b""#, "127.0.0.1").is_err());
        assert!(ok("cert-authority", "127.0.0.1").is_err());
        assert!(ok("frobnicate", "127.0.0.1").is_err());
    }

    #[test]
    fn restrictions_linger_never_lifts_are_honoured() {
        let g = ok(
            r#"restrict,principal="ops",no-agent-forwarding"#,
            "127.0.0.1",
        )
        .unwrap();
        assert_eq!(g.principal.as_deref(), Some("ops"));
        assert!(ok("restrict,pty,no-user-rc", "127.0.0.1").is_ok());
        assert_eq!(ok("", "127.0.0.1").unwrap(), Granted::default());
    }

    #[test]
    fn no_pty_and_restrict_deny_a_terminal_and_a_later_pty_grants_it() {
        let no_pty = |opts: &str| ok(opts, "127.0.0.1").unwrap().no_pty;
        assert!(!no_pty(""));
        assert!(no_pty("no-pty"));
        assert!(no_pty("restrict"));
        assert!(!no_pty("restrict,pty"));
        assert!(no_pty("pty,no-pty"));
    }
}
