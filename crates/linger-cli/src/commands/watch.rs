//! `linger watch`: a read-only view of what a session's commands print, live (SPEC §14).
//! Nothing is consumed or acknowledged, nothing is typed, resized or interrupted; a watcher
//! that falls behind is told how much went by unseen.

use std::sync::Arc;

use anyhow::Result;
use linger::{Client, StreamKind, WatchEvent};
use tokio::sync::Mutex;

use super::resolve;
use crate::cli::WatchArgs;
use crate::report::usage_hint;
use crate::sink::{Mode, Sink};

pub async fn run(client: &Client, args: WatchArgs, json: bool) -> Result<i32> {
    let mut entries = resolve(client, &args.targets, "watch").await?;
    let entry = match (entries.pop(), entries.is_empty()) {
        (Some(entry), true) => entry,
        _ => {
            return Err(usage_hint(
                "watch one session at a time",
                "name it by Id or InstanceId, or run one `linger watch` per session",
            ))
        }
    };
    let mut watch = client.watch(&entry).await?;
    // On stderr, so that stdout stays the session's output (or JSON records).
    crate::say!(
        "linger: watching {} read-only (Ctrl-C stops watching)",
        entry.name
    );
    let out = Arc::new(Mutex::new(tokio::io::stdout()));
    let err = Arc::new(Mutex::new(tokio::io::stderr()));
    let mut sink = Sink::new(Mode::pick(json, 1), entry.computer_name.clone(), out, err);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let events = tokio::select! {
            events = watch.next() => events,
            _ = &mut ctrl_c => {
                sink.finish().await?;
                return Ok(0);
            }
        };
        let events = match events {
            Ok(events) => events,
            Err(e) => {
                sink.finish().await?;
                let ended = client.note_closed(&entry, Err::<(), linger::Error>(e));
                return ended.map(|()| 0).map_err(Into::into);
            }
        };
        for event in events {
            match event {
                WatchEvent::Screen(screen) => sink.write(StreamKind::Stdout, &screen).await?,
                WatchEvent::Output { stream, data, .. } => sink.write(stream, &data).await?,
                WatchEvent::Missed(bytes) => sink.missed(bytes).await?,
            }
        }
    }
}
