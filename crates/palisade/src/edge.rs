//! The binary's side of the edge: the binding store (opened at start,
//! loaded into the engine, fed from the engine's edge events), logging of
//! edge events, and the wall clock the store's expiry times need.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_b2bua::{EdgeEvent, Engine};
use palisade_config::{Config, Transport, ZoneId};
use palisade_registrar::{Binding, BindingFlow};
use palisade_store::{Store, StoredBinding};
use tracing::{info, warn};

/// Seconds since the Unix epoch: bindings are stored with wall-clock
/// expiry so they mean something after a restart.
pub(crate) fn unix_now() -> u64 {
    crate::unix_time().as_secs()
}

/// Opens the registrar's store (if configured) and loads its bindings into
/// `engine`. Bindings whose zone no longer exists are dropped.
pub(crate) fn open_store(
    cfg: &Config,
    engine: &mut Engine,
    now: Instant,
) -> Result<Option<Store>, palisade_store::StoreError> {
    let Some(path) = cfg.registrar().and_then(|r| r.database_path.as_ref()) else {
        return Ok(None);
    };
    let unix = unix_now();
    let (store, rows) = Store::open(path, unix)?;
    let loaded = rows.len();
    let bindings: Vec<Binding> = rows
        .into_iter()
        .filter_map(|r| {
            let zone = cfg.zone_by_name(&r.zone)?.id;
            let transport: Transport = r.transport.parse().ok()?;
            let left = Duration::from_secs(r.expires_unix.saturating_sub(unix));
            Some(Binding {
                user: r.user,
                contact: r.contact,
                flow: BindingFlow {
                    zone: zone.0,
                    transport,
                    remote: r.remote,
                },
                expires_at: now + left,
                call_id: r.call_id,
                cseq: r.cseq,
                nated: r.nated,
            })
        })
        .collect();
    let restored = engine.restore_bindings(now, bindings);
    info!(path = %path.display(), loaded, restored, "registrar bindings loaded");
    Ok(Some(store))
}

/// Logs an edge event and persists binding changes.
pub(crate) fn on_event(cfg: &Arc<Config>, store: Option<&Store>, now: Instant, ev: EdgeEvent) {
    match ev {
        EdgeEvent::BindingSaved(b) => {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            info!(event = %"registered", user = %b.user, contact = %b.contact,
                remote = %b.flow.remote, transport = %b.flow.transport, nated = b.nated,
                expires_seconds = left);
            if let Some(s) = store {
                let zone = cfg
                    .zone(ZoneId(b.flow.zone))
                    .map_or_else(String::new, |z| z.name.clone());
                let ok = s.save(StoredBinding {
                    user: b.user,
                    contact: b.contact,
                    zone,
                    transport: b.flow.transport.to_string().to_ascii_lowercase(),
                    remote: b.flow.remote,
                    expires_unix: unix_now() + left,
                    call_id: b.call_id,
                    cseq: b.cseq,
                    nated: b.nated,
                });
                if !ok {
                    warn!("binding store queue full: change not persisted");
                }
            }
        }
        EdgeEvent::BindingRemoved { user, contact } => {
            info!(event = %"unregistered", user = %user, contact = %contact);
            if let Some(s) = store
                && !s.remove(&user, &contact)
            {
                warn!("binding store queue full: removal not persisted");
            }
        }
        EdgeEvent::Registration { trunk, up, status } => {
            if up {
                info!(event = %"trunk-registered", trunk = %trunk, status);
            } else {
                warn!(event = %"trunk-unregistered", trunk = %trunk, status,
                    "calls to this trunk are refused until it registers");
            }
        }
        EdgeEvent::MemberHealth { trunk, member, up } => {
            if up {
                info!(event = %"member-up", trunk = %trunk, member = %member);
            } else {
                warn!(event = %"member-down", trunk = %trunk, member = %member);
            }
        }
        EdgeEvent::AuthFailed { flow, user } => {
            // The user name only: credentials are never logged.
            info!(event = %"auth-failed", remote = %flow.remote, user = %user.escape_debug());
        }
    }
}
