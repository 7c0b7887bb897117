//! Which clients have shown a sign of life, and when: the heartbeat rule, without I/O. The
//! daemon says what it heard and when it looks; this says who has been silent too long.
//!
//! Two rules beyond "last heard + timeout": a client not heard from since the daemon started
//! counts from the start (a restart is not its silence), and when the daemon itself did not
//! run for a while (SIGSTOP, a suspended VM, a swap storm: its periodic look came late), every
//! client's last sign of life moves forward by the time lost, because what they sent meanwhile
//! is still unread in their sockets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

pub struct Liveness {
    /// When each client last showed a sign of life (any message).
    heard: HashMap<Uuid, Instant>,
    /// Who each client said it was and where it connected from, for a refusal naming
    /// the client that holds a session.
    who: HashMap<Uuid, String>,
    /// Where clients not heard from since the start count from.
    started: Instant,
    /// When the daemon last looked.
    looked: Instant,
    /// How often the daemon looks when it runs normally.
    period: Duration,
    /// A look this much later than the last one means the daemon was stalled.
    stall_after: Duration,
}

impl Liveness {
    pub fn new(now: Instant, period: Duration, stall_after: Duration) -> Liveness {
        Liveness {
            heard: HashMap::new(),
            who: HashMap::new(),
            started: now,
            looked: now,
            period,
            stall_after,
        }
    }

    /// The daemon looks at `now`. Returns how long it had not, when that was a stall (and
    /// then everyone's silence has been forgiven the time lost).
    pub fn look(&mut self, now: Instant) -> Option<Duration> {
        let gap = now.saturating_duration_since(self.looked);
        self.looked = now;
        if gap <= self.stall_after {
            return None;
        }
        let lost = gap.saturating_sub(self.period);
        for seen in self
            .heard
            .values_mut()
            .chain(std::iter::once(&mut self.started))
        {
            *seen = (*seen + lost).min(now);
        }
        Some(gap)
    }

    /// Whether `client` has been silent for longer than `timeout` at `now`.
    pub fn lapsed(&self, client: Uuid, now: Instant, timeout: Duration) -> bool {
        let last = self.heard.get(&client).copied().unwrap_or(self.started);
        now.saturating_duration_since(last) > timeout
    }

    pub fn heard(&mut self, client: Uuid, now: Instant) {
        self.heard.insert(client, now);
    }

    /// `client` connected, describing itself as `who`.
    pub fn introduce(&mut self, client: Uuid, who: String) {
        self.who.insert(client, who);
    }

    /// How `client` described itself, and for how long it has been silent at `now`.
    pub fn describe(&self, client: Uuid, now: Instant) -> (Option<&str>, Duration) {
        let last = self.heard.get(&client).copied().unwrap_or(self.started);
        (
            self.who.get(&client).map(String::as_str),
            now.saturating_duration_since(last),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(250);
    const STALL: Duration = Duration::from_secs(2);
    const TIMEOUT: Duration = Duration::from_secs(10);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_client_lapses_after_the_timeout_of_silence() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, PERIOD, STALL);
        let c = Uuid::from_u128(1);
        l.heard(c, t0 + secs(1));
        assert!(
            !l.lapsed(c, t0 + secs(11), TIMEOUT),
            "exactly the timeout is not past it"
        );
        assert!(l.lapsed(c, t0 + secs(12), TIMEOUT));
        l.heard(c, t0 + secs(12));
        assert!(!l.lapsed(c, t0 + secs(13), TIMEOUT), "heard again");
    }

    #[test]
    fn a_client_never_heard_counts_from_the_daemons_start() {
        let t0 = Instant::now();
        let l = Liveness::new(t0 + secs(100), PERIOD, STALL);
        let c = Uuid::from_u128(2);
        assert!(!l.lapsed(c, t0 + secs(105), TIMEOUT));
        assert!(l.lapsed(c, t0 + secs(111), TIMEOUT));
    }

    #[test]
    fn a_stalled_daemon_forgives_the_silence_it_could_not_hear() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, PERIOD, STALL);
        let (early, never) = (Uuid::from_u128(3), Uuid::from_u128(4));
        l.heard(early, t0);
        // Regular looks: nothing moves.
        for q in 1..=8 {
            assert_eq!(l.look(t0 + PERIOD * q), None);
        }
        // Stopped for a minute, far past the timeout.
        let resumed = t0 + secs(62);
        assert_eq!(l.look(resumed), Some(resumed - (t0 + PERIOD * 8)));
        assert!(
            !l.lapsed(early, resumed, TIMEOUT),
            "heard just before the stall"
        );
        assert!(!l.lapsed(never, resumed, TIMEOUT), "the start moved too");
        // Time after the stall counts again.
        assert!(l.lapsed(early, resumed + secs(11), TIMEOUT));
    }

    #[test]
    fn a_short_gap_is_no_stall() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, PERIOD, STALL);
        let c = Uuid::from_u128(5);
        l.heard(c, t0);
        assert_eq!(l.look(t0 + secs(2)), None);
        assert!(l.lapsed(c, t0 + secs(11), TIMEOUT));
    }
}
