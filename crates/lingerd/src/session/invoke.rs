//! Running one command for a request: waiting for the session, starting, relaying to the
//! end.

use super::*;

impl Session {
    /// Runs one command for a client request and relays its output until it has finished
    /// and been acknowledged (or the requester went away). Sends the command's id through
    /// `started` once the host has it.
    pub async fn invoke(
        self: &Arc<Self>,
        req: InvokeRequest,
        started: oneshot::Sender<Uuid>,
    ) -> Result<(), ErrorBody> {
        let command_id = Uuid::new_v4();
        let (run_tx, run_rx) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + req.wait;
        let mut changed = self.changed.subscribe();
        let mut queued = false;
        let evicted = loop {
            {
                let mut g = self.lock();
                self.check_open(&g)?;
                if let Some(e) = self.attached_elsewhere(&g, req.client) {
                    return Err(e);
                }
                if g.running.is_none() && !g.starting && g.fg.subscriber.is_none() {
                    g.starting = true;
                    g.pending_runs.insert(command_id, run_tx);
                    let evicted = if req.disconnected {
                        self.detach(&mut g, "started in a disconnected session");
                        None
                    } else if req.kind == InvokeKind::Job {
                        // Its output waits on the server for a job receive.
                        self.attach(&mut g, req.client);
                        None
                    } else {
                        self.attach(&mut g, req.client);
                        let sub = Subscriber::new(
                            req.conn,
                            req.rid,
                            req.tx.clone(),
                            Some(command_id),
                            false,
                        );
                        Some(self.subscribe(&mut g, None, sub))
                    };
                    break evicted;
                }
            }
            if !queued {
                queued = true;
                tracing::info!(session = %self.meta.instance_id, client = %req.client, "command queued: the session is busy");
            }
            let mut gone = req.gone.clone();
            let mut withdrawn = req.withdrawn.clone();
            tokio::select! {
                r = changed.changed() => if r.is_err() { return Err(self.closed_error()) },
                _ = tokio::time::sleep_until(deadline) => return Err(self.busy_error()),
                _ = gone.wait_for(|g| *g) => {
                    tracing::info!(session = %self.meta.instance_id, "a waiting command was withdrawn: its client went away");
                    return Err(ErrorBody::new(ErrorKind::Internal, "the client went away"));
                }
                _ = withdrawn.wait_for(|w| *w) => {
                    tracing::info!(session = %self.meta.instance_id, "a waiting command was withdrawn by its client");
                    return Err(ErrorBody::new(ErrorKind::Busy, "the command was withdrawn before the session was free to run it"));
                }
            }
        };
        // Started goes out before anything the replay or the command produce.
        let (kind, job_id) = match req.kind {
            InvokeKind::Plain => (RunKind::Plain, None),
            InvokeKind::Job => (RunKind::Job, Some(command_id)),
            InvokeKind::BackgroundJob => {
                let job_id = Uuid::new_v4();
                (RunKind::LaunchJob { job_id }, Some(job_id))
            }
        };
        if let Some(job_id) = job_id {
            // Listed before anyone hears of it (the host's next status confirms it, or a
            // refusal takes it back), so that a job request right after `Started` finds it.
            let mut g = self.lock();
            if !g.status.jobs.iter().any(|j| j.job_id == job_id) {
                g.starting_jobs.push(JobInfo {
                    job_id,
                    kind: if req.kind == InvokeKind::Job {
                        JobKind::Remote
                    } else {
                        JobKind::Background
                    },
                    command: req.script.trim().chars().take(200).collect(),
                    state: JobState::Running,
                    status: None,
                    // As the host reports it: more may come while it runs.
                    has_more_data: true,
                    pending_output_bytes: 0,
                    started_at_ms: now_ms(),
                    ended_at_ms: None,
                });
            }
        }
        let _ = req
            .tx
            .send(ServerMsg::Reply {
                rid: req.rid,
                reply: Reply::Started { command_id, job_id },
            })
            .await;
        let _ = started.send(command_id);
        self.send(DaemonToHost::Run {
            command_id,
            script: req.script,
            args: req.args,
            kind,
            // Only a request that follows its command can feed it.
            stdin: req.stdin && evicted.is_some() && req.kind == InvokeKind::Plain,
            // A terminal is for someone typing: never for a command nobody follows.
            terminal: req
                .terminal
                .filter(|_| evicted.is_some() && req.kind == InvokeKind::Plain),
        });
        tracing::debug!(session = %self.meta.instance_id, command = %command_id, client = %req.client, "command started");
        match run_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                self.unsubscribe(req.conn, req.rid);
                if let Some(job_id) = job_id {
                    self.lock().starting_jobs.retain(|j| j.job_id != job_id);
                }
                return Err(ErrorBody::new(
                    ErrorKind::Busy,
                    format!("session {} refused the command: {reason}", self.meta.name),
                ));
            }
            Err(_) => return Err(self.closed_error()),
        }
        let Some(evicted) = evicted else {
            return Ok(());
        };

        loop {
            {
                let mut g = self.lock();
                if !g
                    .fg
                    .subscriber
                    .as_ref()
                    .is_some_and(|s| s.is(req.conn, req.rid))
                {
                    return match evicted.get() {
                        Some(e) => Err(e.clone()),
                        // Its connection is gone: nobody to answer.
                        None => Ok(()),
                    };
                }
                if g.fg.delivered(command_id) {
                    g.fg.subscriber = None;
                    let shell_gone = g.closed.is_some() && !g.host_gone;
                    drop(g);
                    self.bump();
                    if shell_gone {
                        // The shell exited during this command and its requester has the
                        // end: let the host go.
                        self.terminate("its shell exited");
                    }
                    return Ok(());
                }
                if g.host_gone {
                    let why = g.closed.clone().unwrap_or_else(|| "it ended".into());
                    g.fg.subscriber = None;
                    return Err(ErrorBody::new(
                        ErrorKind::Closed,
                        format!(
                            "session {} ended while the command ran: {why}",
                            self.meta.name
                        ),
                    )
                    .with_closed_reason(why));
                }
            }
            if changed.changed().await.is_err() {
                return Err(self.closed_error());
            }
        }
    }
}
