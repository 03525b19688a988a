//! The stage seam as normalization uses it: outbound stages learn the other
//! leg's trunk and, for the initial INVITE, the caller's INVITE; and once
//! the callee answers, leg B keeps the From/To its INVITE was sent with, so
//! the ACK (which no stage sees) and later requests carry the same identities.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};

use palisade_b2bua::{Stage, StageContext};
use palisade_config::TrunkId;
use palisade_sip::{Editor, HeaderName, Method};
use support::*;

type Seen = Arc<Mutex<Vec<(String, Option<TrunkId>, bool)>>>;

/// Rewrites the From and To users of the initial INVITE only, and records
/// what it was told about every message.
#[derive(Debug)]
struct InitialInviteToNational {
    seen: Seen,
}

impl Stage for InitialInviteToNational {
    fn name(&self) -> &'static str {
        "initial-invite-to-national"
    }

    fn apply(&self, ctx: &StageContext<'_>, edit: &mut Editor<'_>) {
        let m = edit.message();
        let what = m
            .method()
            .map_or_else(|| m.status().unwrap_or(0).to_string(), |x| x.to_string());
        self.seen
            .lock()
            .unwrap()
            .push((what, ctx.other_trunk, ctx.source.is_some()));
        if m.method() == Some(&Method::Invite) && m.to_tag().is_none() {
            for h in m.headers() {
                let v = h.value_str().unwrap();
                if h.name == HeaderName::From {
                    edit.replace_value(h.index, v.replace("+4989555000", "089555000").as_bytes());
                }
                if h.name == HeaderName::To {
                    edit.replace_value(h.index, v.replace("+4930123456", "030123456").as_bytes());
                }
            }
        }
    }
}

#[test]
fn outbound_stage_context_and_dialog_identities_follow_the_answered_invite() {
    let mut lab = lab();
    let seen: Seen = Arc::default();
    lab.engine.set_stages(
        TrunkId(1),
        vec![Box::new(InitialInviteToNational { seen: seen.clone() })],
    );
    let inv = pbx_invite(1, "+4930123456", Some(PBX_SDP));
    lab.recv_msg(INSIDE, PBX, inv.clone());
    let invite_b = lab.find(CARRIER1, "INVITE");
    assert!(header(&invite_b, HeaderName::From).contains("sip:089555000@"));
    assert!(header(&invite_b, HeaderName::To).contains("sip:030123456@"));
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &invite_b,
            200,
            Some("carrier-tag"),
            Some("<sip:carrier@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    // The ACK is built from the dialog, not from the INVITE: it has the
    // identities the INVITE was sent with.
    let msgs = lab.take();
    let pick = |to: &str, what: &str| {
        msgs.iter()
            .find(|(f, m)| f.remote == addr(to) && describe(m) == what)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("no {what} to {to}"))
    };
    let ack_b = pick(CARRIER1, "ACK");
    assert!(header(&ack_b, HeaderName::From).contains("sip:089555000@"));
    assert!(header(&ack_b, HeaderName::To).contains("sip:030123456@"));
    assert_eq!(ack_b.to_tag(), Some("carrier-tag"));
    assert_eq!(ack_b.from_tag(), invite_b.from_tag());
    let ok = pick(PBX, "200/INVITE");
    let mut pbx = PeerDialog::from_uac_side(&inv, &ok, "127.0.0.10:5070");
    lab.recv_msg(INSIDE, PBX, pbx.ack(1, None));
    lab.recv_msg(INSIDE, PBX, pbx.request("BYE", None, None));
    let bye_b = lab.find(CARRIER1, "BYE");
    assert!(header(&bye_b, HeaderName::From).contains("sip:089555000@"));
    assert!(header(&bye_b, HeaderName::To).contains("sip:030123456@"));

    let seen = seen.lock().unwrap().clone();
    // The initial INVITE comes with the caller's INVITE and the PBX trunk.
    assert_eq!(seen[0], ("INVITE".to_owned(), Some(TrunkId(0)), true));
    // Later messages toward the carrier know the other trunk, without a source.
    let bye = seen.iter().find(|s| s.0 == "BYE").unwrap();
    assert_eq!(bye, &("BYE".to_owned(), Some(TrunkId(0)), false));
}
