#![allow(clippy::disallowed_methods)] // tests: one real origin for the virtual clock

use super::*;
use proptest::prelude::*;

const POLICY: ExpiryPolicy = ExpiryPolicy {
    min_expires_secs: 60,
    max_expires_secs: 3600,
    default_expires_secs: 600,
    max_bindings: 2,
};

fn flow(port: u16) -> BindingFlow {
    BindingFlow {
        zone: 0,
        transport: Transport::Udp,
        remote: SocketAddr::from(([127, 0, 0, 10], port)),
    }
}

fn req(
    user: &str,
    contacts: &[(&str, Option<u32>)],
    expires: Option<u32>,
    cseq: u32,
) -> RegisterRequest {
    RegisterRequest {
        user: user.into(),
        contacts: contacts
            .iter()
            .map(|(u, e)| ContactRequest {
                uri: (*u).into(),
                expires: *e,
            })
            .collect(),
        wildcard: false,
        expires_header: expires,
        call_id: "cid".into(),
        cseq,
        flow: flow(5070),
        nated: false,
    }
}

#[test]
fn register_refresh_expire() {
    let t0 = Instant::now();
    let mut b = Bindings::new(100);
    let ch = b
        .apply(
            t0,
            &req("alice", &[("sip:a@10.0.0.5", None)], Some(120), 1),
            &POLICY,
        )
        .unwrap();
    assert!(matches!(&ch[..], [Change::Saved(x)] if x.expires_at == t0 + Duration::from_secs(120)));
    assert_eq!(b.target("alice", t0).unwrap().contact, "sip:a@10.0.0.5");
    // Refresh with the contact's own expires winning over the header.
    let t1 = t0 + Duration::from_secs(100);
    b.apply(
        t1,
        &req("alice", &[("sip:a@10.0.0.5", Some(300))], Some(120), 2),
        &POLICY,
    )
    .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.next_expiry(), Some(t1 + Duration::from_secs(300)));
    // Expiry sweeps it.
    assert!(b.expire(t1 + Duration::from_secs(299)).is_empty());
    let gone = b.expire(t1 + Duration::from_secs(300));
    assert_eq!(gone.len(), 1);
    assert!(b.is_empty() && b.users() == 0);
    assert!(b.target("alice", t1).is_none());
}

#[test]
fn expiry_rules() {
    let t0 = Instant::now();
    let mut b = Bindings::new(100);
    assert_eq!(
        b.apply(t0, &req("a", &[("sip:x@h", Some(10))], None, 1), &POLICY),
        Err(RegisterError::IntervalTooBrief(60))
    );
    assert_eq!(RegisterError::IntervalTooBrief(60).status(), 423);
    // Clamped to the maximum; default when nothing says.
    b.apply(
        t0,
        &req("a", &[("sip:x@h", Some(999_999))], None, 2),
        &POLICY,
    )
    .unwrap();
    b.apply(t0, &req("b", &[("sip:y@h", None)], None, 1), &POLICY)
        .unwrap();
    assert_eq!(
        b.target("a", t0).unwrap().expires_at,
        t0 + Duration::from_secs(3600)
    );
    assert_eq!(
        b.target("b", t0).unwrap().expires_at,
        t0 + Duration::from_secs(600)
    );
    // Out of order: same Call-ID, CSeq not above.
    assert_eq!(
        b.apply(t0, &req("a", &[("sip:x@h", None)], None, 2), &POLICY),
        Err(RegisterError::OutOfOrder)
    );
    // A query (no contacts) changes nothing.
    assert!(
        b.apply(t0, &req("a", &[], None, 3), &POLICY)
            .unwrap()
            .is_empty()
    );
    assert_eq!(b.len(), 2);
    // expires=0 removes one contact.
    let ch = b
        .apply(t0, &req("a", &[("sip:X@h", Some(0))], None, 4), &POLICY)
        .unwrap();
    assert!(matches!(&ch[..], [Change::Removed { .. }]));
    assert_eq!(b.len(), 1);
}

#[test]
fn wildcard_removes_everything_of_the_user() {
    let t0 = Instant::now();
    let mut b = Bindings::new(100);
    b.apply(
        t0,
        &req("a", &[("sip:1@h", None), ("sip:2@h", None)], None, 1),
        &POLICY,
    )
    .unwrap();
    b.apply(t0, &req("c", &[("sip:3@h", None)], None, 1), &POLICY)
        .unwrap();
    let mut w = req("a", &[], Some(0), 2);
    w.wildcard = true;
    assert_eq!(b.apply(t0, &w, &POLICY).unwrap().len(), 2);
    assert_eq!(b.len(), 1);
    let mut bad = req("c", &[], Some(5), 2);
    bad.wildcard = true;
    assert_eq!(b.apply(t0, &bad, &POLICY), Err(RegisterError::BadWildcard));
    let mut stale = req("c", &[], Some(0), 1);
    stale.wildcard = true;
    assert_eq!(b.apply(t0, &stale, &POLICY), Err(RegisterError::OutOfOrder));
}

