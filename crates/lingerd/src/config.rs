//! The daemon's configuration file: a `[server]` table and `[[configuration]]` tables (the
//! named session configurations). Durations are written as "90s", "2h"; sizes as bytes or
//! "1MiB".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use linger_proto::text::{parse_duration, parse_size};
use linger_proto::types::BufferingMode;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub authorized_keys: Option<PathBuf>,
    pub min_idle_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Configuration {
    pub name: String,
    pub shell: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub working_directory: Option<PathBuf>,
    pub idle_timeout: Duration,
    pub max_idle_timeout: Duration,
    pub output_buffering: BufferingMode,
    pub output_buffer_size: u64,
    /// Most bytes `spool` keeps on disk per session.
    pub spool_limit: u64,
}

impl Configuration {
    pub fn default_named(name: &str) -> Self {
        Configuration {
            name: name.to_string(),
            shell: vec!["bash".into(), "--noprofile".into(), "--norc".into()],
            environment: BTreeMap::new(),
            working_directory: None,
            idle_timeout: Duration::from_secs(2 * 3600),
            max_idle_timeout: Duration::from_secs(12 * 3600),
            output_buffering: BufferingMode::Block,
            output_buffer_size: 1 << 20,
            spool_limit: 1 << 30,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub configurations: BTreeMap<String, Configuration>,
}

impl Default for Config {
    fn default() -> Self {
        let mut configurations = BTreeMap::new();
        configurations.insert("default".into(), Configuration::default_named("default"));
        Config {
            server: ServerSettings {
                authorized_keys: None,
                min_idle_timeout: Duration::from_secs(60),
                heartbeat_interval: Duration::from_secs(180),
                heartbeat_timeout: Duration::from_secs(240),
            },
            configurations,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    configuration: Vec<RawConfiguration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    authorized_keys: Option<PathBuf>,
    min_idle_timeout: Option<String>,
    heartbeat_interval: Option<String>,
    heartbeat_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfiguration {
    name: String,
    shell: Option<Vec<String>>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    working_directory: Option<PathBuf>,
    idle_timeout: Option<String>,
    max_idle_timeout: Option<String>,
    output_buffering: Option<String>,
    output_buffer_size: Option<toml::Value>,
    spool_limit: Option<toml::Value>,
}

impl Config {
    /// Reads the file at `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
        let mut config = Config::default();
        let s = &mut config.server;
        s.authorized_keys = raw.server.authorized_keys;
        if let Some(v) = raw.server.min_idle_timeout {
            s.min_idle_timeout = duration("server.min_idle_timeout", &v)?;
        }
        if let Some(v) = raw.server.heartbeat_interval {
            s.heartbeat_interval = duration("server.heartbeat_interval", &v)?;
        }
        if let Some(v) = raw.server.heartbeat_timeout {
            s.heartbeat_timeout = duration("server.heartbeat_timeout", &v)?;
        }
        if s.heartbeat_timeout <= s.heartbeat_interval {
            return Err(format!(
                "server.heartbeat_timeout: {} must be longer than heartbeat_interval {}",
                humantime::format_duration(s.heartbeat_timeout),
                humantime::format_duration(s.heartbeat_interval)
            ));
        }
        for rc in raw.configuration {
            let field = |f: &str| format!("configuration '{}': {f}", rc.name);
            let mut c = Configuration::default_named(&rc.name);
            if let Some(shell) = rc.shell {
                if shell.is_empty() {
                    return Err(format!("{}: must name a program", field("shell")));
                }
                c.shell = shell;
            }
            c.environment = rc.environment;
            c.working_directory = rc.working_directory;
            if let Some(v) = rc.idle_timeout {
                c.idle_timeout = duration(&field("idle_timeout"), &v)?;
            }
            if let Some(v) = rc.max_idle_timeout {
                c.max_idle_timeout = duration(&field("max_idle_timeout"), &v)?;
            }
            if let Some(v) = rc.output_buffering {
                c.output_buffering = v
                    .parse()
                    .map_err(|e: String| format!("{}: {e}", field("output_buffering")))?;
            }
            if let Some(v) = rc.output_buffer_size {
                c.output_buffer_size = size(&field("output_buffer_size"), &v)?;
            }
            if let Some(v) = rc.spool_limit {
                c.spool_limit = size(&field("spool_limit"), &v)?;
            }
            if c.idle_timeout > c.max_idle_timeout {
                return Err(format!(
                    "{}: {} exceeds max_idle_timeout {}",
                    field("idle_timeout"),
                    humantime::format_duration(c.idle_timeout),
                    humantime::format_duration(c.max_idle_timeout)
                ));
            }
            config.configurations.insert(rc.name.clone(), c);
        }
        Ok(config)
    }
}

fn duration(field: &str, v: &str) -> Result<Duration, String> {
    parse_duration(v).map_err(|e| format!("{field}: {e}"))
}

fn size(field: &str, v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
        toml::Value::String(s) => parse_size(s).map_err(|e| format!("{field}: {e}")),
        _ => Err(format!(
            "{field}: expected a positive size such as 1048576 or \"1MiB\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse(
            "[server]\nmin_idle_timeout = \"1s\"\n[[configuration]]\nname = \"small\"\noutput_buffer_size = \"64KiB\"\n",
        )
        .expect("valid config");
        assert_eq!(c.server.min_idle_timeout, Duration::from_secs(1));
        assert!(c.configurations.contains_key("default"));
        assert_eq!(c.configurations["small"].output_buffer_size, 64 * 1024);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("[server]\nbogus = 1\n").expect_err("must fail");
        assert!(err.contains("bogus") && err.contains("line 2"), "{err}");
    }
}
