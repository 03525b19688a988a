//! Timer values (RFC 3261 section 17.1.1.1 and Table 4 of appendix A).

use std::time::Duration;

use crate::Error;

/// Timer D on unreliable transports: "at least 32 seconds" (RFC 3261
/// 17.1.1.2). It is fixed, not derived from T1, as in the RFC's Table 4.
pub const TIMER_D_UNRELIABLE: Duration = Duration::from_secs(32);

/// Smallest T1 the machines use. A zero T1 would make retransmission timers
/// due again at the instant they fire.
const MIN_T1: Duration = Duration::from_millis(1);
/// Largest value the machines use for T1, T2 or T4 (64 * T1 is then 64 h,
/// far from any `Instant` overflow).
const MAX_TIMER: Duration = Duration::from_secs(3600);

/// The base timer values of RFC 3261 17.1.1.1. Every other timer derives
/// from them:
///
/// | timer | unreliable transport        | reliable transport | meaning                               |
/// |-------|-----------------------------|--------------------|---------------------------------------|
/// | A     | T1, doubling (uncapped)     | off                | INVITE request retransmit             |
/// | B     | 64*T1                       | 64*T1              | INVITE transaction timeout            |
/// | D     | 32 s ([`TIMER_D_UNRELIABLE`])| 0                 | wait for response retransmits         |
/// | E     | T1, doubling up to T2       | off                | non-INVITE request retransmit         |
/// | F     | 64*T1                       | 64*T1              | non-INVITE transaction timeout        |
/// | G     | T1, doubling up to T2       | off                | INVITE final response retransmit      |
/// | H     | 64*T1                       | 64*T1              | wait for ACK                          |
/// | I     | T4                          | 0                  | wait for ACK retransmits              |
/// | J     | 64*T1                       | 0                  | wait for non-INVITE request retransmits|
/// | K     | T4                          | 0                  | wait for non-INVITE response retransmits|
/// | L     | 64*T1                       | 64*T1              | server INVITE Accepted (RFC 6026)     |
/// | M     | 64*T1                       | 64*T1              | client INVITE Accepted (RFC 6026)     |
///
/// The machines normalise the values they are given so that no input can
/// make them loop or overflow: T1 is raised to at least 1 ms, T2 to at least
/// T1, and all three are capped at one hour. [`TimerConfig::validate`] reports
/// such values as errors so the configuration loader can refuse them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerConfig {
    /// RTT estimate (RFC default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE
    /// responses (RFC default 4 s).
    pub t2: Duration,
    /// Maximum duration a message remains in the network (RFC default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// Checks the values against what the machines accept unchanged:
    /// 1 ms <= T1 <= T2 <= 1 h and T4 <= 1 h.
    pub fn validate(&self) -> Result<(), Error> {
        if self.t1 < MIN_T1 {
            return Err(Error::InvalidTimerConfig("t1 must be at least 1 ms"));
        }
        if self.t2 < self.t1 {
            return Err(Error::InvalidTimerConfig("t2 must not be smaller than t1"));
        }
        if self.t1 > MAX_TIMER || self.t2 > MAX_TIMER || self.t4 > MAX_TIMER {
            return Err(Error::InvalidTimerConfig(
                "t1, t2 and t4 must not exceed one hour",
            ));
        }
        Ok(())
    }
}

/// Normalised timer values used inside the machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timers {
    pub(crate) t1: Duration,
    pub(crate) t2: Duration,
    pub(crate) t4: Duration,
}

impl Timers {
    pub(crate) fn new(cfg: &TimerConfig) -> Self {
        let t1 = cfg.t1.clamp(MIN_T1, MAX_TIMER);
        let t2 = cfg.t2.clamp(t1, MAX_TIMER);
        let t4 = cfg.t4.min(MAX_TIMER);
        Timers { t1, t2, t4 }
    }

    /// 64*T1: Timers B, F, H, J (unreliable), L, M and the 2xx give-up.
    pub(crate) fn t1_x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_rfc_values() {
        let c = TimerConfig::default();
        assert_eq!(c.t1, Duration::from_millis(500));
        assert_eq!(c.t2, Duration::from_secs(4));
        assert_eq!(c.t4, Duration::from_secs(5));
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(Timers::new(&c).t1_x64(), Duration::from_secs(32));
    }

    #[test]
    fn validate_and_normalise_bad_values() {
        let zero = TimerConfig {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::ZERO,
        };
        assert!(matches!(zero.validate(), Err(Error::InvalidTimerConfig(_))));
        let n = Timers::new(&zero);
        assert_eq!(n.t1, MIN_T1);
        assert_eq!(n.t2, MIN_T1);
        assert_eq!(n.t4, Duration::ZERO);

        let inverted = TimerConfig {
            t1: Duration::from_secs(2),
            t2: Duration::from_secs(1),
            t4: Duration::from_secs(5),
        };
        assert!(inverted.validate().is_err());
        assert_eq!(Timers::new(&inverted).t2, Duration::from_secs(2));

        let huge = TimerConfig {
            t1: Duration::MAX,
            t2: Duration::MAX,
            t4: Duration::MAX,
        };
        assert!(huge.validate().is_err());
        let n = Timers::new(&huge);
        assert_eq!(n.t1, MAX_TIMER);
        assert_eq!(n.t4, MAX_TIMER);
        assert_eq!(n.t1_x64(), MAX_TIMER * 64);
    }
}
