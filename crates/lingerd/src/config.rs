//! The daemon's configuration: a main file (`lingerd.toml`) and the drop-ins beside it
//! (`lingerd.d/*.toml`, in name order), each with an optional `[server]` table (later files
//! override single keys) and `[[configuration]]` tables (the named session configurations,
//! SPEC §10; a name may be defined once). Durations are written as "90s", "2h"; sizes as
//! bytes or "1MiB". Every error names the file, the line and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use linger_proto::text::{parse_duration, parse_size};
use linger_proto::types::BufferingMode;
use serde::Deserialize;
use toml::Spanned;

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

#[derive(Debug, Clone, PartialEq)]
pub struct Configuration {
    pub name: String,
    pub shell: Vec<String>,
    /// A script the shell sources when the session starts, before any command.
    pub startup: Option<PathBuf>,
    pub environment: BTreeMap<String, String>,
    pub working_directory: Option<PathBuf>,
    pub idle_timeout: Duration,
    pub max_idle_timeout: Duration,
    pub output_buffering: BufferingMode,
    pub output_buffer_size: u64,
    /// Most bytes `spool` keeps on disk per session.
    pub spool_limit: u64,
    /// Live sessions of this configuration one principal may have.
    pub max_sessions_per_user: u32,
    pub max_memory_per_session: u64,
    pub max_processes_per_session: Option<u32>,
    /// The Unix user sessions run as (a system daemon), whoever owns them.
    pub run_as: Option<String>,
    /// Set: the session runs only these programs (absolute paths, resolved at load), as
    /// argv, with no shell syntax.
    pub restricted: Option<Vec<String>>,
    /// Per restricted program (absolute path): a regular expression its arguments, joined
    /// by single spaces, must match whole.
    pub arguments: Vec<(String, String)>,
    /// Set (either): only these principals, and members of these Unix groups, may use the
    /// configuration; others are told it does not exist. Required with `run_as`.
    pub allowed_principals: Option<Vec<String>>,
    pub allowed_groups: Option<Vec<String>>,
}

impl Configuration {
    /// What `ListConfigurations` shows of it.
    pub fn info(&self) -> linger_proto::types::ConfigurationInfo {
        linger_proto::types::ConfigurationInfo {
            name: self.name.clone(),
            shell: self.shell.clone(),
            startup: self.startup.as_ref().map(|p| p.display().to_string()),
            working_directory: self
                .working_directory
                .as_ref()
                .map(|p| p.display().to_string()),
            idle_timeout_ms: linger_proto::duration::millis(self.idle_timeout),
            max_idle_timeout_ms: linger_proto::duration::millis(self.max_idle_timeout),
            output_buffering: self.output_buffering,
            output_buffer_size: self.output_buffer_size,
            spool_limit: self.spool_limit,
            max_sessions_per_user: self.max_sessions_per_user,
            max_memory_per_session: self.max_memory_per_session,
            max_processes_per_session: self.max_processes_per_session,
            run_as: self.run_as.clone(),
            restricted: self.restricted.clone(),
        }
    }

    pub fn default_named(name: &str) -> Self {
        Configuration {
            name: name.to_string(),
            shell: vec!["bash".into(), "--noprofile".into(), "--norc".into()],
            startup: None,
            environment: BTreeMap::new(),
            working_directory: None,
            idle_timeout: Duration::from_secs(2 * 3600),
            max_idle_timeout: Duration::from_secs(12 * 3600),
            output_buffering: BufferingMode::Block,
            output_buffer_size: 1 << 20,
            spool_limit: 1 << 30,
            max_sessions_per_user: 25,
            max_memory_per_session: 1 << 30,
            max_processes_per_session: None,
            run_as: None,
            restricted: None,
            arguments: Vec::new(),
            allowed_principals: None,
            allowed_groups: None,
        }
    }

