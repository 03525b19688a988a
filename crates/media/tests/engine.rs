//! The real media manager plugged into the real engine: SDP crossing in
//! INVITE/200, UPDATE mid-call, and ports released when calls end early.
//! The engine-side helpers (virtual lab, PBX and carrier played by hand)
//! are the b2bua crate's test support, shared by path.

#![allow(clippy::unwrap_used)]

#[path = "../../b2bua/tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_media::{RelaySink, SharedMedia};
use palisade_relay::{Busy, Command, Report, SessionId, Side as RelaySide};
use support::*;

#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Command>>>);

impl RelaySink for Recorder {
    #[allow(clippy::result_large_err)]
    fn send(&mut self, cmd: Command) -> Result<(), Busy> {
        self.0.lock().unwrap().push(cmd);
        Ok(())
    }
}

impl Recorder {
    fn take(&self) -> Vec<Command> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn media_lab(cfg: palisade_config::Config) -> (Lab, SharedMedia, Recorder) {
    let rec = Recorder::default();
    let media = SharedMedia::new(&cfg, Box::new(rec.clone()), [3; 32]);
    let mut lab = lab_with(cfg);
    lab.engine.set_media(Box::new(media.clone()));
    (lab, media, rec)
}

fn body(m: &palisade_sip::Message) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

fn m_port(sdp: &str) -> u16 {
    let line = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap();
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn update_with_sdp_is_anchored_offer_on_a_answer_on_b() {
    let (mut lab, media, rec) = media_lab(quickstart());
    let inv = pbx_invite(1, "+4930123456", Some(PBX_SDP));
    lab.recv_msg(INSIDE, PBX, inv.clone());
    let inv_b = lab.find(CARRIER1, "INVITE");
    let offer = body(&inv_b);
    assert!(offer.contains("c=IN IP4 127.0.0.2\r\n"), "{offer}");
    let b_port = m_port(&offer);
    assert!((30000..=39999).contains(&b_port), "{offer}");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            200,
            Some("t"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let ok = lab.find(PBX, "200/INVITE");
    let answer = body(&ok);
    assert!(answer.contains("c=IN IP4 127.0.0.1\r\n"), "{answer}");
    let a_port = m_port(&answer);
    assert!((20000..=29999).contains(&a_port), "{answer}");
    let mut pbx = PeerDialog::from_uac_side(&inv, &ok, "127.0.0.10:5070");
    lab.recv_msg(INSIDE, PBX, pbx.ack(1, None));
    rec.take();

    // UPDATE from the PBX: hold, and its media moves to another port.
    let hold = PBX_SDP
        .replace("o=pbx 111 1", "o=pbx 111 2")
        .replace("m=audio 40000", "m=audio 40002")
        + "a=sendonly\r\n";
    lab.recv_msg(
        INSIDE,
        PBX,
        pbx.request("UPDATE", Some(("application/sdp", &hold)), None),
    );
    let up = lab.find(CARRIER1, "UPDATE");
    let re_offer = body(&up);
    assert!(re_offer.contains("c=IN IP4 127.0.0.2\r\n"), "{re_offer}");
    assert!(re_offer.contains("a=sendonly\r\n"), "{re_offer}");
    assert_eq!(
        m_port(&re_offer),
        b_port,
        "the carrier's side keeps its port"
    );
    assert!(!re_offer.contains("127.0.0.10"), "{re_offer}");
    assert!(!re_offer.contains("40002"), "{re_offer}");
    let origin = re_offer.lines().nth(1).unwrap();
    assert!(
        origin.ends_with(" 2 IN IP4 127.0.0.2"),
        "version rises: {origin}"
    );
    assert!(
        rec.take()
            .iter()
            .all(|c| !matches!(c, Command::Open { .. })),
        "a re-offer opens nothing"
    );
    let held = CARRIER_SDP.replace("o=carrier 222 1", "o=carrier 222 2") + "a=recvonly\r\n";
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(&up, 200, None, Some("<sip:c@127.0.0.20:5080>"), Some(&held)),
    );
    let ok = lab.find(PBX, "200/UPDATE");
    let re_answer = body(&ok);
    assert!(re_answer.contains("c=IN IP4 127.0.0.1\r\n"), "{re_answer}");
    assert!(re_answer.contains("a=recvonly\r\n"), "{re_answer}");
    assert_eq!(m_port(&re_answer), a_port);
    assert!(!re_answer.contains("127.0.0.20"), "{re_answer}");
    // The relay now sends the PBX's media to its new port, on hold.
    let cmds = rec.take();
    let a = cmds
        .iter()
        .find_map(|c| match c {
            Command::Update {
                side: RelaySide::A,
                endpoint,
                ..
            } => Some(endpoint.clone()),
            _ => None,
        })
        .expect("an Update for side A");
    assert_eq!(a.remote, Some(addr("127.0.0.10:40002")));
    assert!(a.on_hold);
    assert_eq!(media.stats().calls, 1);
}

/// Ends the call's media with what the relay would report; returns the
/// pairs still in use in both zones.
fn close_and_count(media: &SharedMedia, rec: &Recorder) -> (usize, usize) {
    let closes: Vec<SessionId> = rec
        .take()
        .into_iter()
        .filter_map(|c| match c {
            Command::Close { session } => Some(session),
            _ => None,
        })
        .collect();
    assert_eq!(closes.len(), 1, "one Close for the call");
    media.on_report(&Report::Closed {
        session: closes[0],
        streams: Default::default(),
    });
    (media.ports_in_use(INSIDE), media.ports_in_use(OUTSIDE))
}

#[test]
fn ports_come_back_on_cancel_failure_and_no_answer() {
    // CANCEL while ringing.
    let (mut lab, media, rec) = media_lab(quickstart());
    let inv = pbx_invite(2, "+4930123456", Some(PBX_SDP));
    lab.recv_msg(INSIDE, PBX, inv.clone());
    let inv_b = lab.find(CARRIER1, "INVITE");
    assert_eq!(media.ports_in_use(OUTSIDE), 1);
    let cancel = String::from_utf8(inv.to_vec())
        .unwrap()
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let cancel =
        cancel.split("Content-Type").next().unwrap().to_owned() + "Content-Length: 0\r\n\r\n";
    lab.recv(INSIDE, PBX, &cancel);
    lab.recv_msg(OUTSIDE, CARRIER1, reply(&inv_b, 487, Some("r"), None, None));
    assert_eq!(close_and_count(&media, &rec), (0, 0), "after CANCEL");

    // 486 and 503 (every member) finals.
    for (n, statuses) in [(3u32, &[486u16][..]), (4, &[503, 503])] {
        let (mut lab, media, rec) = media_lab(quickstart());
        lab.recv_msg(INSIDE, PBX, pbx_invite(n, "+4930123456", Some(PBX_SDP)));
        for (i, s) in statuses.iter().enumerate() {
            let to = if i == 0 { CARRIER1 } else { CARRIER2 };
            let inv_b = lab.find(to, "INVITE");
            lab.recv_msg(OUTSIDE, to, reply(&inv_b, *s, Some("f"), None, None));
        }
        assert_eq!(close_and_count(&media, &rec), (0, 0), "after {statuses:?}");
    }

    // No answer.
    let (mut lab, media, rec) = media_lab(quickstart_with_sip("  no_answer_timeout_seconds: 2"));
    lab.recv_msg(INSIDE, PBX, pbx_invite(5, "+4930123456", Some(PBX_SDP)));
    let inv_b = lab.find(CARRIER1, "INVITE");
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv_b,
            180,
            Some("r"),
            Some("<sip:c@127.0.0.20:5080>"),
            None,
        ),
    );
    lab.advance(Duration::from_secs(3));
    assert_eq!(close_and_count(&media, &rec), (0, 0), "after no-answer");
}
