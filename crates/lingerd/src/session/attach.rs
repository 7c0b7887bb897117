//! Attachment: who the session is attached to, disconnect and connect, the enter mark,
//! heartbeat lapses, and the idle timeout.

use super::*;

impl Session {
    pub(super) fn push_settings(&self, g: &Inner) {
        self.send(DaemonToHost::Settings(g.settings.clone()));
    }

    pub(super) fn attach(&self, g: &mut Inner, client: Uuid) {
        if attach_to(&mut g.settings, client) {
            tracing::info!(session = %self.meta.instance_id, name = %self.meta.name, %client, "session attached");
            self.push_settings(g);
        }
    }

    /// Detaches the session; whoever was receiving its output is told why. The idle-timeout
    /// clock starts now.
    pub(super) fn detach(&self, g: &mut Inner, why: &str) {
        if let Some(client) = detach_from(&mut g.settings, now_ms()) {
            tracing::info!(session = %self.meta.instance_id, name = %self.meta.name, %client, "session disconnected: {why}");
        }
        let name = &self.meta.name;
        let chans = std::iter::once(&mut g.fg).chain(g.jobs.values_mut());
        for c in chans {
            c.evict(
                ErrorBody::new(
                    ErrorKind::Detached,
                    format!("session {name} was disconnected: {why}"),
                )
                .with_hint(format!(
                    "its commands keep running; `linger receive {name}` gets their output"
                )),
            );
        }
        self.push_settings(g);
    }

    pub(super) fn set_buffering(&self, g: &mut Inner, mode: Option<BufferingMode>) {
        if let Some(mode) = mode {
            if g.settings.buffering != mode {
                g.settings.buffering = mode;
                self.push_settings(g);
            }
        }
    }

    pub(super) fn attached_elsewhere(&self, g: &Inner, client: Uuid) -> Option<ErrorBody> {
        attached_to_another(&g.settings, client).then(|| {
            ErrorBody::new(
                ErrorKind::Busy,
                format!("session {} is attached to another client", self.meta.name),
            )
            .with_hint("disconnect it there first (`linger disconnect`), or wait until that client has been silent for the heartbeat timeout")
        })
    }

    /// Refuses a session that has ended or is ending.
    pub(super) fn check_open(&self, g: &Inner) -> Result<(), ErrorBody> {
        if g.closed.is_some() || g.terminating.is_some() {
            let why = g
                .closed
                .clone()
                .or_else(|| g.terminating.clone())
                .unwrap_or_else(|| "it ended".into());
            return Err(ErrorBody::closed(&self.meta.name, &why));
        }
        Ok(())
    }

    /// `connect`: attaches the session to `client`; with `force`, takes it from the client
    /// holding it (whose requests end as detached, as on its heartbeat lapse), and returns
    /// that client.
    pub fn connect(
        &self,
        client: Uuid,
        buffering: Option<BufferingMode>,
        force: bool,
    ) -> Result<Option<Uuid>, ErrorBody> {
        let mut g = self.lock();
        self.check_open(&g)?;
        let mut taken_from = None;
        if let Some(e) = self.attached_elsewhere(&g, client) {
            if !force {
                return Err(e);
            }
            taken_from = g.settings.attached_to;
            self.detach(&mut g, "taken over by another client");
            // The other client's interactive session, if any, is over: its next line is
            // refused as attached elsewhere, and this client may enter.
            g.entered = None;
        }
        self.attach(&mut g, client);
        self.set_buffering(&mut g, buffering);
        drop(g);
        self.bump();
        Ok(taken_from)
    }

    /// `enter`: attaches the session and marks it entered by request `rid` of `conn`.
    pub fn begin_enter(&self, conn: u64, rid: u64, client: Uuid) -> Result<(), ErrorBody> {
        let mut g = self.lock();
        self.check_open(&g)?;
        if let Some(e) = self.attached_elsewhere(&g, client) {
            return Err(e);
        }
        if entered_elsewhere(g.entered, conn) {
            return Err(ErrorBody::new(
                ErrorKind::Busy,
                format!("session {} is already being entered", self.meta.name),
            )
            .with_hint("leave that interactive session first"));
        }
        self.attach(&mut g, client);
        g.entered = Some((conn, rid));
        Ok(())
    }

