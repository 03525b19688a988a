//! The embedded store: registrar bindings kept in SQLite so a restart
//! keeps them.
//!
//! Owns: the database file (WAL journal, one table), loading every binding
//! at start-up, and a writer thread fed by a bounded channel, so the call
//! engine never waits for the disk: [`Store::save`] and [`Store::remove`]
//! only enqueue, and when the queue is full the change is dropped and
//! counted (the binding is still served from memory; the UA's next refresh
//! writes it again).
//!
//! Does not own: the registrar rules or the clock. Expiry times are Unix
//! seconds chosen by the caller; [`Store::open`] returns what is on disk
//! and the caller drops what has expired.
//!
//! SQLite comes from `rusqlite` with the `bundled` feature (no system
//! library needed); nothing here is hand-written beyond the schema.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use rusqlite::{Connection, params};

/// Changes queued for the writer before [`Store::save`] starts dropping.
pub const QUEUE_CAPACITY: usize = 4096;
/// Changes written per SQLite transaction at most.
const BATCH: usize = 512;

/// Errors opening the store. Writes that fail later are counted, not returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, created or read (config: path, permissions).
    #[error("{path}: {source}")]
    Database {
        /// The file.
        path: String,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The writer thread could not be started (internal).
    #[error("cannot start the store writer thread: {0}")]
    Thread(std::io::Error),
}

/// One binding as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBinding {
    /// The registered user.
    pub user: String,
    /// The Contact URI.
    pub contact: String,
    /// Zone name of the flow.
    pub zone: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The flow's remote address.
    pub remote: SocketAddr,
    /// Expiry, Unix seconds.
    pub expires_unix: u64,
    /// Call-ID of the REGISTER.
    pub call_id: String,
    /// Its CSeq.
    pub cseq: u32,
    /// Registered from behind NAT.
    pub nated: bool,
}

enum Op {
    Save(StoredBinding),
    Remove { user: String, contact: String },
}

/// Counters of the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Changes written.
    pub written: u64,
    /// Changes dropped because the queue was full.
    pub dropped: u64,
    /// Changes SQLite refused.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
}

/// Handle to the open store.
#[derive(Debug)]
pub struct Store {
    tx: Option<SyncSender<Op>>,
    writer: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

fn open_db(path: &Path) -> Result<Connection, rusqlite::Error> {
    let db = Connection::open(path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS bindings (
            user TEXT NOT NULL,
            contact TEXT NOT NULL,
            zone TEXT NOT NULL,
            transport TEXT NOT NULL,
            remote TEXT NOT NULL,
            expires_unix INTEGER NOT NULL,
            call_id TEXT NOT NULL,
            cseq INTEGER NOT NULL,
            nated INTEGER NOT NULL,
            PRIMARY KEY (user, contact)
        )",
    )?;
    Ok(db)
}

fn load(db: &Connection) -> Result<Vec<StoredBinding>, rusqlite::Error> {
    let mut st = db.prepare(
        "SELECT user, contact, zone, transport, remote, expires_unix, call_id, cseq, nated FROM bindings",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, i64>(7)?,
            r.get::<_, i64>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (user, contact, zone, transport, remote, exp, call_id, cseq, nated) = row?;
        // A row that does not decode (edited by hand) is skipped.
        let Ok(remote) = remote.parse() else { continue };
        out.push(StoredBinding {
            user,
            contact,
            zone,
            transport,
            remote,
            expires_unix: u64::try_from(exp).unwrap_or(0),
            call_id,
            cseq: u32::try_from(cseq).unwrap_or(0),
            nated: nated != 0,
        });
    }
    Ok(out)
}

impl Store {
    /// Opens (creating if needed) the database at `path`, returns its
    /// bindings and starts the writer. Rows expired before `now_unix` are
    /// deleted and not returned.
    pub fn open(path: &Path, now_unix: u64) -> Result<(Store, Vec<StoredBinding>), StoreError> {
        let err = |source| StoreError::Database {
            path: path.display().to_string(),
            source,
        };
        let db = open_db(path).map_err(err)?;
        db.execute(
            "DELETE FROM bindings WHERE expires_unix <= ?1",
            params![i64::try_from(now_unix).unwrap_or(i64::MAX)],
        )
        .map_err(err)?;
        let bindings = load(&db).map_err(err)?;
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let writer = std::thread::Builder::new()
            .name("palisade-store".into())
            .spawn(move || writer(db, rx, &c))
            .map_err(StoreError::Thread)?;
        Ok((
            Store {
                tx: Some(tx),
                writer: Some(writer),
                counters,
            },
            bindings,
        ))
    }

