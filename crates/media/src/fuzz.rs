//! The fuzz entry point (`fuzz/fuzz_targets/sdp.rs`), also run on stable
//! over the committed seeds and random input by this crate's tests.

use std::sync::OnceLock;
use std::time::Instant;

use palisade_b2bua::{CallRef, SdpContext, SdpKind, Side};
use palisade_relay::{Busy, Command, Report, SessionId};

use crate::manager::{MediaManager, RelaySink};
use crate::sdp::Sdp;

const CONFIG: &str = "
zones:
  - name: inside
    sip_address: 127.0.0.1
    media: {port_min: 20000, port_max: 20099}
  - name: outside
    sip_address: 127.0.0.2
    media: {port_min: 30000, port_max: 30099}
trunks:
  - name: pbx
    zone: inside
    members: [{address: 127.0.0.10, port: 5070}]
  - name: carrier
    zone: outside
    members: [{address: 127.0.0.20, port: 5080}]
    media: {srtp: optional, codecs: [PCMA, PCMU, opus]}
routes:
  - name: out
    to_trunk: carrier
";

/// Accepts every command.
#[derive(Debug)]
struct Sink;

impl RelaySink for Sink {
    #[allow(clippy::result_large_err)]
    fn send(&mut self, _cmd: Command) -> Result<(), Busy> {
        Ok(())
    }
}

/// Parses `data` as SDP (what parses must write back to the same model),
/// then runs it through a manager as an offer from the PBX and, split at the
/// first NUL byte, the rest as the carrier's answer and re-offer. Every SDP
/// the manager writes must parse; ending the call must free every port.
/// Panics on any violation.
pub fn sdp(data: &[u8]) {
    if let Ok(parsed) = Sdp::parse(data) {
        let again = Sdp::parse(&parsed.to_bytes());
        assert_eq!(
            again.as_ref(),
            Ok(&parsed),
            "written SDP does not parse back"
        );
    }
    // Loaded once per process: parsing YAML per input would dominate the run.
    static CFG: OnceLock<palisade_config::Config> = OnceLock::new();
    let cfg = CFG.get_or_init(|| match palisade_config::load_str(CONFIG, "fuzz.yaml") {
        Ok(c) => c,
        Err(e) => panic!("fuzz config is invalid: {e:?}"),
    });
    let (offer, answer) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let mut m = MediaManager::new(cfg, Box::new(Sink), [1; 32]);
    // The fuzz target is deterministic apart from this clock, which only
    // bounds the port quarantine.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let (z, t) = (cfg.zones(), cfg.trunks());
    let ctx = |from: Side, kind: SdpKind| {
        let (a, b) = match from {
            Side::A => (0, 1),
            Side::B => (1, 0),
        };
        SdpContext {
            call: CallRef(1),
            from,
            kind,
            early: false,
            from_zone: &z[a],
            to_zone: &z[b],
            from_trunk: &t[a],
            to_trunk: &t[b],
            from_peer: ([127, 0, 0, 10], 5070).into(),
            from_nated: false,
            to_nated: false,
        }
    };
    let steps = [
        (Side::A, SdpKind::Offer, offer),
        (Side::B, SdpKind::Answer, answer),
        (Side::B, SdpKind::Offer, answer),
        (Side::A, SdpKind::Answer, offer),
    ];
    for (from, kind, body) in steps {
        if let Ok(out) = m.process(now, &ctx(from, kind), body) {
            assert!(Sdp::parse(&out).is_ok(), "manager wrote unparseable SDP");
        }
    }
    m.release(now, CallRef(1));
    m.on_report(&Report::Closed {
        session: SessionId(1),
        streams: Default::default(),
    });
    let s = m.stats();
    assert_eq!((s.ports_in_use, s.calls), (0, 0), "ports leaked");
}