    /// Whether `principal` (a member of `groups`) may use this configuration.
    pub fn admits(&self, principal: &str, groups: &[String]) -> bool {
        if self.allowed_principals.is_none() && self.allowed_groups.is_none() {
            return true;
        }
        self.allowed_principals
            .as_ref()
            .is_some_and(|names| names.iter().any(|n| n == principal))
            || self
                .allowed_groups
                .as_ref()
                .is_some_and(|allowed| allowed.iter().any(|g| groups.contains(g)))
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
    server: Option<RawServer>,
    #[serde(default)]
    configuration: Vec<RawConfiguration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    authorized_keys: Option<PathBuf>,
    min_idle_timeout: Option<Spanned<String>>,
    heartbeat_interval: Option<Spanned<String>>,
    heartbeat_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfiguration {
    name: Spanned<String>,
    shell: Option<Spanned<Vec<String>>>,
    startup: Option<Spanned<PathBuf>>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    working_directory: Option<Spanned<PathBuf>>,
    idle_timeout: Option<Spanned<String>>,
    max_idle_timeout: Option<Spanned<String>>,
    output_buffering: Option<Spanned<String>>,
    output_buffer_size: Option<Spanned<toml::Value>>,
    spool_limit: Option<Spanned<toml::Value>>,
    max_sessions_per_user: Option<Spanned<i64>>,
    max_memory_per_session: Option<Spanned<toml::Value>>,
    max_processes_per_session: Option<Spanned<i64>>,
    run_as: Option<Spanned<String>>,
    restricted: Option<Spanned<Vec<String>>>,
    allowed_principals: Option<Spanned<Vec<String>>>,
    allowed_groups: Option<Spanned<Vec<String>>>,
    /// Restricted programs that run others, accepted knowingly.
    allow_launchers: Option<Spanned<Vec<String>>>,
    /// Restricted program (as written in `restricted`) -> pattern for its arguments.
    arguments: Option<Spanned<BTreeMap<String, String>>>,
}

/// Where restricted programs named without a slash are found (never the daemon's own PATH).
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A restricted program as an absolute path to an executable regular file: the path itself,
/// or a bare name looked up in [`SAFE_PATH`].
fn resolve_program(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = Path::new(program);
        return (p.is_absolute() && executable(p)).then(|| program.to_string());
    }
    SAFE_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| executable(p))
        .map(|p| p.display().to_string())
}

/// The drop-in directory of a main configuration file: `lingerd.toml` -> `lingerd.d`.
pub fn drop_in_dir(main: &Path) -> PathBuf {
    main.with_extension("d")
}

/// One file's text and where it came from, to place errors.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// An error at `span` of this file, about `field`.
    fn err(&self, span: std::ops::Range<usize>, field: &str, why: &str) -> ConfigError {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            message: format!("line {line}: {field}: {why}"),
        }
    }

    fn duration(&self, field: &str, v: &Spanned<String>) -> Result<Duration, ConfigError> {
        parse_duration(v.get_ref()).map_err(|e| self.err(v.span(), field, &e))
    }

    fn size(&self, field: &str, v: &Spanned<toml::Value>) -> Result<u64, ConfigError> {
        match v.get_ref() {
            toml::Value::Integer(n) if *n > 0 => Ok(*n as u64),
            toml::Value::String(s) => parse_size(s).map_err(|e| self.err(v.span(), field, &e)),
            _ => Err(self.err(
                v.span(),
                field,
                "expected a positive size such as 1048576 or \"1MiB\"",
            )),
        }
    }

    fn count(&self, field: &str, v: &Spanned<i64>) -> Result<u32, ConfigError> {
        u32::try_from(*v.get_ref())
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| self.err(v.span(), field, "expected a positive whole number"))
    }
}

