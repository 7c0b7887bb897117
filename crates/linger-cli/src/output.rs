//! How sessions are shown: the seeds' table, or JSON objects (SPEC §3).

use linger::{JobKind, JobView, JobViewState, SessionView, State};
use serde_json::{json, Value};
use unicode_width::UnicodeWidthStr;

use crate::report::out;

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn session_json(v: &SessionView) -> Value {
    let info = v.info.as_ref();
    json!({
        "id": v.entry.id,
        "name": v.entry.name,
        "instance_id": v.entry.instance_id,
        "computer_name": v.entry.computer_name,
        "configuration_name": v.entry.configuration_name,
        "state": v.state.as_str(),
        "availability": v.availability.as_str(),
        "owner": info.map(|i| i.owner.clone()),
        "created_at": rfc3339(v.entry.created_at_ms),
        "idle_timeout_s": info.map(|i| i.idle_timeout_ms / 1000),
        "output_buffering_mode": info.map(|i| i.output_buffering_mode.as_str()),
        "disconnected_at": info.and_then(|i| i.disconnected_at_ms).map(rfc3339),
        "expires_at": info.and_then(|i| i.expires_at_ms).map(rfc3339),
        "running_command": info.and_then(|i| i.running_command.clone()),
        "pending_output_bytes": info.map_or(0, |i| i.pending_output_bytes),
        "dropped_output_bytes": info.map_or(0, |i| i.dropped_output_bytes),
        "jobs": info.map_or(0, |i| i.jobs),
        "blocked": info.is_some_and(|i| i.blocked),
        "reason": v.reason,
    })
}

/// The table of the seeds: Id and Availability right-aligned.
pub fn session_table(views: &[SessionView]) -> String {
    let mut headers = vec![
        "Id",
        "Name",
        "ComputerName",
        "State",
        "ConfigurationName",
        "Availability",
    ];
    // A command suspended because nobody reads its output (block mode) says so: it looks
    // Busy but makes no progress until someone receives.
    let running = |v: &SessionView| {
        let info = v.info.as_ref()?;
        let shown = shorten(info.running_command.as_deref()?, COMMAND_SHOWN);
        Some(if info.blocked {
            format!("{shown} (Blocked: waits for `linger receive`)")
        } else {
            shown
        })
    };
    // The seeds' columns, the running command when any session has one, and why a session
    // ended while it is still listed (SPEC §3: Closed shows its reason until removed).
    let command = views.iter().any(|v| running(v).is_some());
    if command {
        headers.push("Command");
    }
    let reason = |v: &SessionView| {
        (v.state == State::Closed)
            .then(|| v.reason.as_deref().map(|r| shorten(r, COMMAND_SHOWN)))
            .flatten()
    };
    let reasons = views.iter().any(|v| reason(v).is_some());
    if reasons {
        headers.push("Reason");
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let mut row = vec![
                v.entry.id.to_string(),
                v.entry.name.clone(),
                v.entry.computer_name.clone(),
                v.state.as_str().to_string(),
                v.entry.configuration_name.clone(),
                v.availability.as_str().to_string(),
            ];
            if command {
                row.push(running(v).unwrap_or_default());
            }
            if reasons {
                row.push(reason(v).unwrap_or_default());
            }
            row
        })
        .collect();
    // Id has room for three digits and State for "Disconnected", as in the seeds.
    let min = [3, 0, 0, State::Disconnected.as_str().len(), 0, 0, 0, 0];
    let right = [true, false, false, false, false, true, false, false];
    render(&headers, &rows, &min, &right)
}

/// The seeds' job table (Get-Job).
pub fn job_table(views: &[JobView]) -> String {
    let headers = [
        "Id",
        "Name",
        "PSJobTypeName",
        "State",
        "HasMoreData",
        "Location",
        "Command",
    ];
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.job.id.to_string(),
                v.job.name.clone(),
                job_type(v).to_string(),
                v.state.as_str().to_string(),
                if v.has_more_data { "True" } else { "False" }.to_string(),
                v.job.computer_name.clone(),
                shorten(&v.job.command, COMMAND_SHOWN),
            ]
        })
        .collect();
    let min = [3, 0, 0, JobViewState::Disconnected.as_str().len(), 0, 0, 0];
    let right = [true, false, false, false, false, false, false];
    render(&headers, &rows, &min, &right)
}

/// Characters of a job's command shown in the table.
const COMMAND_SHOWN: usize = 40;

fn job_type(v: &JobView) -> &'static str {
    match v.job.kind {
        JobKind::Remote => "RemoteJob",
        JobKind::Background => "BackgroundJob",
    }
}

/// One line, at most `max` characters (an ellipsis marks the cut).
fn shorten(text: &str, max: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.width() <= max {
        return line;
    }
    let mut cut = String::new();
    let mut used = 0;
    for c in line.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > max.saturating_sub(1) {
            break;
        }
        used += w;
        cut.push(c);
    }
    cut.push('…');
    cut
}

pub fn job_json(v: &JobView) -> Value {
    let info = v.info.as_ref();
    json!({
        "id": v.job.id,
        "name": v.job.name,
        "job_id": v.job.job_id,
        "ps_job_type_name": job_type(v),
        "state": v.state.as_str(),
        "has_more_data": v.has_more_data,
        "location": v.job.computer_name,
        "command": v.job.command,
        // A parent job runs in no session: its children do.
        "session_name": (!v.job.is_parent()).then_some(&v.job.session_name),
        "instance_id": (!v.job.is_parent()).then_some(v.job.instance_id),
        "child_jobs": v.job.children,
        "status": v.status(),
        "started_at": info.map(|i| rfc3339(i.started_at_ms)),
        "ended_at": info.and_then(|i| i.ended_at_ms).map(rfc3339),
        "reason": v.reason,
    })
}