    /// The interactive session of `conn` (request `rid`, or any when `None`) has ended.
    pub fn end_enter(&self, conn: u64, rid: Option<u64>) {
        let mut g = self.lock();
        if ends_enter(g.entered, conn, rid) {
            g.entered = None;
        }
    }

    /// `disconnect`: detaches the session from `client`, with new settings.
    pub fn disconnect(
        &self,
        conn: u64,
        client: Uuid,
        idle_timeout: Option<Duration>,
        buffering: Option<BufferingMode>,
    ) -> Result<(), ErrorBody> {
        let mut g = self.lock();
        self.check_open(&g)?;
        if let Some(e) = self.attached_elsewhere(&g, client) {
            return Err(e);
        }
        if entered_elsewhere(g.entered, conn) {
            // The seeds: an interactive session cannot be disconnected from elsewhere.
            return Err(ErrorBody::new(
                ErrorKind::Busy,
                format!(
                    "session {} is being used interactively (`linger enter`)",
                    self.meta.name
                ),
            )
            .with_hint("leave it there with `exit`, or detach it there with ~."));
        }
        g.entered = None;
        if let Some(t) = idle_timeout {
            g.settings.idle_timeout_ms = linger_proto::duration::millis(t);
        }
        g.settings.buffering = buffering.unwrap_or(g.settings.buffering);
        self.detach(&mut g, "its client asked for it");
        drop(g);
        self.bump();
        Ok(())
    }

    /// The attached client has shown no sign of life for too long.
    pub fn client_lapsed(&self, client: Uuid, why: &str) {
        let mut g = self.lock();
        if g.settings.attached_to == Some(client) && g.closed.is_none() {
            self.detach(&mut g, why);
            drop(g);
            self.bump();
        }
    }

    pub fn attached_to(&self) -> Option<Uuid> {
        self.lock().settings.attached_to
    }

    /// A client connection went away. If it was receiving this session's output, its
    /// client died during a command: the command keeps running and the session is left
    /// Disconnected for anyone to reconnect.
    pub fn connection_closed(&self, conn: u64) {
        let mut g = self.lock();
        if g.entered.is_some_and(|(c, _)| c == conn) {
            g.entered = None;
        }
        if let Some(s) = g.fg.subscriber.as_ref().filter(|s| s.conn == conn) {
            // An invoke whose end was acknowledged just before its client left (the CLI
            // exits right after acknowledging) got everything: nothing to disconnect.
            let delivered = s.command.is_some_and(|c| g.fg.delivered(c));
            g.fg.subscriber = None;
            if g.closed.is_none() && !delivered {
                self.detach(&mut g, "its client went away while receiving output");
            }
        }
        let mut job_reader_gone = false;
        for c in g.jobs.values_mut() {
            if c.subscriber.as_ref().is_some_and(|s| s.conn == conn) {
                c.subscriber = None;
                job_reader_gone = true;
            }
        }
        if job_reader_gone && g.closed.is_none() {
            self.detach(
                &mut g,
                "its client went away while receiving a job's output",
            );
        }
        drop(g);
        self.bump();
    }

    /// Ends the session if it has been unattached for longer than its idle timeout.
    /// Returns true when it did.
    pub fn expire_if_idle(&self, now_ms: i64) -> bool {
        let g = self.lock();
        if g.terminating.is_some() || !idle_expired(&g.settings, now_ms) {
            return false;
        }
        let idle = human_ms(g.settings.idle_timeout_ms);
        let pending = g.status.pending_output_bytes;
        drop(g);
        tracing::info!(
            session = %self.meta.instance_id,
            name = %self.meta.name,
            owner = %self.meta.owner,
            discarded_output_bytes = pending,
            "idle timeout of {idle} expired: removing the session, ending its processes and discarding its buffered output"
        );
        self.terminate(&format!("its idle timeout of {idle} expired"));
        true
    }
}

/// Attaches to `client` (the idle clock stops); whether that changed anything.
fn attach_to(settings: &mut SessionSettings, client: Uuid) -> bool {
    if settings.attached_to == Some(client) {
        return false;
    }
    settings.attached_to = Some(client);
    settings.disconnected_at_ms = None;
    true
}

