//! `linger option show`: every client option's effective value and where it came from
//! (SPEC §11: flag > `--option` > options file > default; unset server-side values fall to
//! the session configuration).

use linger::Client;
use serde_json::json;

use crate::report::out;

pub fn show(client: &Client, json: bool) {
    let options = client.options();
    let rows: Vec<(&str, String, String)> = linger::OPTION_KEYS
        .iter()
        .map(|&k| (k, options.shown(k), options.source(k).to_string()))
        .collect();
    if json {
        for (key, value, source) in &rows {
            out(&format!(
                "{}\n",
                json!({ "key": key, "value": value, "source": source })
            ));
        }
        return;
    }
    let key_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(3);
    let val_w = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut text = format!("{:<key_w$}  {:<val_w$}  Source\n", "Key", "Value");
    text.push_str(&format!("{:<key_w$}  {:<val_w$}  ------\n", "---", "-----"));
    for (key, value, source) in rows {
        text.push_str(&format!("{key:<key_w$}  {value:<val_w$}  {source}\n"));
    }
    out(&text);
}
