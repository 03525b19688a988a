//! Keeping Palisade registered to a carrier (RFC 3261 section 10.2):
//! REGISTER, answer a 401/407 challenge once per nonce with digest
//! credentials, refresh before the granted expiry, back off exponentially
//! on failure. The machine says *when* to send and with which credentials;
//! the engine builds and sends the REGISTER and feeds the responses back.

use std::time::{Duration, Instant};

use palisade_digest::{Challenge, Credentials, client_credentials};

/// Timing of one outbound registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationTimers {
    /// Expires asked for.
    pub expires_secs: u32,
    /// First retry delay after a failure; doubles per failure.
    pub retry_secs: u32,
    /// Longest retry delay.
    pub max_retry_secs: u32,
}

/// What the engine must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a REGISTER with this CSeq, Expires and (when challenged) these
    /// credentials in `Authorization` (`proxy == false`) or
    /// `Proxy-Authorization` (`proxy == true`).
    Register {
        /// CSeq number (one Call-ID for the machine's life).
        cseq: u32,
        /// Expires to ask for.
        expires_secs: u32,
        /// Credentials, and whether they answer a proxy challenge.
        auth: Option<(bool, Credentials)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to (re)send at `at`.
    Waiting { at: Instant },
    /// A REGISTER is out; `authed` = it carried credentials for a fresh challenge.
    Pending { authed: bool },
}

/// One carrier registration.
pub struct OutboundRegistration {
    username: String,
    password: String,
    /// The Request-URI, which is also the digest-uri.
    uri: String,
    timers: RegistrationTimers,
    state: State,
    cseq: u32,
    failures: u32,
    /// Registered until then (None: not registered).
    registered_until: Option<Instant>,
    /// The last challenge, reused on refreshes with the next nonce count.
    challenge: Option<(bool, Challenge)>,
    nc: u32,
    cnonce_seed: u64,
    /// Counters.
    successes: u64,
    failures_total: u64,
}

