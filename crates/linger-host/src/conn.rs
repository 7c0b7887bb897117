//! Serving the daemon over the host's socket: one connection at a time; a new one replaces
//! the old (a restarted daemon re-adopting us).

use std::sync::Arc;
use std::time::Duration;

use linger_proto::frame::{FrameReader, FrameWriter};
use linger_proto::host::{DaemonToHost, HostToDaemon};
use linger_proto::HOST_PROTOCOL_VERSION;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use std::collections::HashMap;

use linger_proto::host::Channel;
use uuid::Uuid;

use crate::log::{Entry, EntryKind, OutputLog};
use crate::state::HostState;

/// Output sent per batch before flushing.
const BATCH_BYTES: u64 = 1 << 20;
/// How often changed byte counts are reported to the daemon.
const STATUS_EVERY: Duration = Duration::from_millis(250);
/// How long the session's processes get between SIGTERM and SIGKILL at the end.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

pub async fn serve(listener: UnixListener, state: Arc<HostState>) {
    let mut current: Option<JoinHandle<()>> = None;
    let mut changed = state.changed.subscribe();
    // SIGTERM (a shutdown, `pkill`) ends the session in order rather than leave its
    // processes, files and control groups to whoever notices.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        let terminated = async {
            match term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = terminated => finish(&state, "its host was sent SIGTERM").await,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if !same_user(&stream) {
                        tracing::warn!("refused a connection from another user");
                        continue;
                    }
                    if let Some(old) = current.take() {
                        old.abort();
                    }
                    current = Some(tokio::spawn(connection(stream, state.clone())));
                }
                Err(e) => {
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = changed.changed() => {}
        }
        if state.shell_exited().is_some() && state.log.is_empty() {
            // Everything the shell produced has been delivered: nothing left to keep.
            finish(&state, "shell exited and its output was delivered").await;
        }
    }
}

/// Whether the peer may drive this host: its own user's daemon, or root's (a system daemon
/// runs hosts as their sessions' owners).
fn same_user(stream: &UnixStream) -> bool {
    match stream.peer_cred() {
        Ok(cred) => cred.uid() == nix::unistd::geteuid().as_raw() || cred.uid() == 0,
        Err(_) => false,
    }
}

/// Ends the session for good: every process, the socket, the session's files.
async fn finish(state: &HostState, why: &str) -> ! {
    tracing::info!(session = %state.spec.meta.instance_id, "session ends: {why}");
    state.kill_all(TERMINATE_GRACE).await;
    crate::limits::remove_cgroups();
    let _ = std::fs::remove_file(&state.spec.socket_path);
    let _ = std::fs::remove_dir_all(&state.spec.session_dir);
    std::process::exit(0)
}

/// Gives the watchers' tap back when a daemon connection ends.
struct TapGuard<'a> {
    state: &'a HostState,
    rx: Option<tokio::sync::mpsc::Receiver<(Uuid, linger_proto::types::StreamKind, bytes::Bytes)>>,
}

impl Drop for TapGuard<'_> {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            self.state.tap.give_back(rx);
        }
    }
}