/// Detaches (the idle clock starts now, unless it already runs); the client it was
/// attached to.
fn detach_from(settings: &mut SessionSettings, now_ms: i64) -> Option<Uuid> {
    let was = settings.attached_to.take();
    if was.is_some() || settings.disconnected_at_ms.is_none() {
        settings.disconnected_at_ms = Some(now_ms);
    }
    was
}

/// Whether the session is attached to a client other than `client` (which may then neither
/// use it nor take it over: SPEC §6).
fn attached_to_another(settings: &SessionSettings, client: Uuid) -> bool {
    settings.attached_to.is_some_and(|other| other != client)
}

/// Whether the session is entered from a connection other than `conn`.
fn entered_elsewhere(entered: Option<(u64, u64)>, conn: u64) -> bool {
    entered.is_some_and(|(c, _)| c != conn)
}

/// Whether the end of request `rid` of `conn` (any of its requests, for None) ends the
/// session's enter mark.
fn ends_enter(entered: Option<(u64, u64)>, conn: u64, rid: Option<u64>) -> bool {
    entered.is_some_and(|(c, r)| c == conn && rid.is_none_or(|rid| rid == r))
}

/// Whether a session with these settings has been idle past its idle timeout at `now_ms`:
/// attached to nobody, since `disconnected_at_ms`, for at least `idle_timeout_ms`.
fn idle_expired(settings: &SessionSettings, now_ms: i64) -> bool {
    if settings.attached_to.is_some() {
        return false;
    }
    let timeout = i64::try_from(settings.idle_timeout_ms).unwrap_or(i64::MAX);
    settings
        .disconnected_at_ms
        .is_some_and(|since| now_ms >= since.saturating_add(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(attached: bool, since: Option<i64>, timeout: u64) -> SessionSettings {
        SessionSettings {
            buffering: BufferingMode::Block,
            attached_to: attached.then(Uuid::new_v4),
            disconnected_at_ms: since,
            idle_timeout_ms: timeout,
        }
    }

    #[test]
    fn attaching_stops_the_idle_clock_and_detaching_starts_it_once() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut s = settings(false, Some(100), 500);
        assert!(attach_to(&mut s, a));
        assert_eq!((s.attached_to, s.disconnected_at_ms), (Some(a), None));
        assert!(
            !attach_to(&mut s, a),
            "already attached: nothing to tell the host"
        );
        assert!(attached_to_another(&s, b));
        assert!(!attached_to_another(&s, a));
        assert_eq!(detach_from(&mut s, 200), Some(a));
        assert_eq!((s.attached_to, s.disconnected_at_ms), (None, Some(200)));
        assert_eq!(detach_from(&mut s, 300), None);
        assert_eq!(
            s.disconnected_at_ms,
            Some(200),
            "the clock keeps running from the first"
        );
        assert!(
            !attached_to_another(&s, b),
            "attached to nobody: anyone may connect"
        );
        let mut fresh = settings(false, None, 500);
        assert_eq!(detach_from(&mut fresh, 400), None);
        assert_eq!(
            fresh.disconnected_at_ms,
            Some(400),
            "a session never attached starts its clock"
        );
    }

    #[test]
    fn an_entered_session_belongs_to_its_connection() {
        let entered = Some((7, 3));
        assert!(entered_elsewhere(entered, 8));
        assert!(!entered_elsewhere(entered, 7));
        assert!(!entered_elsewhere(None, 8));
        assert!(ends_enter(entered, 7, Some(3)));
        assert!(
            ends_enter(entered, 7, None),
            "its connection closing ends it"
        );
        assert!(
            !ends_enter(entered, 7, Some(4)),
            "another request of that connection"
        );
        assert!(!ends_enter(entered, 8, None));
    }

    #[test]
    fn a_session_expires_once_idle_for_its_timeout_and_never_while_attached() {
        assert!(!idle_expired(&settings(false, Some(1000), 500), 1499));
        assert!(idle_expired(&settings(false, Some(1000), 500), 1500));
        assert!(
            !idle_expired(&settings(true, Some(1000), 500), 9999),
            "attached"
        );
        assert!(
            !idle_expired(&settings(false, None, 500), 9999),
            "never disconnected"
        );
        assert!(
            !idle_expired(&settings(false, Some(i64::MAX - 1), u64::MAX), i64::MAX - 1),
            "no overflow"
        );
    }
}