impl std::fmt::Debug for OutboundRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundRegistration")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("uri", &self.uri)
            .field("state", &self.state)
            .field("registered_until", &self.registered_until)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl OutboundRegistration {
    /// A machine that sends its first REGISTER at `now`. `cseq` is the
    /// first CSeq; `cnonce_seed` makes client nonces unpredictable.
    pub fn new(
        now: Instant,
        username: &str,
        password: &str,
        uri: &str,
        timers: RegistrationTimers,
        cseq: u32,
        cnonce_seed: u64,
    ) -> Self {
        OutboundRegistration {
            username: username.to_owned(),
            password: password.to_owned(),
            uri: uri.to_owned(),
            timers,
            state: State::Waiting { at: now },
            cseq,
            failures: 0,
            registered_until: None,
            challenge: None,
            nc: 0,
            cnonce_seed,
            successes: 0,
            failures_total: 0,
        }
    }

    /// Whether the registration is up at `now`.
    pub fn is_registered(&self, now: Instant) -> bool {
        self.registered_until.is_some_and(|u| now < u)
    }

    /// When [`OutboundRegistration::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { at } => Some(match self.registered_until {
                Some(u) => at.min(u),
                None => at,
            }),
            State::Pending { .. } => self.registered_until,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Successful and failed registrations since start.
    pub fn totals(&self) -> (u64, u64) {
        (self.successes, self.failures_total)
    }

    /// Time passes: maybe send (first REGISTER, refresh or retry); a
    /// registration whose expiry passed is dropped.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        if self.registered_until.is_some_and(|u| now >= u) {
            self.registered_until = None;
        }
        match self.state {
            State::Waiting { at } if now >= at => {
                // Refreshes reuse the last challenge with the next nonce count.
                let auth = self.challenge.clone().map(|(proxy, ch)| {
                    self.nc = self.nc.wrapping_add(1);
                    (proxy, self.credentials(&ch))
                });
                // Not `authed`: a reused nonce may be refused with a fresh
                // challenge, which is then answered once more.
                Some(self.send(false, auth))
            }
            _ => None,
        }
    }

    fn credentials(&self, ch: &Challenge) -> Credentials {
        let cnonce = format!(
            "{:016x}",
            self.cnonce_seed ^ u64::from(self.cseq).rotate_left(17) ^ u64::from(self.nc)
        );
        client_credentials(
            ch,
            &self.username,
            &self.password,
            "REGISTER",
            &self.uri,
            &cnonce,
            self.nc,
        )
    }

    fn send(&mut self, authed: bool, auth: Option<(bool, Credentials)>) -> Action {
        self.cseq = self.cseq.wrapping_add(1) & 0x7fff_ffff;
        self.state = State::Pending { authed };
        Action::Register {
            cseq: self.cseq,
            expires_secs: self.timers.expires_secs,
            auth,
        }
    }

    /// The final response to the pending REGISTER: `status` (408 for a
    /// timeout), the challenge of a 401/407 (`proxy` = 407), and the expiry
    /// the registrar granted for our contact (or in Expires) on a 2xx.
    pub fn on_response(
        &mut self,
        now: Instant,
        status: u16,
        challenge: Option<(bool, Challenge)>,
        granted_secs: Option<u32>,
    ) -> Option<Action> {
        let State::Pending { authed } = self.state else {
            return None;
        };
        match status {
            200..=299 => {
                let secs = granted_secs.unwrap_or(self.timers.expires_secs).max(1);
                let granted = Duration::from_secs(u64::from(secs));
                self.registered_until = Some(now + granted);
                self.failures = 0;
                self.successes += 1;
                self.state = State::Waiting {
                    at: now + refresh_delay(granted),
                };
                None
            }
            401 | 407 => match challenge {
                // A fresh challenge answers a REGISTER without (valid-nonce)
                // credentials; a second one after our credentials means the
                // password is wrong, unless the server says the nonce was stale.
                Some((proxy, ch)) if !authed || ch.stale => {
                    self.nc = 1;
                    let creds = self.credentials(&ch);
                    self.challenge = Some((proxy, ch));
                    Some(self.send(true, Some((proxy, creds))))
                }
                _ => {
                    self.challenge = None;
                    self.fail(now);
                    None
                }
            },
            _ => {
                self.fail(now);
                None
            }
        }
    }

    fn fail(&mut self, now: Instant) {
        // Start the next round afresh: no stale credentials.
        self.challenge = None;
        self.failures = self.failures.saturating_add(1);
        self.failures_total += 1;
        self.registered_until = None;
        let shift = self.failures.saturating_sub(1).min(16);
        let delay = u64::from(self.timers.retry_secs)
            .saturating_mul(1 << shift)
            .min(u64::from(self.timers.max_retry_secs))
            .max(1);
        self.state = State::Waiting {
            at: now + Duration::from_secs(delay),
        };
    }
}