    fn enqueue(&self, op: Op) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(op) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues an insert-or-replace. Never blocks; false when dropped.
    pub fn save(&self, b: StoredBinding) -> bool {
        self.enqueue(Op::Save(b))
    }

    /// Queues a removal. Never blocks; false when dropped.
    pub fn remove(&self, user: &str, contact: &str) -> bool {
        self.enqueue(Op::Remove {
            user: user.to_owned(),
            contact: contact.to_owned(),
        })
    }

    /// The writer's counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued and stops the writer (blocks: call at exit,
    /// off the engine's path).
    pub fn close(mut self) -> StoreStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn apply(db: &Connection, op: &Op) -> Result<(), rusqlite::Error> {
    match op {
        Op::Save(b) => db
            .execute(
                "INSERT OR REPLACE INTO bindings
                 (user, contact, zone, transport, remote, expires_unix, call_id, cseq, nated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    b.user,
                    b.contact,
                    b.zone,
                    b.transport,
                    b.remote.to_string(),
                    i64::try_from(b.expires_unix).unwrap_or(i64::MAX),
                    b.call_id,
                    i64::from(b.cseq),
                    i64::from(b.nated),
                ],
            )
            .map(|_| ()),
        Op::Remove { user, contact } => db
            .execute(
                "DELETE FROM bindings WHERE user = ?1 AND contact = ?2",
                params![user, contact],
            )
            .map(|_| ()),
    }
}

/// The writer thread: waits for a change, then writes it and whatever else
/// is queued (up to [`BATCH`]) in one transaction. Ends when every sender is gone.
fn writer(mut db: Connection, rx: Receiver<Op>, counters: &Counters) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let result = db.transaction().and_then(|tx| {
            for op in &ops {
                if apply(&tx, op).is_err() {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            tx.commit()
        });
        match result {
            Ok(()) => {
                counters
                    .written
                    .fetch_add(ops.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                counters
                    .errors
                    .fetch_add(ops.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(user: &str, contact: &str, exp: u64) -> StoredBinding {
        StoredBinding {
            user: user.into(),
            contact: contact.into(),
            zone: "inside".into(),
            transport: "udp".into(),
            remote: "127.0.0.10:5070".parse().unwrap(),
            expires_unix: exp,
            call_id: "c1".into(),
            cseq: 7,
            nated: true,
        }
    }

    #[test]
    fn bindings_survive_reopening_and_expired_rows_are_purged() {
        let dir = std::env::temp_dir().join(format!("palisade-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.sqlite");
        let (s, loaded) = Store::open(&path, 1000).unwrap();
        assert!(loaded.is_empty());
        assert!(s.save(binding("alice", "sip:a@10.0.0.1", 2000)));
        assert!(s.save(binding("alice", "sip:a2@10.0.0.1", 1500)));
        assert!(s.save(binding("bob", "sip:b@10.0.0.2", 2000)));
        assert!(s.save(binding("bob", "sip:b@10.0.0.2", 3000)), "replace");
        assert!(s.remove("alice", "sip:a@10.0.0.1"));
        let stats = s.close();
        assert_eq!(stats.written, 5);
        assert_eq!(stats.errors + stats.dropped, 0);
        let (s, mut loaded) = Store::open(&path, 1200).unwrap();
        loaded.sort_by(|a, b| a.user.cmp(&b.user));
        assert_eq!(
            loaded,
            vec![
                binding("alice", "sip:a2@10.0.0.1", 1500),
                binding("bob", "sip:b@10.0.0.2", 3000)
            ]
        );
        drop(s);
        let (_s, loaded) = Store::open(&path, 1600).unwrap();
        assert_eq!(loaded.len(), 1, "alice's binding expired at 1500");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unopenable_path_is_an_error() {
        let e = Store::open(Path::new("/nonexistent-dir/x/y.sqlite"), 0).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir"), "{e}");
    }
}
