//! The client's default options (`options.toml` in the client's config directory; SPEC
//! §11, the seeds' `$PSSessionOption`). Flags given to a command override them; they
//! override the server's session configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use linger_proto::text::{parse_duration, parse_size};
use linger_proto::types::BufferingMode;

use crate::error::{Error, Result};

/// Every key the options file accepts.
pub const KEYS: &[&str] = &[
    "open_timeout",
    "operation_timeout",
    "cancel_timeout",
    "idle_timeout",
    "output_buffering",
    "max_received_data_per_command",
    "heartbeat_interval",
    "heartbeat_timeout",
    "reconnect_window",
    "max_connection_retry",
    "compression",
    "identity_file",
    "host_key_checking",
    "ssh_command",
    "ssh_remote_command",
];

/// Where an option's value came from (`linger option show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionSource {
    Default,
    /// The options file.
    File(PathBuf),
    /// `--option KEY=VALUE`.
    CommandLine,
    /// A command's own flag (`--identity`, `--idle-timeout`…).
    Flag,
}

impl std::fmt::Display for OptionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionSource::Default => f.write_str("default"),
            OptionSource::File(p) => write!(f, "{}", p.display()),
            OptionSource::CommandLine => f.write_str("--option"),
            OptionSource::Flag => f.write_str("flag"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub open_timeout: Duration,
    pub operation_timeout: Duration,
    pub cancel_timeout: Duration,
    /// `None`: the session configuration's.
    pub idle_timeout: Option<Duration>,
    /// `None`: the session configuration's.
    pub output_buffering: Option<BufferingMode>,
    pub max_received_data_per_command: Option<u64>,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub reconnect_window: Duration,
    pub max_connection_retry: u32,
    pub compression: bool,
    pub identity_file: Option<PathBuf>,
    pub host_key_checking: Option<String>,
    pub ssh_command: String,
    pub ssh_remote_command: String,
    /// Where each key's value came from; keys not listed are defaults.
    pub sources: std::collections::BTreeMap<String, OptionSource>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            open_timeout: Duration::from_secs(180),
            operation_timeout: Duration::from_secs(180),
            cancel_timeout: Duration::from_secs(60),
            idle_timeout: None,
            output_buffering: None,
            max_received_data_per_command: None,
            heartbeat_interval: Duration::from_secs(180),
            heartbeat_timeout: Duration::from_secs(240),
            reconnect_window: Duration::from_secs(240),
            max_connection_retry: 5,
            compression: true,
            identity_file: None,
            host_key_checking: None,
            ssh_command: "ssh".into(),
            ssh_remote_command: "lingerd --stdio".into(),
            sources: std::collections::BTreeMap::new(),
        }
    }
}

