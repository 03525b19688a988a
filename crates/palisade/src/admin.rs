//! `palisade alerts` and `palisade bans`: the security team's commands,
//! working on the alert database (and Palisade's nftables table) directly,
//! so they need no admin API and work while Palisade runs.

use std::path::PathBuf;

use palisade_alerts::Store;
use palisade_guard::Status;
use palisade_nft::Nft;

use crate::cli::{AlertsArgs, AlertsCommand, BansArgs, BansCommand, DbArgs};
use crate::error::AppError;
use crate::unix_ms;

/// The database path and nftables table from the arguments.
fn target(db: &DbArgs) -> Result<(PathBuf, String), AppError> {
    match (&db.db, &db.config) {
        (Some(path), _) => Ok((path.clone(), "palisade".to_owned())),
        (None, Some(cfg)) => {
            let c = palisade_config::load(cfg)?;
            Ok((
                c.alerts().database_path.clone(),
                c.guard().nftables_table.clone(),
            ))
        }
        (None, None) => Err(AppError::Usage(
            "give --config FILE (to use its alerts.database_path) or --db FILE".into(),
        )),
    }
}

fn open(path: &std::path::Path) -> Result<Store, AppError> {
    if !path.exists() {
        return Err(AppError::Usage(format!(
            "{}: no alert database (Palisade creates it when it runs with the guard on)",
            path.display()
        )));
    }
    Ok(Store::open(path)?)
}

/// `YYYY-MM-DDTHH:MM:SSZ` without pulling a date crate into the binary.
/// A ban's state in `bans list`: lifted by an operator, run out, or in force.
/// `removed_unix_ms` 0: not lifted.
fn ban_state(removed_unix_ms: i64, expires_unix_ms: i64, now_unix_ms: i64) -> &'static str {
    if removed_unix_ms > 0 {
        "lifted"
    } else if expires_unix_ms <= now_unix_ms {
        "expired"
    } else {
        "active"
    }
}

fn jiff_like(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `palisade alerts ...`.
pub fn alerts(args: &AlertsArgs) -> Result<(), AppError> {
    let (path, _) = target(&args.db)?;
    let mut store = open(&path)?;
    match &args.command {
        AlertsCommand::List {
            status,
            limit,
            json,
        } => {
            let only = match status {
                Some(s) => Some(Status::parse(s).ok_or_else(|| {
                    AppError::Usage(format!(
                        "unknown status `{s}`; use open, acknowledged, resolved or false-positive"
                    ))
                })?),
                None => None,
            };
            let list = store.list(only, *limit)?;
            if *json {
                for a in &list {
                    println!("{}", serde_json::to_string(a).unwrap_or_default());
                }
            } else {
                println!(
                    "{:>5}  {:<14} {:<9} {:<26} {:<28} {:>6}  {:<20} {:<20} ACTION",
                    "ID",
                    "STATUS",
                    "SEVERITY",
                    "RULE",
                    "SUBJECT",
                    "COUNT",
                    "FIRST SEEN",
                    "LAST SEEN",
                );
                for a in &list {
                    println!(
                        "{:>5}  {:<14} {:<9} {:<26} {:<28} {:>6}  {:<20} {:<20} {}",
                        a.id,
                        a.status.as_str(),
                        a.severity.as_str(),
                        a.rule,
                        a.subject.to_string(),
                        a.count,
                        jiff_like(a.first_seen_unix_ms),
                        jiff_like(a.last_seen_unix_ms),
                        a.action
                    );
                }
            }
        }
        AlertsCommand::Show { id } => {
            let a = store.get(*id)?;
            println!("{}", serde_json::to_string_pretty(&a).unwrap_or_default());
        }
        AlertsCommand::Ack(s) | AlertsCommand::Resolve(s) | AlertsCommand::FalsePositive(s) => {
            let to = match &args.command {
                AlertsCommand::Ack(_) => Status::Acknowledged,
                AlertsCommand::Resolve(_) => Status::Resolved,
                _ => Status::FalsePositive,
            };
            if s.by.trim().is_empty() {
                return Err(AppError::Usage("--by must name who acts".into()));
            }
            let a = store.set_status(s.id, to, s.by.trim(), &s.note, unix_ms())?;
            println!("alert {} is {} (by {})", a.id, a.status, a.status_by);
        }
    }
    Ok(())
}

/// `palisade bans ...`.
pub fn bans(args: &BansArgs) -> Result<(), AppError> {
    let (path, table) = target(&args.db)?;
    let mut store = open(&path)?;
    let nft = Nft::new(&table);
    match &args.command {
        BansCommand::List { all, json } => {
            let kernel = nft.list_bans().ok();
            let now = unix_ms();
            let list = store.list_bans(now, *all)?;
            if !*json {
                println!(
                    "{:<40} {:<20} {:<20} {:<8} {:<8} DETAIL",
                    "SOURCE", "REASON", "EXPIRES", "KERNEL", "STATE"
                );
            }
            for b in &list {
                let in_kernel = kernel.as_ref().map(|k| {
                    k.iter().find(|kb| kb.ip.to_string() == b.ip).map_or_else(
                        || "no".to_owned(),
                        |kb| {
                            kb.expires
                                .map_or_else(|| "yes".to_owned(), |e| format!("{}s", e.as_secs()))
                        },
                    )
                });
                let in_kernel = in_kernel.unwrap_or_else(|| "n/a".to_owned());
                let state = ban_state(b.removed_unix_ms, b.expires_unix_ms, now);
                if *json {
                    let v = serde_json::json!({
                        "source": b.ip, "reason": b.reason, "detail": b.detail,
                        "created_unix_ms": b.created_unix_ms, "expires_unix_ms": b.expires_unix_ms,
                        "kernel": in_kernel, "state": state,
                        "removed_unix_ms": b.removed_unix_ms, "removed_by": b.removed_by,
                    });
                    println!("{v}");
                } else {
                    let lifted = if b.removed_unix_ms > 0 {
                        format!(
                            "lifted by {} at {}; ",
                            b.removed_by,
                            jiff_like(b.removed_unix_ms)
                        )
                    } else {
                        String::new()
                    };
                    println!(
                        "{:<40} {:<20} {:<20} {:<8} {:<8} {lifted}{}",
                        b.ip,
                        b.reason,
                        jiff_like(b.expires_unix_ms),
                        in_kernel,
                        state,
                        b.detail
                    );
                }
            }
        }
        BansCommand::Unban { ip, by } => {
            if by.trim().is_empty() {
                return Err(AppError::Usage("--by must name who acts".into()));
            }
            let n = store.request_unban(*ip, by.trim(), unix_ms())?;
            let kernel = match nft.unban(*ip) {
                Ok(true) => "removed from nftables",
                Ok(false) => "not in nftables",
                Err(_) => "nftables not reachable",
            };
            println!(
                "{ip}: {n} ban(s) lifted in the database; {kernel}; the running Palisade forgets it within a second"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_utc_iso() {
        assert_eq!(super::jiff_like(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::jiff_like(1_767_601_800_000), "2026-01-05T08:30:00Z");
    }

    #[test]
    fn ban_states() {
        assert_eq!(super::ban_state(5, 100, 50), "lifted");
        assert_eq!(super::ban_state(0, 100, 100), "expired");
        assert_eq!(super::ban_state(0, 100, 99), "active");
    }
}
