//! How sessions are shown: the seeds' table, or JSON objects (SPEC §3).

use linger::{SessionView, State};
use serde_json::{json, Value};

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
        "reason": v.reason,
    })
}

/// The table of the seeds: Id and Availability right-aligned.
pub fn session_table(views: &[SessionView]) -> String {
    let headers = [
        "Id",
        "Name",
        "ComputerName",
        "State",
        "ConfigurationName",
        "Availability",
    ];
    let rows: Vec<[String; 6]> = views
        .iter()
        .map(|v| {
            [
                v.entry.id.to_string(),
                v.entry.name.clone(),
                v.entry.computer_name.clone(),
                v.state.as_str().to_string(),
                v.entry.configuration_name.clone(),
                v.availability.as_str().to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    // State always has room for "Disconnected", as in the seeds.
    widths[3] = widths[3].max(State::Disconnected.as_str().len());
    widths[0] = widths[0].max(3);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let right = [true, false, false, false, false, true];
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            // One space after the Id column, two elsewhere (the seeds' layout).
            match i {
                0 => {}
                1 => out.push(' '),
                _ => out.push_str("  "),
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
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
    out.push_str(&line(&headers.map(String::from)));
    out.push_str(&line(&headers.map(|h| "-".repeat(h.len()))));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

/// Prints sessions as the table or as JSON lines.
pub fn print_sessions(views: &[SessionView], json: bool) {
    if json {
        for v in views {
            println!("{}", session_json(v));
        }
    } else if !views.is_empty() {
        print!("\n{}\n", session_table(views));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linger::{Availability, Entry};
    use uuid::Uuid;

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