impl Options {
    /// Reads `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Options> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Options::default()),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        let mut o = Options::parse(&text)
            .map_err(|why| Error::Usage(format!("{}: {why}", path.display())))?;
        for source in o.sources.values_mut() {
            *source = OptionSource::File(path.to_path_buf());
        }
        Ok(o)
    }

    /// Applies `--option KEY=VALUE` settings, which override the options file.
    pub fn apply_command_line(&mut self, settings: &[String]) -> Result<()> {
        for s in settings {
            let (key, value) = s
                .split_once('=')
                .ok_or_else(|| Error::Usage(format!("--option {s}: expected KEY=VALUE")))?;
            self.set(key.trim(), &toml::Value::String(value.trim().to_string()))
                .map_err(|why| Error::Usage(format!("--option {s}: {why}")))?;
            self.sources
                .insert(key.trim().to_string(), OptionSource::CommandLine);
        }
        Ok(())
    }

    /// Where `key`'s value came from.
    pub fn source(&self, key: &str) -> OptionSource {
        self.sources
            .get(key)
            .cloned()
            .unwrap_or(OptionSource::Default)
    }

    /// `key`'s effective value as text (`linger option show`).
    pub fn shown(&self, key: &str) -> String {
        let d = |d: Duration| humantime::format_duration(d).to_string();
        match key {
            "open_timeout" => d(self.open_timeout),
            "operation_timeout" => d(self.operation_timeout),
            "cancel_timeout" => d(self.cancel_timeout),
            "idle_timeout" => self
                .idle_timeout
                .map(d)
                .unwrap_or_else(|| "(the configuration's)".into()),
            "output_buffering" => self
                .output_buffering
                .map(|m| m.as_str().to_string())
                .unwrap_or_else(|| "(the configuration's)".into()),
            "max_received_data_per_command" => self
                .max_received_data_per_command
                .map(|n| n.to_string())
                .unwrap_or_else(|| "(unlimited)".into()),
            "heartbeat_interval" => d(self.heartbeat_interval),
            "heartbeat_timeout" => d(self.heartbeat_timeout),
            "reconnect_window" => d(self.reconnect_window),
            "max_connection_retry" => self.max_connection_retry.to_string(),
            "compression" => if self.compression { "on" } else { "off" }.to_string(),
            "identity_file" => self
                .identity_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(ssh-agent, then ~/.ssh/id_*)".into()),
            "host_key_checking" => self
                .host_key_checking
                .clone()
                .unwrap_or_else(|| "(ask on a terminal, else strict)".into()),
            "ssh_command" => self.ssh_command.clone(),
            "ssh_remote_command" => self.ssh_remote_command.clone(),
            _ => String::new(),
        }
    }

    pub fn parse(text: &str) -> std::result::Result<Options, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_string())?;
        let mut o = Options::default();
        for (key, value) in &table {
            o.set(key, value)?;
            o.sources.insert(
                key.clone(),
                OptionSource::File(PathBuf::from("options.toml")),
            );
        }
        Ok(o)
    }

    /// Sets one option from a TOML value (strings are accepted for every kind, so that
    /// `--option KEY=VALUE` can share this).
    pub fn set(&mut self, key: &str, value: &toml::Value) -> std::result::Result<(), String> {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let bad = |why: String| format!("option {key}: {why}");
        let duration = || parse_duration(&text).map_err(bad);
        match key {
            "open_timeout" => self.open_timeout = duration()?,
            "operation_timeout" => self.operation_timeout = duration()?,
            "cancel_timeout" => self.cancel_timeout = duration()?,
            "idle_timeout" => self.idle_timeout = Some(duration()?),
            "output_buffering" => self.output_buffering = Some(text.parse().map_err(bad)?),
            "max_received_data_per_command" => {
                self.max_received_data_per_command = Some(parse_size(&text).map_err(bad)?)
            }
            "heartbeat_interval" => self.heartbeat_interval = duration()?,
            "heartbeat_timeout" => self.heartbeat_timeout = duration()?,
            "reconnect_window" => self.reconnect_window = duration()?,
            "max_connection_retry" => {
                self.max_connection_retry = text
                    .parse()
                    .map_err(|_| bad(format!("'{text}' is not a count")))?
            }
            "compression" => {
                self.compression = match text.as_str() {
                    "true" | "on" | "yes" => true,
                    "false" | "off" | "no" => false,
                    _ => return Err(bad(format!("'{text}' is not on or off"))),
                }
            }
            "identity_file" => self.identity_file = Some(PathBuf::from(text)),
            "host_key_checking" => match text.as_str() {
                "ask" | "accept-new" | "strict" => self.host_key_checking = Some(text),
                _ => return Err(bad(format!("'{text}' is not ask, accept-new or strict"))),
            },
            "ssh_command" => self.ssh_command = text,
            "ssh_remote_command" => self.ssh_remote_command = text,
            _ => {
                return Err(format!(
                    "unknown option '{key}' (known: {})",
                    KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }
}

impl Options {
    /// Whether this command gave `key` itself (a flag or `--option`), over the file.
    fn given_here(&self, key: &str) -> bool {
        matches!(
            self.sources.get(key),
            Some(OptionSource::Flag | OptionSource::CommandLine)
        )
    }

    /// The transport options this command gave itself: what a session it creates or
    /// connects remembers (SPEC §3).
    pub fn reach(&self) -> crate::registry::Reach {
        crate::registry::Reach {
            identity_file: self
                .identity_file
                .clone()
                .filter(|_| self.given_here("identity_file")),
            ssh_command: self
                .given_here("ssh_command")
                .then(|| self.ssh_command.clone()),
            ssh_remote_command: self
                .given_here("ssh_remote_command")
                .then(|| self.ssh_remote_command.clone()),
            host_key_checking: self
                .host_key_checking
                .clone()
                .filter(|_| self.given_here("host_key_checking")),
        }
    }

    /// These options for a session reached with `reach`: what it remembers, except what
    /// this command gives itself.
    pub fn reached(&self, reach: &crate::registry::Reach) -> Options {
        let mut o = self.clone();
        if let Some(v) = reach
            .identity_file
            .as_ref()
            .filter(|_| !self.given_here("identity_file"))
        {
            o.identity_file = Some(v.clone());
        }
        if let Some(v) = reach
            .ssh_command
            .as_ref()
            .filter(|_| !self.given_here("ssh_command"))
        {
            o.ssh_command = v.clone();
        }
        if let Some(v) = reach
            .ssh_remote_command
            .as_ref()
            .filter(|_| !self.given_here("ssh_remote_command"))
        {
            o.ssh_remote_command = v.clone();
        }
        if let Some(v) = reach
            .host_key_checking
            .as_ref()
            .filter(|_| !self.given_here("host_key_checking"))
        {
            o.host_key_checking = Some(v.clone());
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §3: a session remembers the transport options its creating command gave, and a
    /// later command uses them unless it gives its own; the options file's are not copied.
    #[test]
    fn a_session_remembers_how_it_was_reached() {
        let mut made = Options {
            identity_file: Some(PathBuf::from("/keys/k")),
            host_key_checking: Some("yes".into()),
            ..Default::default()
        };
        made.sources
            .insert("identity_file".into(), OptionSource::Flag);
        made.sources.insert(
            "host_key_checking".into(),
            OptionSource::File(PathBuf::from("o.toml")),
        );
        let reach = made.reach();
        assert_eq!(
            reach.identity_file.as_deref(),
            Some(std::path::Path::new("/keys/k"))
        );
        assert_eq!(reach.host_key_checking, None);
        assert_eq!(reach.ssh_command, None);

        let later = Options::default();
        assert_eq!(
            later.reached(&reach).identity_file.as_deref(),
            Some(std::path::Path::new("/keys/k"))
        );
        let mut own = Options {
            identity_file: Some(PathBuf::from("/keys/other")),
            ..Default::default()
        };
        own.sources
            .insert("identity_file".into(), OptionSource::Flag);
        assert_eq!(
            own.reached(&reach).identity_file.as_deref(),
            Some(std::path::Path::new("/keys/other"))
        );
        assert!(Options::default().reach().is_empty());
    }

    #[test]
    fn defaults_values_and_unknown_keys() {
        let o = Options::parse(
            "idle_timeout = \"48h\"\noutput_buffering = \"drop\"\ncancel_timeout = 5\n",
        )
        .expect("valid");
        assert_eq!(o.idle_timeout, Some(Duration::from_secs(48 * 3600)));
        assert_eq!(o.output_buffering, Some(BufferingMode::Drop));
        assert_eq!(o.cancel_timeout, Duration::from_secs(5));
        assert_eq!(o.open_timeout, Duration::from_secs(180));
        let err = Options::parse("idle_timout = \"1h\"\n").expect_err("typo");
        assert!(err.contains("unknown option 'idle_timout'"), "{err}");
        let err = Options::parse("output_buffering = \"sometimes\"\n").expect_err("bad mode");
        assert!(err.contains("output_buffering"), "{err}");
    }
}