/// Prints jobs as the table or as JSON lines.
pub fn print_jobs(views: &[JobView], json: bool) {
    if json {
        for v in views {
            out(&format!("{}\n", job_json(v)));
        }
    } else if !views.is_empty() {
        out(&format!("\n{}\n", job_table(views)));
    }
}

/// A table with the seeds' layout: one space after the first column, two between the
/// others, the last column unpadded.
fn render(headers: &[&str], rows: &[Vec<String>], min: &[usize], right: &[bool]) -> String {
    // Every cell may come from a server: none may drive the terminal.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| crate::report::printable(c)).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers
        .iter()
        .zip(min)
        .map(|(h, m)| h.width().max(*m))
        .collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            // Columns, not chars: a CJK name takes two, a combining accent none.
            *w = (*w).max(cell.width());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            match i {
                0 => {}
                1 => out.push(' '),
                _ => out.push_str("  "),
            }
            let pad = widths[i].saturating_sub(cell.width());
            if right[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = String::new();
    let names: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let rules: Vec<String> = headers.iter().map(|h| "-".repeat(h.len())).collect();
    out.push_str(&line(&names));
    out.push_str(&line(&rules));
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// Prints sessions as the table or as JSON lines.
pub fn print_sessions(views: &[SessionView], json: bool) {
    if json {
        for v in views {
            out(&format!("{}\n", session_json(v)));
        }
    } else if !views.is_empty() {
        out(&format!("\n{}\n", session_table(views)));
    }
}

fn duration_ms(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

pub fn configuration_json(c: &linger::ConfigurationInfo) -> Value {
    json!({
        "name": c.name,
        "idle_timeout_s": c.idle_timeout_ms / 1000,
        "max_idle_timeout_s": c.max_idle_timeout_ms / 1000,
        "output_buffering_mode": c.output_buffering.as_str(),
        "output_buffer_size": c.output_buffer_size,
        "spool_limit": c.spool_limit,
        "shell": c.shell,
        "startup": c.startup,
        "working_directory": c.working_directory,
        "max_sessions_per_user": c.max_sessions_per_user,
        "max_memory_per_session": c.max_memory_per_session,
        "max_processes_per_session": c.max_processes_per_session,
        "run_as": c.run_as,
        "restricted": c.restricted,
    })
}

/// `linger config list`: `Name IdleTimeout MaxIdleTimeout OutputBufferingMode Shell
/// Restricted` (SPEC §10); Restricted is True or False (`--json` lists the programs).
pub fn print_configurations(list: &[linger::ConfigurationInfo], json: bool) {
    if json {
        for c in list {
            out(&format!("{}\n", configuration_json(c)));
        }
        return;
    }
    let headers = [
        "Name",
        "IdleTimeout",
        "MaxIdleTimeout",
        "OutputBufferingMode",
        "Shell",
        "Restricted",
    ];
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                duration_ms(c.idle_timeout_ms),
                duration_ms(c.max_idle_timeout_ms),
                c.output_buffering.as_str().to_string(),
                c.shell.join(" "),
                if c.restricted.is_some() {
                    "True"
                } else {
                    "False"
                }
                .to_string(),
            ]
        })
        .collect();
    let right = [false; 6];
    out(&format!("\n{}\n", render(&headers, &rows, &[0; 6], &right)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use linger::{Availability, Entry};
    use uuid::Uuid;

    #[test]
    fn control_characters_in_cells_are_escaped() {
        let rows = vec![vec!["x\x1b]52;c;aGk=\x07".to_string()]];
        let t = render(&["Name"], &rows, &[0], &[false]);
        assert!(!t.contains('\x1b') && t.contains("\\u{1b}]52"), "{t}");
    }

    /// Widths are terminal columns: a wide name takes two per character, so the columns
    /// after it still line up.
    #[test]
    fn wide_characters_take_their_columns() {
        let rows = vec![
            vec!["日本".to_string(), "x".to_string()],
            vec!["ab".to_string(), "y".to_string()],
        ];
        let t = render(&["Name", "V"], &rows, &[0, 0], &[false, false]);
        let at = |line: &str, c: char| line[..line.find(c).expect("cell")].width();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(at(lines[2], 'x'), at(lines[3], 'y'), "{t}");
        assert_eq!(shorten("日本語のコマンド", 5), "日本…");
    }

    #[test]
    fn table_matches_the_seed_layout() {
        let v = SessionView {
            entry: Entry {
                id: 2,
                instance_id: Uuid::nil(),
                name: "Session2".into(),
                computer_name: "web01".into(),
                configuration_name: "default".into(),
                created_at_ms: 0,
                closed_reason: None,
                reach: Default::default(),
            },
            state: State::Opened,
            availability: Availability::Available,
            info: None,
            reason: None,
        };
        let t = session_table(&[v]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            " Id Name      ComputerName  State         ConfigurationName  Availability"
        );
        assert_eq!(
            lines[1],
            " -- ----      ------------  -----         -----------------  ------------"
        );
        assert_eq!(
            lines[2],
            "  2 Session2  web01         Opened        default               Available"
        );
    }
}