impl Config {
    /// Reads the main file at `path` (missing: the defaults) and its drop-ins.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut files = Vec::new();
        match std::fs::read_to_string(path) {
            Ok(t) => files.push((path.to_path_buf(), t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        let dir = drop_in_dir(path);
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut names: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                names.sort();
                for p in names {
                    let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                        path: p.clone(),
                        source,
                    })?;
                    files.push((p, text));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ConfigError::Read { path: dir, source }),
        }
        Config::from_files(&files)
    }

    /// One file's text, as if it were the whole configuration (tests, and error messages
    /// naming `lingerd.toml`).
    pub fn parse(text: &str) -> Result<Config, String> {
        Config::from_files(&[(PathBuf::from("lingerd.toml"), text.to_string())])
            .map_err(|e| e.to_string())
    }

    fn from_files(files: &[(PathBuf, String)]) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        // Where each configuration was defined, to name both files of a duplicate.
        let mut defined: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut heartbeat_at: Option<(PathBuf, String)> = None;
        for (path, text) in files {
            let src = Source { path, text };
            let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError::Invalid {
                path: path.clone(),
                message: e.to_string().trim().replace('\n', " "),
            })?;
            if let Some(rs) = raw.server {
                let s = &mut config.server;
                if let Some(p) = rs.authorized_keys {
                    s.authorized_keys = Some(p);
                }
                if let Some(v) = &rs.min_idle_timeout {
                    s.min_idle_timeout = src.duration("server.min_idle_timeout", v)?;
                }
                if let Some(v) = &rs.heartbeat_interval {
                    s.heartbeat_interval = src.duration("server.heartbeat_interval", v)?;
                    heartbeat_at = Some((path.clone(), text.clone()));
                }
                if let Some(v) = &rs.heartbeat_timeout {
                    s.heartbeat_timeout = src.duration("server.heartbeat_timeout", v)?;
                    heartbeat_at = Some((path.clone(), text.clone()));
                }
            }
            for rc in raw.configuration {
                let name = rc.name.get_ref().clone();
                if let Some(first) = defined.get(&name) {
                    return Err(src.err(
                        rc.name.span(),
                        "configuration.name",
                        &format!("'{name}' is already defined in {}", first.display()),
                    ));
                }
                let c = configuration(&src, rc)?;
                defined.insert(name.clone(), path.clone());
                config.configurations.insert(name, c);
            }
        }
        let s = &config.server;
        if s.heartbeat_timeout <= s.heartbeat_interval {
            let path = heartbeat_at
                .map(|(p, _)| p)
                .unwrap_or_else(|| PathBuf::from("lingerd.toml"));
            return Err(ConfigError::Invalid {
                path,
                message: format!(
                    "server.heartbeat_timeout: {} must be longer than heartbeat_interval {}",
                    humantime::format_duration(s.heartbeat_timeout),
                    humantime::format_duration(s.heartbeat_interval)
                ),
            });
        }
        Ok(config)
    }
}

