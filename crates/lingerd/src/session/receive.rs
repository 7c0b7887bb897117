//! Receiving what a channel kept, and the session's jobs.

use super::*;

impl Session {
    /// `receive`: attaches if needed, delivers what the host kept, then follows the running
    /// command to its end (unless `keep`, which delivers a snapshot and acknowledges
    /// nothing).
    pub async fn receive(
        self: &Arc<Self>,
        req: ReceiveRequest,
        channel: Channel,
    ) -> Result<ReceiveSummary, ErrorBody> {
        let mut changed = self.changed.subscribe();
        let evicted = {
            let mut g = self.lock();
            // A session whose shell exited may still hold output to deliver.
            if g.terminating.is_some() || g.host_gone {
                self.check_open(&g)?;
            }
            if let Some(e) = self.attached_elsewhere(&g, req.client) {
                return Err(e);
            }
            // A subscriber here is this same client's (the session is attached to it): an
            // older request, or one on a connection that went silent and that this receive
            // resumes. The newest wins; the older one is told.
            let why = ErrorBody::new(
                ErrorKind::Detached,
                format!(
                    "{}'s output was taken over by another request of this client",
                    what_of(&self.meta.name, channel)
                ),
            )
            .with_hint("`linger receive` gets it here again");
            if g.chan(channel).evict(why) {
                tracing::info!(session = %self.meta.instance_id, "output taken over by a newer request of the same client");
            }
            self.attach(&mut g, req.client);
            self.set_buffering(&mut g, req.buffering);
            if let (Some(t), None) = (&req.terminal, channel) {
                // Answered before the replay that subscribing asks for, so the screen is
                // the first thing this subscriber gets.
                self.send(DaemonToHost::Redraw {
                    rows: t.rows,
                    cols: t.cols,
                    watcher: None,
                });
            }
            let sub = Subscriber::new(req.conn, req.rid, req.tx.clone(), None, req.keep);
            self.subscribe(&mut g, channel, sub)
        };
        let mut until: Option<u64> = None;
        loop {
            {
                let mut g = self.lock();
                // Whether output may still come, and what is kept, for this channel.
                let (running, pending, running_command) = match channel {
                    None => (
                        g.running.is_some() || g.starting,
                        g.status.pending_output_bytes,
                        g.status.running.as_ref().map(|(_, c)| c.clone()),
                    ),
                    Some(id) => match g
                        .status
                        .jobs
                        .iter()
                        .chain(&g.starting_jobs)
                        .find(|j| j.job_id == id)
                    {
                        Some(j) => (
                            j.state == JobState::Running,
                            j.pending_output_bytes,
                            (j.state == JobState::Running).then(|| j.command.clone()),
                        ),
                        None => (false, 0, None),
                    },
                };
                let host_gone = g.host_gone;
                let c = g.chan(channel);
                let Some(s) = c.subscriber.as_ref().filter(|s| s.is(req.conn, req.rid)) else {
                    return match evicted.get() {
                        Some(e) => Err(e.clone()),
                        None => Err(ErrorBody::new(
                            ErrorKind::Internal,
                            "the receive was abandoned",
                        )),
                    };
                };
                if c.replays_pending == 0 {
                    let until = *until.get_or_insert(c.known_last);
                    if c.receive_complete(req.end(), until, running, pending, host_gone) {
                        let summary = ReceiveSummary {
                            commands_finished: s.finished.len() as u32,
                            dropped_output_bytes: s.dropped_reported,
                            running_command,
                        };
                        c.subscriber = None;
                        drop(g);
                        self.bump();
                        return Ok(summary);
                    }
                }
            }
            if changed.changed().await.is_err() {
                return Err(self.closed_error());
            }
        }
    }

    /// The session's jobs: commands run as jobs and background jobs.
    pub fn jobs(&self) -> Vec<JobInfo> {
        let g = self.lock();
        let mut jobs = g.status.jobs.clone();
        jobs.extend(g.starting_jobs.iter().cloned());
        jobs
    }

    pub fn job(&self, id: Uuid) -> Result<JobInfo, ErrorBody> {
        self.jobs()
            .into_iter()
            .find(|j| j.job_id == id)
            .ok_or_else(|| {
                ErrorBody::new(
                    ErrorKind::NotFound,
                    format!("no job {id} in session {}", self.meta.name),
                )
                .with_hint("`linger job list SEL` lists the session's jobs")
            })
    }

    /// `job receive`: a job's output, from the job's own channel.
    pub async fn receive_job(
        self: &Arc<Self>,
        req: ReceiveRequest,
        job_id: Uuid,
    ) -> Result<ReceiveSummary, ErrorBody> {
        // The session's own id names "whatever its foreground produced" (`receive
        // --out-target job`).
        if job_id == self.id() {
            return self.receive(req, None).await;
        }
        // Each job has its own channel: a command run as a job too (its output never
        // joins the session's foreground log).
        self.job(job_id)?;
        self.receive(req, Some(job_id)).await
    }

    /// `job stop`.
    pub fn stop_job(
        &self,
        client: Uuid,
        job_id: Uuid,
        escalate_after: Duration,
    ) -> Result<Option<JobInfo>, ErrorBody> {
        if job_id == self.id() {
            // The job standing for the session's output: stop its running command.
            let running = {
                let g = self.lock();
                self.check_open(&g)?;
                if let Some(e) = self.attached_elsewhere(&g, client) {
                    return Err(e);
                }
                g.running
            };
            if let Some(cmd) = running {
                self.interrupt(cmd, escalate_after);
            }
            return Ok(None);
        }
        let job = self.job(job_id)?;
        {
            let g = self.lock();
            self.check_open(&g)?;
            if let Some(e) = self.attached_elsewhere(&g, client) {
                return Err(e);
            }
        }
        if job.state == JobState::Running {
            self.send(DaemonToHost::StopJob { job_id });
        }
        Ok(Some(job))
    }

    /// `job remove`: forgets an ended job and its kept output.
    pub fn remove_job(&self, client: Uuid, job_id: Uuid) -> Result<(), ErrorBody> {
        let job = self.job(job_id)?;
        let mut g = self.lock();
        if let Some(e) = self.attached_elsewhere(&g, client) {
            return Err(e);
        }
        if job.state == JobState::Running {
            return Err(
                ErrorBody::new(ErrorKind::Busy, format!("job {job_id} is still running"))
                    .with_hint("stop it first with `linger job stop`"),
            );
        }
        g.status.jobs.retain(|j| j.job_id != job_id);
        g.jobs.remove(&job_id);
        drop(g);
        self.send(DaemonToHost::ForgetJob { job_id });
        Ok(())
    }
}
