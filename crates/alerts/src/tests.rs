use super::*;

fn call(t: i64, to: &str) -> CallEvidence {
    CallEvidence {
        time_unix_ms: t,
        from: "+4989555000".into(),
        to: to.into(),
        duration_ms: 0,
        result: "ringing".into(),
    }
}

fn event(
    rule: &str,
    subject: &str,
    sev: Severity,
    at: i64,
    evidence: Vec<CallEvidence>,
) -> AlertEvent {
    AlertEvent {
        rule: rule.into(),
        kind: "calls_per_minute".into(),
        severity: sev,
        subject: Subject {
            kind: "trunk".into(),
            value: subject.into(),
        },
        measure: 12,
        threshold: if sev == Severity::Critical { 20 } else { 10 },
        action: "alert".into(),
        at_unix_ms: at,
        occurrences: 1,
        evidence,
    }
}

#[test]
fn events_for_one_rule_and_subject_merge() {
    let mut s = Store::in_memory().unwrap();
    let (a, merged) = s
        .record(
            &event("cpm", "pbx", Severity::Warning, 1000, vec![call(1, "+1")]),
            3,
        )
        .unwrap();
    assert!(!merged);
    let (b, merged) = s
        .record(
            &event(
                "cpm",
                "pbx",
                Severity::Critical,
                2000,
                vec![call(1, "+1"), call(2, "+2"), call(3, "+3"), call(4, "+4")],
            ),
            3,
        )
        .unwrap();
    assert!(merged);
    assert_eq!(a, b);
    // Another subject, another rule: separate alerts.
    let (c, _) = s
        .record(&event("cpm", "carrier", Severity::Warning, 3000, vec![]), 3)
        .unwrap();
    let (d, _) = s
        .record(&event("walk", "pbx", Severity::Warning, 3000, vec![]), 3)
        .unwrap();
    assert!(c != a && d != a && c != d);
    let alert = s.get(a).unwrap();
    assert_eq!(alert.count, 2);
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.threshold, 20);
    assert_eq!(
        (alert.first_seen_unix_ms, alert.last_seen_unix_ms),
        (1000, 2000)
    );
    // Evidence is capped at 3, most recent kept, no call twice.
    let to: Vec<&str> = alert.evidence.iter().map(|e| e.to.as_str()).collect();
    assert_eq!(to, ["+2", "+3", "+4"]);
    assert_eq!(s.list(None, 100).unwrap().len(), 3);
    assert_eq!(s.list(Some(Status::Open), 100).unwrap().len(), 3);
}

#[test]
fn lifecycle_with_who_and_note_then_a_new_incident() {
    let mut s = Store::in_memory().unwrap();
    let (id, _) = s
        .record(&event("cpm", "pbx", Severity::Warning, 1000, vec![]), 5)
        .unwrap();
    let a = s
        .set_status(id, Status::Acknowledged, "alice", "looking", 5000)
        .unwrap();
    assert_eq!(
        (
            a.status,
            a.status_by.as_str(),
            a.status_note.as_str(),
            a.status_at_unix_ms
        ),
        (Status::Acknowledged, "alice", "looking", 5000)
    );
    // Acknowledged alerts still merge.
    let (again, merged) = s
        .record(&event("cpm", "pbx", Severity::Warning, 6000, vec![]), 5)
        .unwrap();
    assert!(merged && again == id);
    let r = s
        .set_status(id, Status::Resolved, "bob", "PBX password changed", 7000)
        .unwrap();
    assert_eq!(r.status, Status::Resolved);
    assert!(matches!(
        s.set_status(id, Status::Open, "x", "", 8000),
        Err(StoreError::Transition { .. })
    ));
    assert!(matches!(
        s.set_status(999, Status::Resolved, "x", "", 8000),
        Err(StoreError::NotFound(999))
    ));
    // After resolution the same rule and subject open a new alert.
    let (new, merged) = s
        .record(&event("cpm", "pbx", Severity::Warning, 9000, vec![]), 5)
        .unwrap();
    assert!(!merged && new != id);
}

#[test]
fn survives_a_reopen_in_wal_mode() {
    let dir = std::env::temp_dir().join(format!("palisade-alerts-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("sub").join("alerts.db");
    {
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.journal_mode().unwrap(), "wal");
        s.record(
            &event("cpm", "pbx", Severity::Warning, 1000, vec![call(1, "+1")]),
            5,
        )
        .unwrap();
        s.record_ban(
            "127.0.0.66".parse().unwrap(),
            "scanner-user-agent",
            "friendly-scanner",
            1000,
            Duration::from_secs(60),
            true,
        )
        .unwrap();
    }
    let mut s = Store::open(&path).unwrap();
    let alerts = s.list(None, 10).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].evidence.len(), 1);
    let bans = s.list_bans(2000, false).unwrap();
    assert_eq!(bans.len(), 1);
    assert_eq!(
        (bans[0].ip.as_str(), bans[0].expires_unix_ms, bans[0].kernel),
        ("127.0.0.66", 61_000, true)
    );
    assert!(s.list_bans(70_000, false).unwrap().is_empty());
    assert_eq!(s.list_bans(70_000, true).unwrap().len(), 1);
    // Unban: the record is marked and the request waits for the process.
    assert_eq!(
        s.request_unban("127.0.0.66".parse().unwrap(), "alice", 3000)
            .unwrap(),
        1
    );
    assert!(s.list_bans(3000, false).unwrap().is_empty());
    assert_eq!(
        s.take_unban_requests().unwrap(),
        vec!["127.0.0.66".parse::<IpAddr>().unwrap()]
    );
    assert!(s.take_unban_requests().unwrap().is_empty());
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

proptest::proptest! {
    /// Whatever the events, one active alert per (rule, subject), counts
    /// add up, and evidence never exceeds the cap.
    #[test]
    fn merging_never_duplicates(events in proptest::collection::vec((0u8..3, 0u8..3, proptest::bool::ANY, 0usize..6), 1..40)) {
        let mut s = Store::in_memory().unwrap();
        for (i, (r, subj, crit, n)) in events.iter().enumerate() {
            let sev = if *crit { Severity::Critical } else { Severity::Warning };
            let ev: Vec<CallEvidence> = (0..*n).map(|k| call(i as i64 * 10 + k as i64, "+1")).collect();
            s.record(&event(&format!("r{r}"), &format!("s{subj}"), sev, i as i64, ev), 4).unwrap();
        }
        let all = s.list(None, 1000).unwrap();
        let mut keys: Vec<(String, String)> = all.iter().map(|a| (a.rule.clone(), a.subject.value.clone())).collect();
        keys.sort();
        let before = keys.len();
        keys.dedup();
        proptest::prop_assert_eq!(before, keys.len());
        let total: u64 = all.iter().map(|a| a.count).sum();
        proptest::prop_assert_eq!(total, events.len() as u64);
        proptest::prop_assert!(all.iter().all(|a| a.evidence.len() <= 4));
    }
}