/// Builds one `[[configuration]]`, checking each field.
fn configuration(src: &Source<'_>, rc: RawConfiguration) -> Result<Configuration, ConfigError> {
    let name = rc.name.get_ref().clone();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(src.err(
            rc.name.span(),
            "configuration.name",
            &format!("'{name}': use 1 to 64 letters, digits, '.', '_' or '-'"),
        ));
    }
    let field = |f: &str| format!("configuration '{name}' {f}");
    let mut c = Configuration::default_named(&name);
    if let Some(shell) = rc.shell {
        if shell.get_ref().is_empty() || shell.get_ref()[0].is_empty() {
            return Err(src.err(shell.span(), &field("shell"), "must name a program"));
        }
        c.shell = shell.into_inner();
    }
    if let Some(startup) = rc.startup {
        if !startup.get_ref().is_absolute() {
            return Err(src.err(
                startup.span(),
                &field("startup"),
                "must be an absolute path to a script",
            ));
        }
        c.startup = Some(startup.into_inner());
    }
    c.environment = rc.environment;
    if let Some(dir) = rc.working_directory {
        if !dir.get_ref().is_absolute() {
            return Err(src.err(dir.span(), &field("working_directory"), "must be absolute"));
        }
        c.working_directory = Some(dir.into_inner());
    }
    if let Some(v) = &rc.idle_timeout {
        c.idle_timeout = src.duration(&field("idle_timeout"), v)?;
    }
    if let Some(v) = &rc.max_idle_timeout {
        c.max_idle_timeout = src.duration(&field("max_idle_timeout"), v)?;
    }
    if let Some(v) = &rc.output_buffering {
        c.output_buffering = v
            .get_ref()
            .parse()
            .map_err(|e: String| src.err(v.span(), &field("output_buffering"), &e))?;
    }
    if let Some(v) = &rc.output_buffer_size {
        c.output_buffer_size = src.size(&field("output_buffer_size"), v)?;
    }
    if let Some(v) = &rc.spool_limit {
        c.spool_limit = src.size(&field("spool_limit"), v)?;
    }
    if let Some(v) = &rc.max_sessions_per_user {
        c.max_sessions_per_user = src.count(&field("max_sessions_per_user"), v)?;
    }
    if let Some(v) = &rc.max_memory_per_session {
        c.max_memory_per_session = src.size(&field("max_memory_per_session"), v)?;
    }
    if let Some(v) = &rc.max_processes_per_session {
        c.max_processes_per_session = Some(src.count(&field("max_processes_per_session"), v)?);
    }
    if let Some(v) = rc.run_as {
        if nix::unistd::User::from_name(v.get_ref())
            .ok()
            .flatten()
            .is_none()
        {
            return Err(src.err(
                v.span(),
                &field("run_as"),
                &format!("no user named '{}' on this host", v.get_ref()),
            ));
        }
        if rc.allowed_principals.is_none() && rc.allowed_groups.is_none() {
            return Err(src.err(
                v.span(),
                &field("run_as"),
                "needs allowed_principals or allowed_groups: open to all, every principal would \
                 run as one user and could reach the others' sessions",
            ));
        }
        c.run_as = Some(v.into_inner());
    }
    for (list, slot, what) in [
        (
            &rc.allowed_principals,
            &mut c.allowed_principals,
            "allowed_principals",
        ),
        (&rc.allowed_groups, &mut c.allowed_groups, "allowed_groups"),
    ] {
        if let Some(list) = list {
            if let Some(bad) = list
                .get_ref()
                .iter()
                .find(|n| n.is_empty() || n.chars().any(|ch| ch.is_whitespace() || ch.is_control()))
            {
                return Err(src.err(list.span(), &field(what), &format!("'{bad}' is not a name")));
            }
            *slot = Some(list.get_ref().clone());
        }
    }
    if let Some(list) = rc.restricted {
        let launchers_ok: Vec<String> = rc
            .allow_launchers
            .as_ref()
            .map(|l| l.get_ref().clone())
            .unwrap_or_default();
        let mut resolved = Vec::new();
        for program in list.get_ref() {
            if program.is_empty()
                || program
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control())
            {
                return Err(src.err(
                    list.span(),
                    &field("restricted"),
                    &format!("'{program}' is not a program name or path"),
                ));
            }
            let path = resolve_program(program).ok_or_else(|| {
                src.err(
                    list.span(),
                    &field("restricted"),
                    &format!(
                        "'{program}' is not an executable file (names are looked up in {SAFE_PATH})"
                    ),
                )
            })?;
            if crate::restricted::is_launcher(&path) {
                if !launchers_ok.iter().any(|l| l == program) {
                    return Err(src.err(
                        list.span(),
                        &field("restricted"),
                        &format!(
                            "'{program}' runs other programs as its arguments say, so a restricted session allowing it allows anything; name it in allow_launchers too to accept that"
                        ),
                    ));
                }
                tracing::warn!(
                    configuration = %name,
                    "restricted session configuration allows the launcher '{program}': its sessions can run any program"
                );
            }
            resolved.push((program.clone(), path));
        }
        if let Some(patterns) = &rc.arguments {
            for (program, pattern) in patterns.get_ref() {
                let Some((_, path)) = resolved.iter().find(|(p, _)| p == program) else {
                    return Err(src.err(
                        patterns.span(),
                        &field("arguments"),
                        &format!("'{program}' is not in restricted"),
                    ));
                };
                if let Err(e) = regex::Regex::new(&format!("^(?:{pattern})$")) {
                    return Err(src.err(
                        patterns.span(),
                        &field("arguments"),
                        &format!("the pattern for '{program}' is not a regular expression: {e}"),
                    ));
                }
                c.arguments.push((path.clone(), pattern.clone()));
            }
        }
        c.restricted = Some(resolved.into_iter().map(|(_, path)| path).collect());
    } else if rc.arguments.is_some() || rc.allow_launchers.is_some() {
        let span = rc
            .arguments
            .as_ref()
            .map(|a| a.span())
            .or(rc.allow_launchers.as_ref().map(|a| a.span()))
            .unwrap_or_else(|| rc.name.span());
        return Err(src.err(
            span,
            &field("arguments"),
            "applies only to a restricted configuration",
        ));
    }
    if c.idle_timeout > c.max_idle_timeout {
        let span = rc
            .idle_timeout
            .as_ref()
            .or(rc.max_idle_timeout.as_ref())
            .map(|s| s.span())
            .unwrap_or_else(|| rc.name.span());
        return Err(src.err(
            span,
            &field("idle_timeout"),
            &format!(
                "{} exceeds max_idle_timeout {}",
                humantime::format_duration(c.idle_timeout),
                humantime::format_duration(c.max_idle_timeout)
            ),
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse(
            "[server]\nmin_idle_timeout = \"1s\"\n[[configuration]]\nname = \"small\"\noutput_buffer_size = \"64KiB\"\nrestricted = [\"ls\", \"/usr/bin/id\"]\nmax_sessions_per_user = 2\n",
        )
        .expect("valid config");
        assert_eq!(c.server.min_idle_timeout, Duration::from_secs(1));
        assert!(c.configurations.contains_key("default"));
        let small = &c.configurations["small"];
        assert_eq!(small.output_buffer_size, 64 * 1024);
        assert_eq!(small.max_sessions_per_user, 2);
        // Names are resolved at load, in the fixed PATH, never the daemon's.
        let ls = resolve_program("ls").expect("ls is installed");
        assert!(ls.ends_with("/ls") && ls.starts_with('/'), "{ls}");
        assert_eq!(
            small.restricted.as_deref(),
            Some(&[ls, "/usr/bin/id".to_string()][..])
        );
        // A launcher is refused unless accepted knowingly; patterns must name a program.
        let err =
            Config::parse("[[configuration]]\nname = \"r\"\nrestricted = [\"ls\", \"env\"]\n")
                .expect_err("env refused");
        assert!(err.contains("'env' runs other programs"), "{err}");
        assert!(Config::parse(
            "[[configuration]]\nname = \"r\"\nrestricted = [\"env\"]\nallow_launchers = [\"env\"]\n"
        )
        .is_ok());
        let err = Config::parse(
            "[[configuration]]\nname = \"r\"\nrestricted = [\"ls\"]\narguments = { id = \"-u\" }\n",
        )
        .expect_err("id is not restricted");
        assert!(err.contains("'id' is not in restricted"), "{err}");
        let err = Config::parse(
            "[[configuration]]\nname = \"r\"\nrestricted = [\"no-such-program-here\"]\n",
        )
        .expect_err("missing program");
        assert!(err.contains("not an executable file"), "{err}");
        assert_eq!(small.max_memory_per_session, 1 << 30);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("[server]\nbogus = 1\n").expect_err("must fail");
        assert!(err.contains("bogus") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn a_bad_value_names_file_line_and_field() {
        let err = Config::parse(
            "[server]\n\n[[configuration]]\nname = \"x\"\n\nidle_timeout = \"soon\"\n",
        )
        .expect_err("must fail");
        assert!(
            err.starts_with("lingerd.toml: line 6: configuration 'x' idle_timeout: "),
            "{err}"
        );
        let err =
            Config::parse("[[configuration]]\nname = \"x\"\nrun_as = \"no-such-user-here\"\n")
                .expect_err("must fail");
        assert!(err.contains("line 3") && err.contains("run_as"), "{err}");
        // A run_as open to every principal would make them all one user.
        let err = Config::parse("[[configuration]]\nname = \"x\"\nrun_as = \"root\"\n")
            .expect_err("refused");
        assert!(err.contains("allowed_principals"), "{err}");
        let c = Config::parse(
            "[[configuration]]\nname = \"x\"\nrun_as = \"root\"\nallowed_groups = [\"wheel\"]\nallowed_principals = [\"ops\"]\n",
        )
        .expect("with a list");
        let x = &c.configurations["x"];
        assert!(x.admits("ops", &[]));
        assert!(x.admits("alice", &["wheel".into()]));
        assert!(!x.admits("alice", &["users".into()]));
        assert!(Config::default().configurations["default"].admits("anyone", &[]));
        let err = Config::parse("[[configuration]]\nname = \"x\"\nmax_processes_per_session = 0\n")
            .expect_err("must fail");
        assert!(
            err.contains("line 3") && err.contains("max_processes_per_session"),
            "{err}"
        );
    }

    #[test]
    fn drop_ins_add_configurations_and_a_duplicate_names_both_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let main = dir.path().join("lingerd.toml");
        std::fs::write(&main, "[server]\nmin_idle_timeout = \"2s\"\n").expect("main");
        std::fs::create_dir(dir.path().join("lingerd.d")).expect("dir");
        std::fs::write(
            dir.path().join("lingerd.d/10-a.toml"),
            "[[configuration]]\nname = \"a\"\n",
        )
        .expect("a");
        std::fs::write(
            dir.path().join("lingerd.d/20-b.toml"),
            "[server]\nmin_idle_timeout = \"3s\"\n[[configuration]]\nname = \"b\"\n",
        )
        .expect("b");
        std::fs::write(dir.path().join("lingerd.d/ignored.txt"), "junk").expect("junk");
        let c = Config::load(&main).expect("valid");
        assert_eq!(c.server.min_idle_timeout, Duration::from_secs(3));
        assert!(c.configurations.contains_key("a") && c.configurations.contains_key("b"));
        std::fs::write(
            dir.path().join("lingerd.d/30-dup.toml"),
            "\n[[configuration]]\nname = \"a\"\n",
        )
        .expect("dup");
        let err = Config::load(&main).expect_err("duplicate").to_string();
        assert!(
            err.contains("30-dup.toml: line 3") && err.contains("10-a.toml"),
            "{err}"
        );
    }
}