/// Refresh before expiry: half-way for short registrations, a minute
/// before for long ones.
fn refresh_delay(granted: Duration) -> Duration {
    let margin = (granted / 2).min(Duration::from_secs(60));
    granted - margin
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests: one real origin for the virtual clock
mod tests {
    use super::*;
    use palisade_digest::{Algorithm, ha1, verify};

    const T: RegistrationTimers = RegistrationTimers {
        expires_secs: 600,
        retry_secs: 5,
        max_retry_secs: 60,
    };

    fn challenge(nonce: &str, stale: bool) -> Challenge {
        Challenge {
            realm: "carrier".into(),
            nonce: nonce.into(),
            opaque: None,
            algorithm: Algorithm::Md5,
            qop_auth: true,
            stale,
        }
    }

    fn creds(a: &Option<Action>) -> Option<Credentials> {
        match a {
            Some(Action::Register { auth, .. }) => auth.clone().map(|(_, c)| c),
            None => None,
        }
    }

    #[test]
    fn challenge_then_ok_then_refresh_before_expiry() {
        let t0 = Instant::now();
        let mut r = OutboundRegistration::new(t0, "u", "pw", "sip:10.0.0.1", T, 10, 7);
        assert_eq!(r.poll_timeout(), Some(t0));
        let first = r.handle_timeout(t0);
        assert!(matches!(
            first,
            Some(Action::Register {
                cseq: 11,
                auth: None,
                ..
            })
        ));
        assert!(!r.is_registered(t0));
        let second = r.on_response(t0, 401, Some((false, challenge("n1", false))), None);
        let c = creds(&second).unwrap();
        assert!(matches!(second, Some(Action::Register { cseq: 12, .. })));
        assert_eq!(c.nc, Some(1));
        assert!(verify(
            &c,
            &ha1(Algorithm::Md5, "u", "carrier", "pw"),
            "REGISTER"
        ));
        assert_eq!(r.on_response(t0, 200, None, Some(120)), None);
        assert!(r.is_registered(t0));
        // 120 s granted: refresh at 60 s.
        let refresh = t0 + Duration::from_secs(60);
        assert_eq!(r.poll_timeout(), Some(refresh));
        assert_eq!(r.handle_timeout(refresh - Duration::from_millis(1)), None);
        let again = r.handle_timeout(refresh);
        let c2 = creds(&again).unwrap();
        assert_eq!(c2.nc, Some(2), "the nonce is reused with the next count");
        assert_eq!(c2.nonce, "n1");
        assert!(
            r.is_registered(refresh),
            "still up while the refresh is out"
        );
        // No answer at all: up until the granted expiry, then down.
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(120)));
        r.handle_timeout(t0 + Duration::from_secs(120));
        assert!(!r.is_registered(t0 + Duration::from_secs(120)));
    }

    #[test]
    fn long_registrations_refresh_a_minute_early() {
        assert_eq!(
            refresh_delay(Duration::from_secs(3600)),
            Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn wrong_password_backs_off_exponentially() {
        let t0 = Instant::now();
        let mut r = OutboundRegistration::new(t0, "u", "bad", "sip:h", T, 1, 7);
        let mut now = t0;
        let mut delays = Vec::new();
        for round in 0..6 {
            r.handle_timeout(now).unwrap();
            let a = r.on_response(
                now,
                401,
                Some((true, challenge(&format!("n{round}"), false))),
                None,
            );
            assert!(matches!(
                a,
                Some(Action::Register {
                    auth: Some((true, _)),
                    ..
                })
            ));
            // Our credentials are refused with a fresh (not stale) challenge.
            let b = r.on_response(now, 401, Some((true, challenge("nx", false))), None);
            assert_eq!(b, None);
            assert!(!r.is_registered(now));
            let next = r.poll_timeout().unwrap();
            delays.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(delays, vec![5, 10, 20, 40, 60, 60]);
        assert_eq!(r.failures(), 6);
        assert_eq!(r.totals(), (0, 6));
    }

    #[test]
    fn stale_nonce_is_retried_not_failed() {
        let t0 = Instant::now();
        let mut r = OutboundRegistration::new(t0, "u", "pw", "sip:h", T, 1, 7);
        r.handle_timeout(t0);
        r.on_response(t0, 401, Some((false, challenge("n1", false))), None)
            .unwrap();
        let a = r.on_response(t0, 401, Some((false, challenge("n2", true))), None);
        assert_eq!(creds(&a).unwrap().nonce, "n2");
        assert_eq!(r.failures(), 0);
    }

    #[test]
    fn other_failures_and_timeouts_back_off_and_recover() {
        let t0 = Instant::now();
        let mut r = OutboundRegistration::new(t0, "u", "pw", "sip:h", T, 1, 7);
        r.handle_timeout(t0);
        r.on_response(t0, 408, None, None);
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(5);
        r.handle_timeout(t1).unwrap();
        r.on_response(t1, 503, None, None);
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(10)));
        let t2 = t1 + Duration::from_secs(10);
        r.handle_timeout(t2).unwrap();
        r.on_response(t2, 200, None, None);
        assert!(r.is_registered(t2));
        assert_eq!(r.failures(), 0);
        // Granted nothing explicit: the requested 600 s, refreshed 60 s early.
        assert_eq!(r.poll_timeout(), Some(t2 + Duration::from_secs(540)));
        // Responses with nothing pending are ignored.
        assert_eq!(
            r.on_response(t2, 401, Some((false, challenge("z", false))), None),
            None
        );
        assert!(
            !format!("{r:?}").contains("pw"),
            "the password is never printed"
        );
    }
}
