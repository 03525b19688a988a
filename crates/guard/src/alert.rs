//! Alert records: what the guard raises, what the store keeps, what the
//! security team acts on.
//!
//! The guard emits [`AlertEvent`]s; the store merges every event for the
//! same rule and subject into one open [`Alert`] (count, last seen, evidence,
//! highest severity) until a person resolves it or marks it a false positive.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The warning level was reached.
    Warning,
    /// The critical level was reached.
    Critical,
}

impl Severity {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses [`Severity::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an alert is in its lifecycle:
/// open → acknowledged → resolved | false-positive (open may also go
/// straight to resolved or false-positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// New or still firing.
    Open,
    /// Someone is on it.
    Acknowledged,
    /// Dealt with.
    Resolved,
    /// Not fraud.
    FalsePositive,
}

impl Status {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
            Status::FalsePositive => "false-positive",
        }
    }

    /// Parses [`Status::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Status::Open),
            "acknowledged" => Some(Status::Acknowledged),
            "resolved" => Some(Status::Resolved),
            "false-positive" => Some(Status::FalsePositive),
            _ => None,
        }
    }

    /// Whether new events for the same rule and subject merge into an alert
    /// in this status (otherwise they open a new alert).
    pub fn is_active(self) -> bool {
        matches!(self, Status::Open | Status::Acknowledged)
    }

    /// Whether a person may move an alert from `self` to `to`.
    pub fn can_become(self, to: Status) -> bool {
        matches!(
            (self, to),
            (Status::Open, Status::Acknowledged)
                | (Status::Open, Status::Resolved)
                | (Status::Open, Status::FalsePositive)
                | (Status::Acknowledged, Status::Resolved)
                | (Status::Acknowledged, Status::FalsePositive)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whom an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subject {
    /// `trunk`, `account` or `source`.
    pub kind: String,
    /// The trunk name, `trunk/caller`, or the IP address.
    pub value: String,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// One call that contributed to an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEvidence {
    /// When the call started, Unix milliseconds.
    pub time_unix_ms: i64,
    /// Caller.
    pub from: String,
    /// Dialled number.
    pub to: String,
    /// Talk time so far or in total, milliseconds.
    pub duration_ms: u64,
    /// `ringing`, `active`, `answered`, `rejected 403`, `ended caller-bye`...
    pub result: String,
}

/// What the guard reports when a rule level is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The rule's name.
    pub rule: String,
    /// The rule's kind (`calls_per_minute`, ...).
    pub kind: String,
    /// Level reached.
    pub severity: Severity,
    /// Whom it is about.
    pub subject: Subject,
    /// The measure that crossed the threshold (calls, minutes, seconds...).
    pub measure: u64,
    /// The threshold it reached.
    pub threshold: u64,
    /// What the guard did (`alert`, `reject`, `teardown`, `ban`,
    /// `dry-run:<action>`, or `repeat` for occurrences flushed later, which
    /// keeps the action already recorded).
    pub action: String,
    /// When, Unix milliseconds.
    pub at_unix_ms: i64,
    /// Occurrences this event stands for (repeats within the throttle).
    pub occurrences: u64,
    /// The calls that triggered it, most recent last.
    pub evidence: Vec<CallEvidence>,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Database id.
    pub id: i64,
    /// Rule name.
    pub rule: String,
    /// Rule kind.
    pub kind: String,
    /// Highest severity seen.
    pub severity: Severity,
    /// Whom it is about.
    pub subject: Subject,
    /// First event, Unix milliseconds.
    pub first_seen_unix_ms: i64,
    /// Last event, Unix milliseconds.
    pub last_seen_unix_ms: i64,
    /// Occurrences merged into it.
    pub count: u64,
    /// Last measure and threshold.
    pub measure: u64,
    /// The threshold of the severity reached.
    pub threshold: u64,
    /// Last action taken.
    pub action: String,
    /// Lifecycle status.
    pub status: Status,
    /// Who set the status (empty while open).
    pub status_by: String,
    /// Their note.
    pub status_note: String,
    /// When the status was set, Unix milliseconds (0 while open).
    pub status_at_unix_ms: i64,
    /// Most recent calls, capped.
    pub evidence: Vec<CallEvidence>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_moves_forward_only() {
        use Status::*;
        assert!(Open.can_become(Acknowledged));
        assert!(Open.can_become(Resolved));
        assert!(Acknowledged.can_become(FalsePositive));
        assert!(!Resolved.can_become(Open));
        assert!(!Resolved.can_become(Acknowledged));
        assert!(!FalsePositive.can_become(Resolved));
        assert!(!Acknowledged.can_become(Open));
        for s in [Open, Acknowledged, Resolved, FalsePositive] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert!(Open.is_active() && Acknowledged.is_active());
        assert!(!Resolved.is_active() && !FalsePositive.is_active());
    }
}
