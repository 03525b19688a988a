//! The alert and ban database: one SQLite file in WAL mode, so a restart
//! loses nothing and the `palisade alerts` CLI can work on it while
//! Palisade runs.
//!
//! Owns: the schema, merging alert events into alerts (one active alert per
//! rule and subject: count, last seen, highest severity and the most recent
//! evidence are updated, never a duplicate row), the status lifecycle
//! (open → acknowledged → resolved | false-positive, with who, when and a
//! note), the ban log (source, reason, detail, expiry, whether the kernel
//! holds it), and unban requests from the CLI that the running process picks up.
//!
//! Does not own: deciding anything (`palisade-guard`), nftables
//! (`palisade-nft`), or threads: the binary runs a [`Store`] on a thread of
//! its own behind a bounded channel; nothing here is on the engine's path.
//!
//! SQLite is `rusqlite` with the `bundled` feature (no system library);
//! evidence is a JSON column (`serde_json`), capped per alert.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use palisade_guard::{Alert, AlertEvent, CallEvidence, Severity, Status, Subject};
use rusqlite::{Connection, OptionalExtension, params};

/// Errors, by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operator: no alert with that id.
    #[error("no alert #{0}")]
    NotFound(i64),
    /// The operator: the lifecycle does not allow this change.
    #[error("alert #{id} is {from}; it cannot become {to}")]
    Transition {
        /// The alert.
        id: i64,
        /// Its status.
        from: Status,
        /// The one asked for.
        to: Status,
    },
    /// The host or the file: SQLite failed (unwritable path, corrupt file).
    #[error("alert database: {0}")]
    Db(#[from] rusqlite::Error),
    /// The host: the database directory could not be created.
    #[error("alert database directory: {0}")]
    Dir(std::io::Error),
    /// Internal: a row did not decode.
    #[error("alert database row: {0}")]
    Row(String),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL,
    measure INTEGER NOT NULL,
    threshold INTEGER NOT NULL,
    action TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    status_by TEXT NOT NULL DEFAULT '',
    status_note TEXT NOT NULL DEFAULT '',
    status_at INTEGER NOT NULL DEFAULT 0,
    evidence TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS alerts_subject ON alerts(rule, subject_kind, subject, status);
CREATE TABLE IF NOT EXISTS bans (
    id INTEGER PRIMARY KEY,
    ip TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    kernel INTEGER NOT NULL,
    removed INTEGER NOT NULL DEFAULT 0,
    removed_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS bans_ip ON bans(ip);
CREATE TABLE IF NOT EXISTS unban_requests (
    id INTEGER PRIMARY KEY,
    ip TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    at INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0
);
PRAGMA user_version = 1;
";

/// A recorded ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRecord {
    /// Row id.
    pub id: i64,
    /// The source.
    pub ip: String,
    /// Stable reason (`scanner-user-agent`, `rate-invites`, `fraud`...).
    pub reason: String,
    /// Detail.
    pub detail: String,
    /// When, Unix milliseconds.
    pub created_unix_ms: i64,
    /// Until when, Unix milliseconds.
    pub expires_unix_ms: i64,
    /// Whether nftables holds it (false: in-process only).
    pub kernel: bool,
    /// When it was lifted by an operator (0: not lifted).
    pub removed_unix_ms: i64,
    /// Who lifted it.
    pub removed_by: String,
}

/// The database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

fn severity(s: &str) -> Result<Severity, StoreError> {
    Severity::parse(s).ok_or_else(|| StoreError::Row(format!("severity {s:?}")))
}

fn status(s: &str) -> Result<Status, StoreError> {
    Status::parse(s).ok_or_else(|| StoreError::Row(format!("status {s:?}")))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Keeps the last `max` calls, without repeating a call already kept.
fn merge_evidence(old: Vec<CallEvidence>, new: &[CallEvidence], max: usize) -> Vec<CallEvidence> {
    let mut out = old;
    for e in new {
        if let Some(pos) = out
            .iter()
            .position(|o| o.time_unix_ms == e.time_unix_ms && o.from == e.from && o.to == e.to)
        {
            out.remove(pos);
        }
        out.push(e.clone());
    }
    let excess = out.len().saturating_sub(max.max(1));
    out.drain(..excess);
    out
}

const ALERT_COLUMNS: &str = "id, rule, kind, severity, subject_kind, subject, first_seen, last_seen, count, measure, threshold, action, status, status_by, status_note, status_at, evidence";

impl Store {
    /// Opens (creating when missing) the database at `path`, with WAL.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(StoreError::Dir)?;
        }
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // `journal_mode` answers with the mode in force ("memory" for an
        // in-memory database).
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// The journal mode in force (`wal` for a file).
    pub fn journal_mode(&self) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))?)
    }

    /// Merges `ev` into the active alert for its rule and subject, or opens
    /// a new one. Returns the alert id and whether it was merged.
    pub fn record(
        &mut self,
        ev: &AlertEvent,
        max_evidence: usize,
    ) -> Result<(i64, bool), StoreError> {
        let tx = self.conn.transaction()?;
        let existing: Option<(i64, String, String, i64, i64)> = tx
            .query_row(
                "SELECT id, severity, evidence, first_seen, last_seen FROM alerts
                 WHERE rule = ?1 AND subject_kind = ?2 AND subject = ?3
                   AND status IN ('open', 'acknowledged')
                 ORDER BY id DESC LIMIT 1",
                params![ev.rule, ev.subject.kind, ev.subject.value],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let result = match existing {
            Some((id, sev, evidence, first, last)) => {
                let old_sev = severity(&sev)?;
                let old: Vec<CallEvidence> = serde_json::from_str(&evidence).unwrap_or_default();
                let merged = merge_evidence(old, &ev.evidence, max_evidence);
                let ev_json =
                    serde_json::to_string(&merged).map_err(|e| StoreError::Row(e.to_string()))?;
                let sev = old_sev.max(ev.severity);
                tx.execute(
                    "UPDATE alerts SET severity = ?2, first_seen = ?3, last_seen = ?4,
                        count = count + ?5, measure = ?6,
                        threshold = CASE WHEN ?7 >= 0 THEN ?7 ELSE threshold END,
                        action = CASE WHEN ?8 = 'repeat' THEN action ELSE ?8 END,
                        evidence = ?9
                     WHERE id = ?1",
                    params![
                        id,
                        sev.as_str(),
                        first.min(ev.at_unix_ms),
                        last.max(ev.at_unix_ms),
                        to_i64(ev.occurrences.max(1)),
                        to_i64(ev.measure),
                        if ev.severity >= old_sev {
                            to_i64(ev.threshold)
                        } else {
                            -1
                        },
                        ev.action,
                        ev_json
                    ],
                )?;
                (id, true)
            }
            None => {
                let mut evidence = ev.evidence.clone();
                let excess = evidence.len().saturating_sub(max_evidence.max(1));
                evidence.drain(..excess);
                let ev_json =
                    serde_json::to_string(&evidence).map_err(|e| StoreError::Row(e.to_string()))?;
                tx.execute(
                    "INSERT INTO alerts (rule, kind, severity, subject_kind, subject, first_seen,
                        last_seen, count, measure, threshold, action, evidence)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        ev.rule,
                        ev.kind,
                        ev.severity.as_str(),
                        ev.subject.kind,
                        ev.subject.value,
                        ev.at_unix_ms,
                        to_i64(ev.occurrences.max(1)),
                        to_i64(ev.measure),
                        to_i64(ev.threshold),
                        ev.action,
                        ev_json
                    ],
                )?;
                (tx.last_insert_rowid(), false)
            }
        };
        tx.commit()?;
        Ok(result)
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<[String; 17]> {
        let mut out: [String; 17] = Default::default();
        for (i, slot) in out.iter_mut().enumerate() {
            let v: rusqlite::types::Value = r.get(i)?;
            *slot = match v {
                rusqlite::types::Value::Integer(n) => n.to_string(),
                rusqlite::types::Value::Text(t) => t,
                rusqlite::types::Value::Real(f) => f.to_string(),
                _ => String::new(),
            };
        }
        Ok(out)
    }

    fn decode(c: [String; 17]) -> Result<Alert, StoreError> {
        let int = |s: &str| -> Result<i64, StoreError> {
            s.parse::<i64>()
                .map_err(|_| StoreError::Row(format!("integer {s:?}")))
        };
        let [
            id,
            rule,
            kind,
            sev,
            subject_kind,
            subject,
            first,
            last,
            count,
            measure,
            threshold,
            action,
            st,
            by,
            note,
            at,
            evidence,
        ] = c;
        Ok(Alert {
            id: int(&id)?,
            rule,
            kind,
            severity: severity(&sev)?,
            subject: Subject {
                kind: subject_kind,
                value: subject,
            },
            first_seen_unix_ms: int(&first)?,
            last_seen_unix_ms: int(&last)?,
            count: to_u64(int(&count)?),
            measure: to_u64(int(&measure)?),
            threshold: to_u64(int(&threshold)?),
            action,
            status: status(&st)?,
            status_by: by,
            status_note: note,
            status_at_unix_ms: int(&at)?,
            evidence: serde_json::from_str(&evidence)
                .map_err(|e| StoreError::Row(e.to_string()))?,
        })
    }

    /// Alerts, newest first; only those in `status` when given.
    pub fn list(&self, only: Option<Status>, limit: usize) -> Result<Vec<Alert>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<[String; 17]> = match only {
            Some(s) => {
                let mut st = self.conn.prepare(&format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts WHERE status = ?1 ORDER BY id DESC LIMIT ?2"
                ))?;
                st.query_map(params![s.as_str(), limit], Self::row)?
                    .collect::<Result<_, _>>()?
            }
            None => {
                let mut st = self.conn.prepare(&format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts ORDER BY id DESC LIMIT ?1"
                ))?;
                st.query_map(params![limit], Self::row)?
                    .collect::<Result<_, _>>()?
            }
        };
        rows.into_iter().map(Self::decode).collect()
    }

    /// One alert.
    pub fn get(&self, id: i64) -> Result<Alert, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1"),
                params![id],
                Self::row,
            )
            .optional()?
            .ok_or(StoreError::NotFound(id))?;
        Self::decode(row)
    }

    /// Moves alert `id` to `to`, recording who, a note and when.
    pub fn set_status(
        &mut self,
        id: i64,
        to: Status,
        by: &str,
        note: &str,
        at_unix_ms: i64,
    ) -> Result<Alert, StoreError> {
        let current = self.get(id)?;
        if !current.status.can_become(to) {
            return Err(StoreError::Transition {
                id,
                from: current.status,
                to,
            });
        }
        self.conn.execute(
            "UPDATE alerts SET status = ?2, status_by = ?3, status_note = ?4, status_at = ?5 WHERE id = ?1",
            params![id, to.as_str(), by, note, at_unix_ms],
        )?;
        self.get(id)
    }

    /// Logs a ban.
    pub fn record_ban(
        &mut self,
        ip: IpAddr,
        reason: &str,
        detail: &str,
        created_unix_ms: i64,
        duration: Duration,
        kernel: bool,
    ) -> Result<i64, StoreError> {
        let expires =
            created_unix_ms.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX));
        self.conn.execute(
            "INSERT INTO bans (ip, reason, detail, created, expires, kernel) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![ip.to_string(), reason, detail, created_unix_ms, expires, kernel],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Bans in force at `now_unix_ms` (all bans when `all`), newest first.
    pub fn list_bans(&self, now_unix_ms: i64, all: bool) -> Result<Vec<BanRecord>, StoreError> {
        let sql = if all {
            "SELECT id, ip, reason, detail, created, expires, kernel, removed, removed_by FROM bans
             WHERE ?1 = ?1 ORDER BY id DESC LIMIT 10000"
        } else {
            "SELECT id, ip, reason, detail, created, expires, kernel, removed, removed_by FROM bans
             WHERE expires > ?1 AND removed = 0 ORDER BY id DESC LIMIT 10000"
        };
        let mut st = self.conn.prepare(sql)?;
        let rows = st
            .query_map(params![now_unix_ms], |r| {
                Ok(BanRecord {
                    id: r.get(0)?,
                    ip: r.get(1)?,
                    reason: r.get(2)?,
                    detail: r.get(3)?,
                    created_unix_ms: r.get(4)?,
                    expires_unix_ms: r.get(5)?,
                    kernel: r.get(6)?,
                    removed_unix_ms: r.get(7)?,
                    removed_by: r.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// An operator lifts the bans of `ip`: they are marked removed and the
    /// running process is asked to forget the source. Returns how many
    /// bans were in force.
    pub fn request_unban(
        &mut self,
        ip: IpAddr,
        by: &str,
        at_unix_ms: i64,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE bans SET removed = ?2, removed_by = ?3 WHERE ip = ?1 AND removed = 0 AND expires > ?2",
            params![ip.to_string(), at_unix_ms, by],
        )?;
        tx.execute(
            "INSERT INTO unban_requests (ip, requested_by, at) VALUES (?1, ?2, ?3)",
            params![ip.to_string(), by, at_unix_ms],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Unban requests not yet applied; they are marked done.
    pub fn take_unban_requests(&mut self) -> Result<Vec<IpAddr>, StoreError> {
        let tx = self.conn.transaction()?;
        let rows: Vec<(i64, String)> = {
            let mut st = tx.prepare(
                "SELECT id, ip FROM unban_requests WHERE done = 0 ORDER BY id LIMIT 1000",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        for (id, _) in &rows {
            tx.execute(
                "UPDATE unban_requests SET done = 1 WHERE id = ?1",
                params![id],
            )?;
        }
        tx.commit()?;
        Ok(rows
            .into_iter()
            .filter_map(|(_, ip)| ip.parse().ok())
            .collect())
    }
}

#[cfg(test)]
mod tests;