#[test]
fn caps_per_user_and_overall() {
    let t0 = Instant::now();
    let mut b = Bindings::new(3);
    b.apply(
        t0,
        &req("a", &[("sip:1@h", None), ("sip:2@h", None)], None, 1),
        &POLICY,
    )
    .unwrap();
    assert_eq!(
        b.apply(t0, &req("a", &[("sip:3@h", None)], None, 2), &POLICY),
        Err(RegisterError::TooManyBindings)
    );
    // Replacing one contact by another in one REGISTER is fine.
    b.apply(
        t0,
        &req("a", &[("sip:1@h", Some(0)), ("sip:3@h", None)], None, 3),
        &POLICY,
    )
    .unwrap();
    assert_eq!(b.len(), 2);
    b.apply(t0, &req("b", &[("sip:4@h", None)], None, 1), &POLICY)
        .unwrap();
    assert_eq!(
        b.apply(t0, &req("c", &[("sip:5@h", None)], None, 1), &POLICY),
        Err(RegisterError::TableFull)
    );
    // Restore obeys the caps and skips expired entries.
    let mut r = Bindings::new(2);
    let mk = |c: &str, secs| Binding {
        user: "z".into(),
        contact: c.into(),
        flow: flow(1),
        expires_at: t0 + Duration::from_secs(secs),
        call_id: "x".into(),
        cseq: 1,
        nated: true,
    };
    assert!(!r.restore(mk("sip:old@h", 0), t0, 5));
    assert!(r.restore(mk("sip:1@h", 10), t0, 5));
    assert!(!r.restore(mk("sip:1@h", 10), t0, 5), "duplicate");
    assert!(r.restore(mk("sip:2@h", 10), t0, 5));
    assert!(!r.restore(mk("sip:3@h", 10), t0, 5), "table full");
    assert_eq!(
        r.user_for_remote(flow(1).remote, t0)
            .map(|b| b.user.as_str()),
        Some("z")
    );
}

#[test]
fn caps_count_live_bindings_only() {
    let t0 = Instant::now();
    let mut b = Bindings::new(3);
    b.apply(
        t0,
        &req(
            "a",
            &[("sip:1@h", Some(60)), ("sip:2@h", Some(60))],
            None,
            1,
        ),
        &POLICY,
    )
    .unwrap();
    b.apply(t0, &req("b", &[("sip:9@h", Some(600))], None, 1), &POLICY)
        .unwrap();
    // a's two bindings expired, but no sweep ran yet.
    let t1 = t0 + Duration::from_secs(61);
    assert_eq!((b.len(), b.live(t1)), (3, 1));
    // The per-user cap (2) and the table (3) count live bindings only: a
    // new contact of a, and one of c, fit; the expired ones are reported
    // removed so the store forgets them too.
    let ch = b
        .apply(t1, &req("a", &[("sip:3@h", None)], None, 2), &POLICY)
        .unwrap();
    let removed: Vec<&str> = ch
        .iter()
        .filter_map(|c| match c {
            Change::Removed { contact, .. } => Some(contact.as_str()),
            Change::Saved(_) => None,
        })
        .collect();
    assert_eq!(removed, ["sip:1@h", "sip:2@h"]);
    assert!(matches!(ch.last(), Some(Change::Saved(x)) if x.contact == "sip:3@h"));
    b.apply(t1, &req("c", &[("sip:5@h", None)], None, 1), &POLICY)
        .unwrap();
    assert_eq!((b.len(), b.live(t1)), (3, 3));
    assert_eq!(b.iter().count(), 3);
    // Live and full now: refused.
    assert_eq!(
        b.apply(t1, &req("d", &[("sip:6@h", None)], None, 1), &POLICY),
        Err(RegisterError::TableFull)
    );
    // An expired contact re-registered counts as new, with the same Call-ID
    // and any CSeq (it is gone, not out of order).
    let t2 = t1 + Duration::from_secs(700);
    let ch = b
        .apply(t2, &req("b", &[("sip:9@h", None)], None, 1), &POLICY)
        .unwrap();
    assert!(matches!(ch.last(), Some(Change::Saved(x)) if x.contact == "sip:9@h"));
    assert_eq!(b.live(t2), 1);
}

proptest! {
    /// Any sequence of REGISTERs and sweeps keeps the count exact and
    /// within the caps, and a final sweep far in the future empties the table.
    #[test]
    fn table_stays_bounded_and_consistent(ops in proptest::collection::vec(
        (0u8..4, 0u8..4, proptest::option::of(0u32..5000), 0u32..20, any::<bool>(), 0u64..4000), 1..200)
    ) {
        let t0 = Instant::now();
        let mut b = Bindings::new(6);
        for (user, contact, exp, cseq, wildcard, at) in ops {
            let now = t0 + Duration::from_secs(at);
            let mut r = req(&format!("u{user}"), &[(&format!("sip:{contact}@h"), exp)], None, cseq);
            if wildcard {
                r.contacts.clear();
                r.wildcard = true;
                r.expires_header = Some(0);
            }
            let _ = b.apply(now, &r, &POLICY);
            if at % 7 == 0 {
                b.expire(now);
            }
            prop_assert_eq!(b.len(), b.iter().count());
            prop_assert!(b.len() <= 6);
            prop_assert!(b.live(now) <= b.len());
            for u in 0..4 {
                let name = format!("u{u}");
                prop_assert!(b.lookup(&name, t0).count() <= POLICY.max_bindings);
            }
        }
        b.expire(t0 + Duration::from_secs(100_000));
        prop_assert!(b.is_empty());
        prop_assert_eq!(b.users(), 0);
    }
}