async fn connection(stream: UnixStream, state: Arc<HostState>) {
    let (r, w) = stream.into_split();
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    let hello = HostToDaemon::Hello {
        protocol_version: HOST_PROTOCOL_VERSION,
        meta: Box::new(state.spec.meta.clone()),
        status: state.status(),
        settings: state.settings(),
    };
    if writer.write(&hello).await.is_err() {
        return;
    }
    // Nothing is sent until the daemon asks for a replay: it may not want output yet.
    let mut cursor: Option<u64> = None;
    // The same, for each background job's log.
    let mut job_cursors: HashMap<Uuid, u64> = HashMap::new();
    let mut changed = state.changed.subscribe();
    let mut input_progress = state.input_progress.subscribe();
    let mut told_exit = false;
    // Armed when output moves byte counts, so an idle host sleeps without a timer.
    let mut status_due: Option<tokio::time::Instant> = None;
    let mut last_status = state.status();
    let mut tap = TapGuard {
        state: &state,
        rx: state.tap.take_receiver(),
    };
    let mut copies = crate::copy::Copies::new(crate::copy::ShellPlace {
        shell_pid: state.spec.meta.shell_pid,
        home: state
            .spec
            .environment
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| v.into()),
        restricted: state.spec.meta.restricted.is_some(),
    });
    loop {
        let appended = state.log.appended();
        let jobs_appended = state.jobs_appended.notified();
        let mut sent = false;
        if let Some(from) = cursor {
            match send_from(&mut writer, &state.log, from, None).await {
                Sent::Upto(next) => {
                    cursor = Some(next);
                    sent = true;
                }
                Sent::Nothing => {}
                Sent::Closed => return,
            }
        }
        for (job_id, from) in job_cursors.iter_mut() {
            let Some(log) = state.job_log(*job_id) else {
                continue;
            };
            match send_from(&mut writer, &log, *from, Some(*job_id)).await {
                Sent::Upto(next) => {
                    *from = next;
                    sent = true;
                }
                Sent::Nothing => {}
                Sent::Closed => return,
            }
        }
        if sent {
            if writer.flush().await.is_err() {
                return;
            }
            status_soon(&mut status_due);
            continue;
        }
        let status_tick = async move {
            match status_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let tapped = async {
            match tap.rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(msg) = copies.out_rx.recv() => {
                copies.sending(&msg);
                if writer.write(&msg).await.is_err() {
                    return;
                }
            }
            Some((command_id, stream, data)) = tapped => {
                let missed = state.tap.take_missed();
                let msg = HostToDaemon::Tap { command_id, stream, data, missed };
                if writer.write(&msg).await.is_err() {
                    return;
                }
            }
            _ = appended => {
                status_soon(&mut status_due);
            }
            _ = jobs_appended => {
                status_soon(&mut status_due);
            }
            Ok(()) = input_progress.changed() => {
                let now = *input_progress.borrow_and_update();
                if let Some(ack) = now.map(stdin_ack) {
                    if writer.write(&ack).await.is_err() {
                        return;
                    }
                }
            }
            _ = status_tick => {
                // Byte counts change with every chunk; the daemon hears them at this pace
                // rather than per chunk.
                status_due = None;
                let now = state.status();
                if now != last_status {
                    last_status = now.clone();
                    if writer.write(&HostToDaemon::Status(now)).await.is_err() {
                        return;
                    }
                }
            }
            _ = changed.changed() => {
                last_status = state.status();
                if writer.write(&HostToDaemon::Status(last_status.clone())).await.is_err() {
                    return;
                }
                if let (false, Some(reason)) = (told_exit, state.shell_exited()) {
                    told_exit = true;
                    if writer.write(&HostToDaemon::ShellExited { reason }).await.is_err() {
                        return;
                    }
                }
            }
            msg = reader.read::<DaemonToHost>() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!("dropping the daemon connection: {e}");
                        return;
                    }
                };
                match msg {
                    DaemonToHost::Hello { protocol_version } => {
                        if protocol_version != HOST_PROTOCOL_VERSION {
                            tracing::warn!(protocol_version, "daemon speaks another host protocol");
                            return;
                        }
                    }
                    DaemonToHost::Run { command_id, script, args, kind, stdin, terminal } => {
                        let reply = match state.run(command_id, &script, &args, kind, stdin, terminal) {
                            Ok(()) => HostToDaemon::Started { command_id },
                            Err(reason) => HostToDaemon::RunRefused { command_id, reason },
                        };
                        if writer.write(&reply).await.is_err() {
                            return;
                        }
                    }
                    DaemonToHost::Redraw { rows, cols, watcher } => {
                        // A watcher never resizes.
                        let size = watcher.is_none().then_some((rows, cols));
                        let reply = match state.redraw(size) {
                            Some((id, seq, data)) => HostToDaemon::Screen { command_id: Some(id), seq, data, watcher },
                            None => HostToDaemon::Screen { command_id: None, seq: 0, data: bytes::Bytes::new(), watcher },
                        };
                        if writer.write(&reply).await.is_err() {
                            return;
                        }
                    }
                    DaemonToHost::Watch { on } => state.tap.set(on),
                    DaemonToHost::Resize { command_id, rows, cols } => {
                        state.resize(command_id, rows, cols);
                    }
                    DaemonToHost::Stdin { command_id, offset, data, eof } => {
                        state.offer_input(command_id, offset, data, eof);
                    }
                    DaemonToHost::Interrupt { command_id, escalate_after_ms } => {
                        state.interrupt(command_id, Duration::from_millis(escalate_after_ms));
                    }
                    DaemonToHost::Replay { channel } => {
                        let log = channel_log(&state, channel);
                        // An unknown job replays nothing: an empty channel.
                        let (from, last) = match &log {
                            Some(log) => log.restart(),
                            None => (1, 0),
                        };
                        match channel {
                            None => cursor = Some(from),
                            Some(id) if log.is_some() => {
                                job_cursors.insert(id, from);
                            }
                            Some(_) => {}
                        }
                        if writer.write(&HostToDaemon::Replaying { channel, from, last }).await.is_err() {
                            return;
                        }
                        // A new follower of the foreground resumes forwarded input from
                        // what was written.
                        let progress = state.running_input();
                        if let (None, Some(ack)) = (channel, progress.map(stdin_ack)) {
                            if writer.write(&ack).await.is_err() {
                                return;
                            }
                        }
                    }
                    DaemonToHost::Ack { channel: None, seq } => {
                        state.log.ack(seq);
                        status_soon(&mut status_due);
                        if state.log.is_empty() {
                            if state.shell_exited().is_some() {
                                finish(&state, "shell exited and its output was delivered").await;
                            }
                            // Everything is delivered: say so now rather than at the next
                            // tick, so that a finished receive and the counts agree.
                            last_status = state.status();
                            if writer.write(&HostToDaemon::Status(last_status.clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    DaemonToHost::Credit { channel, seq } => {
                        let log = channel_log(&state, channel);
                        if let Some(log) = log {
                            log.credit(seq);
                        }
                    }
                    DaemonToHost::Ack { channel: Some(id), seq } => {
                        if let Some(log) = state.job_log(id) {
                            log.ack(seq);
                            status_soon(&mut status_due);
                            if log.is_empty() {
                                last_status = state.status();
                                if writer.write(&HostToDaemon::Status(last_status.clone())).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    DaemonToHost::StopJob { job_id } => {
                        let state = state.clone();
                        tokio::spawn(async move { state.stop_job(job_id).await });
                    }
                    DaemonToHost::ForgetJob { job_id } => {
                        job_cursors.remove(&job_id);
                        state.forget_job(job_id);
                    }
                    DaemonToHost::Settings(settings) => {
                        tracing::info!(buffering = settings.buffering.as_str(), attached = ?settings.attached_to, "settings changed");
                        state.set_settings(settings);
                    }
                    DaemonToHost::Terminate { reason } => finish(&state, &reason).await,
                    copy @ (DaemonToHost::CopyIn { .. }
                    | DaemonToHost::CopyOut { .. }
                    | DaemonToHost::CopyItem { .. }
                    | DaemonToHost::CopyData { .. }
                    | DaemonToHost::CopyEnd { .. }
                    | DaemonToHost::CopyProgress { .. }
                    | DaemonToHost::CopyAbort { .. }) => {
                        if let Some(answer) = copies.handle(copy) {
                            copies.sending(&answer);
                            if writer.write(&answer).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The output log a channel names, if the host has it (a job it forgot has none).
fn channel_log(state: &HostState, channel: Channel) -> Option<OutputLog> {
    match channel {
        None => Some(state.log.clone()),
        Some(id) => state.job_log(id),
    }
}

/// Byte counts moved: the daemon hears them within `STATUS_EVERY` (not per chunk).
fn status_soon(due: &mut Option<tokio::time::Instant>) {
    due.get_or_insert_with(|| tokio::time::Instant::now() + STATUS_EVERY);
}

fn stdin_ack(p: crate::input::Progress) -> HostToDaemon {
    HostToDaemon::StdinAck {
        command_id: p.command_id,
        written: p.written,
        closed: p.closed,
    }
}

enum Sent {
    /// Entries were fed; the cursor moves to this seq.
    Upto(u64),
    Nothing,
    Closed,
}

/// Feeds the entries of `log` from `from` on (a batch), tagged with their channel.
async fn send_from(
    writer: &mut FrameWriter<tokio::net::unix::OwnedWriteHalf>,
    log: &OutputLog,
    from: u64,
    channel: Channel,
) -> Sent {
    // Within the window the reader's acknowledgements (or credits) opened; at least one
    // entry once nothing is in flight, however big.
    let room = log.room();
    if room == 0 {
        return Sent::Nothing;
    }
    let entries = match log.read_from(from, BATCH_BYTES.min(room)) {
        Ok(e) => e,
        Err(e) => {
            // The spool cannot be read back: keep the entries (nothing is acknowledged)
            // and try again later rather than skip them.
            tracing::error!("reading the spooled output failed: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Sent::Nothing;
        }
    };
    let Some(last) = entries.last().map(|e| e.seq) else {
        return Sent::Nothing;
    };
    log.sent_through(last);
    for e in entries {
        if writer.feed(&entry_message(e, channel)).await.is_err() {
            return Sent::Closed;
        }
    }
    Sent::Upto(last + 1)
}

fn entry_message(e: Entry, channel: Channel) -> HostToDaemon {
    match e.kind {
        EntryKind::Output {
            command_id,
            stream,
            data,
        } => HostToDaemon::Output {
            channel,
            seq: e.seq,
            command_id,
            stream,
            data,
        },
        EntryKind::Finished {
            command_id,
            status,
            unread_input,
            input_offset,
        } => HostToDaemon::Finished {
            channel,
            seq: e.seq,
            command_id,
            status,
            unread_input,
            input_offset,
        },
        EntryKind::Dropped {
            from_total,
            to_total,
        } => HostToDaemon::Dropped {
            channel,
            seq: e.seq,
            from_total,
            to_total,
        },
    }
}
