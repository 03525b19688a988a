//! Edge behaviour on the virtual clock: the registrar with digest
//! authentication, calls to registered (NATed) users, outbound registration
//! to a carrier, carriers' INVITE challenges, inbound INVITE challenges,
//! call admission control and keepalives.

// A test file: helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use palisade_b2bua::EdgeEvent;
use palisade_digest::{Algorithm, Challenge, client_credentials, ha1};
use palisade_sip::{HeaderName, Message};
use support::*;

const REALM: &str = "palisade.test";
const PHONE: &str = "127.0.0.99:40000";
const DID: &str = "+4930123555";

fn config(carrier_extra: &str, pbx_extra: &str, tail: &str) -> palisade_config::Config {
    load(&config_text(carrier_extra, pbx_extra, tail))
}

fn load(text: &str) -> palisade_config::Config {
    palisade_config::load_str(text, "edge.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// The test topology's YAML; `zone_cac` helpers edit it.
fn config_text(carrier_extra: &str, pbx_extra: &str, tail: &str) -> String {
    let md5 = ha1(Algorithm::Md5, DID, REALM, "s3cret");
    let sha = ha1(Algorithm::Sha256, DID, REALM, "s3cret");
    format!(
        "zones:
  - name: inside
    sip_address: 127.0.0.1
  - name: outside
    sip_address: 127.0.0.2
    media: {{port_min: 30000, port_max: 39999}}
trunks:
  - name: pbx
    zone: inside
    members:
      - address: 127.0.0.10
        port: 5070
{pbx_extra}  - name: carrier
    zone: outside
    members:
      - address: 127.0.0.20
        port: 5080
      - address: 127.0.0.21
        port: 5080
{carrier_extra}routes:
  - name: emergency
    from_trunk: pbx
    number_prefixes: ['112']
    to_trunk: carrier
  - name: out
    from_trunk: pbx
    to_trunk: carrier
  - name: in
    from_trunk: carrier
    number_prefixes: ['+4930123']
    to_trunk: pbx
    to_registered: true
registrar:
  trunk: pbx
  realm: {REALM}
  min_expires_seconds: 30
  users:
    - user: '{DID}'
      ha1_md5: {md5}
      ha1_sha256: {sha}
      max_bindings: 2
{tail}"
    )
}

/// `text` with `cac` on zone `zone` (`inside` or `outside`).
fn with_zone_cac(text: &str, zone: &str, cac: &str) -> String {
    let at = format!("  - name: {zone}\n");
    assert!(text.contains(&at));
    text.replacen(&at, &format!("{at}    cac: {cac}\n"), 1)
}

fn register(n: u32, contact: &str, expires: u32, auth: Option<&str>) -> String {
    let mut s = format!(
        "REGISTER sip:{REALM} SIP/2.0
Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK-reg-{n};rport
Max-Forwards: 70
From: <sip:{DID}@{REALM}>;tag=ph{n}
To: <sip:{DID}@{REALM}>
Call-ID: phone-reg-1
CSeq: {n} REGISTER
Contact: <{contact}>
Expires: {expires}
"
    );
    if let Some(a) = auth {
        s.push_str(&format!("Authorization: {a}\n"));
    }
    s.push_str("Content-Length: 0\n\n");
    s
}

fn challenges(m: &Message, name: HeaderName) -> Vec<Challenge> {
    m.headers()
        .filter(|h| h.name == name)
        .map(|h| Challenge::parse(h.value_str().unwrap()).unwrap())
        .collect()
}

/// Registers the phone with `password`; returns the final response.
fn register_phone(lab: &mut Lab, n: u32, password: &str) -> Message {
    let contact = "sip:+4930123555@192.168.1.50:5060";
    lab.recv(INSIDE, PHONE, &register(n, contact, 120, None));
    let c401 = lab.expect(PHONE, "401/REGISTER");
    let chs = challenges(&c401, HeaderName::WwwAuthenticate);
    assert_eq!(chs.len(), 2, "MD5 and SHA-256 challenges");
    assert_eq!(chs[0].algorithm, Algorithm::Md5);
    assert_eq!(chs[1].algorithm, Algorithm::Sha256);
    let creds = client_credentials(
        &chs[0],
        DID,
        password,
        "REGISTER",
        &format!("sip:{REALM}"),
        "abc",
        1,
    );
    lab.recv(
        INSIDE,
        PHONE,
        &register(n + 1, contact, 120, Some(&creds.to_header())),
    );
    let new = lab.take();
    new.into_iter()
        .find(|(_, m)| m.status().is_some())
        .unwrap()
        .1
}

#[test]
fn phone_registers_with_digest_and_gets_calls_over_its_flow() {
    let mut lab = lab_with(config("", "", ""));
    let ok = register_phone(&mut lab, 1, "s3cret");
    assert_eq!(
        ok.status(),
        Some(200),
        "{}",
        String::from_utf8_lossy(ok.raw())
    );
    let contact = header(&ok, HeaderName::Contact);
    assert_eq!(contact, "<sip:+4930123555@192.168.1.50:5060>;expires=120");
    let bindings = lab.engine.bindings_of(lab.now, DID);
    assert_eq!(bindings.len(), 1);
    assert_eq!(
        bindings[0].1.remote,
        addr(PHONE),
        "the flow it registered from"
    );
    let stats = lab.engine.edge_stats();
    assert_eq!(
        (
            stats.registers_accepted,
            stats.challenges_sent,
            stats.bindings
        ),
        (1, 1, 1)
    );
    let saved: Vec<_> = std::iter::from_fn(|| lab.engine.poll_edge_event()).collect();
    assert!(matches!(&saved[..], [EdgeEvent::BindingSaved(b)] if b.nated && b.user == DID));

    // The carrier calls the DID: the INVITE goes to the phone's flow, with
    // the registered contact as Request-URI.
    lab.recv(OUTSIDE, CARRIER1, &carrier_invite(1, DID));
    let inv = lab.find(PHONE, "INVITE");
    assert_eq!(
        inv.request_uri_str(),
        Some("sip:+4930123555@192.168.1.50:5060")
    );
    assert_no_leak(&inv, &["127.0.0.2", "127.0.0.20"]);

    // A call to a DID nobody registered: 480.
    lab.recv(OUTSIDE, CARRIER1, &carrier_invite(2, "+4930123999"));
    lab.find(CARRIER1, "480/INVITE");
    assert_eq!(lab.engine.edge_stats().not_registered_rejected, 1);

    // The binding expires (120 s) and calls get 480.
    lab.advance(Duration::from_secs(121));
    assert!(lab.engine.bindings_of(lab.now, DID).is_empty());
    let gone: Vec<_> = std::iter::from_fn(|| lab.engine.poll_edge_event()).collect();
    assert!(
        gone.iter()
            .any(|e| matches!(e, EdgeEvent::BindingRemoved { .. })),
        "{gone:?}"
    );
}

#[test]
fn wrong_password_unknown_user_and_replay_get_the_same_challenge() {
    let mut lab = lab_with(config("", "", ""));
    let bad = register_phone(&mut lab, 1, "wrong");
    assert_eq!(bad.status(), Some(401));
    assert!(!challenges(&bad, HeaderName::WwwAuthenticate)[0].stale);
    assert_eq!(lab.engine.edge_stats().auth_failures, 1);
    assert!(lab.engine.bindings_of(lab.now, DID).is_empty());
    // An unknown user: the very same kind of answer (401 with both challenges).
    let text = register(5, "sip:x@10.0.0.1", 60, None).replace(DID, "+4999");
    lab.recv(INSIDE, PHONE, &text);
    let r = lab.expect(PHONE, "401/REGISTER");
    assert_eq!(challenges(&r, HeaderName::WwwAuthenticate).len(), 2);
    // Replaying valid credentials (same nonce count) is refused as stale.
    let ok = register_phone(&mut lab, 10, "s3cret");
    assert_eq!(ok.status(), Some(200));
    let contact = "sip:+4930123555@192.168.1.50:5060";
    let chs = {
        lab.recv(INSIDE, PHONE, &register(20, contact, 120, None));
        challenges(
            &lab.expect(PHONE, "401/REGISTER"),
            HeaderName::WwwAuthenticate,
        )
    };
    let creds = client_credentials(
        &chs[1],
        DID,
        "s3cret",
        "REGISTER",
        &format!("sip:{REALM}"),
        "x",
        1,
    );
    lab.recv(
        INSIDE,
        PHONE,
        &register(21, contact, 120, Some(&creds.to_header())),
    );
    lab.expect(PHONE, "200/REGISTER");
    lab.recv(
        INSIDE,
        PHONE,
        &register(22, contact, 120, Some(&creds.to_header())),
    );
    let replay = lab.expect(PHONE, "401/REGISTER");
    assert!(challenges(&replay, HeaderName::WwwAuthenticate)[0].stale);
    // A nonce older than the lifetime (300 s) is stale.
    lab.advance(Duration::from_secs(301));
    let creds = client_credentials(
        &chs[0],
        DID,
        "s3cret",
        "REGISTER",
        &format!("sip:{REALM}"),
        "y",
        1,
    );
    lab.recv(
        INSIDE,
        PHONE,
        &register(23, contact, 120, Some(&creds.to_header())),
    );
    let stale = lab.expect(PHONE, "401/REGISTER");
    assert!(challenges(&stale, HeaderName::WwwAuthenticate)[0].stale);
}

#[test]
fn interval_too_brief_and_registrations_limit() {
    let mut lab = lab_with(config("", "    cac: {max_registrations: 1}\n", ""));
    let contact = "sip:+4930123555@192.168.1.50:5060";
    lab.recv(INSIDE, PHONE, &register(1, contact, 10, None));
    let chs = challenges(
        &lab.expect(PHONE, "401/REGISTER"),
        HeaderName::WwwAuthenticate,
    );
    let auth = |nc| {
        client_credentials(
            &chs[0],
            DID,
            "s3cret",
            "REGISTER",
            &format!("sip:{REALM}"),
            "c",
            nc,
        )
        .to_header()
    };
    lab.recv(INSIDE, PHONE, &register(2, contact, 10, Some(&auth(1))));
    let r = lab.expect(PHONE, "423/REGISTER");
    assert_eq!(header(&r, HeaderName::MinExpires), "30");
    lab.recv(INSIDE, PHONE, &register(3, contact, 60, Some(&auth(2))));
    lab.expect(PHONE, "200/REGISTER");
    lab.recv(
        INSIDE,
        PHONE,
        &register(4, "sip:second@192.168.1.51", 60, Some(&auth(3))),
    );
    let r = lab.expect(PHONE, "503/REGISTER");
    assert_eq!(header(&r, HeaderName::RetryAfter), "30");
    assert_eq!(lab.engine.edge_stats().cac_rejected_registrations, 1);
    // Unregister with the wildcard.
    let unreg = register(5, contact, 0, Some(&auth(4)))
        .replace(&format!("Contact: <{contact}>"), "Contact: *");
    lab.recv(INSIDE, PHONE, &unreg);
    lab.expect(PHONE, "200/REGISTER");
    assert!(lab.engine.bindings_of(lab.now, DID).is_empty());
}

fn carrier_invite(n: u32, number: &str) -> String {
    format!(
        "INVITE sip:{number}@127.0.0.2:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.20:5080;branch=z9hG4bK-car-{n}
Max-Forwards: 70
From: <sip:+4971100100@127.0.0.20>;tag=car{n}
To: <sip:{number}@127.0.0.2>
Call-ID: carrier-call-{n}
CSeq: 1 INVITE
Contact: <sip:carrier@127.0.0.20:5080>
Content-Type: application/sdp
Content-Length: {}

{CARRIER_SDP}",
        CARRIER_SDP.len()
    )
}

const REGISTRATION: &str = "    auth: {username: palisade1, password: trunkpw, realm: carrier.test}
    registration: {expires_seconds: 120, retry_seconds: 10, max_retry_seconds: 40}
";

#[test]
fn outbound_registration_challenge_refresh_and_trunk_state() {
    let mut lab = lab_with(config(REGISTRATION, "", ""));
    lab.engine.sync_edge(lab.now);
    lab.advance(Duration::ZERO);
    let reg = lab.expect(CARRIER1, "REGISTER");
    assert_eq!(header(&reg, HeaderName::Expires), "120");
    assert!(header(&reg, HeaderName::To).starts_with("<sip:palisade1@127.0.0.20>"));
    assert!(!reg.has_header(HeaderName::Authorization));
    // Not registered yet: calls to the carrier are refused with 503.
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    let r = lab.find(PBX, "503/INVITE");
    assert!(r.has_header(HeaderName::RetryAfter));
    // 401, then the REGISTER with credentials, then 200.
    let ch = Challenge {
        realm: "carrier.test".into(),
        nonce: "carrier-nonce-1".into(),
        opaque: Some("op".into()),
        algorithm: Algorithm::Md5,
        qop_auth: true,
        stale: false,
    };
    let resp = |req: &Message, status, extra: &str| {
        let mut w =
            palisade_sip::MessageWriter::response_to(req, status, "X", None, Some("regtag"));
        if !extra.is_empty() {
            let (n, v) = extra.split_once(": ").unwrap();
            w.header_named(n, v.as_bytes());
        }
        w.finish_empty()
    };
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        resp(&reg, 401, &format!("WWW-Authenticate: {}", ch.to_header())),
    );
    let reg2 = lab.expect(CARRIER1, "REGISTER");
    assert_eq!(
        reg2.call_id(),
        reg.call_id(),
        "one Call-ID for the registration"
    );
    assert_eq!(reg2.cseq().seq, reg.cseq().seq + 1);
    let creds =
        palisade_digest::Credentials::parse(&header(&reg2, HeaderName::Authorization)).unwrap();
    assert_eq!(
        (creds.username.as_str(), creds.nc, creds.opaque.as_deref()),
        ("palisade1", Some(1), Some("op"))
    );
    let h1 = ha1(Algorithm::Md5, "palisade1", "carrier.test", "trunkpw");
    assert!(palisade_digest::verify(&creds, &h1, "REGISTER"));
    lab.recv_msg(OUTSIDE, CARRIER1, resp(&reg2, 200, "Expires: 60"));
    assert_eq!(lab.engine.registration_up(lab.now, "carrier"), Some(true));
    let evs: Vec<_> = std::iter::from_fn(|| lab.engine.poll_edge_event()).collect();
    assert!(
        evs.contains(&EdgeEvent::Registration {
            trunk: "carrier".into(),
            up: true,
            status: 200
        }),
        "{evs:?}"
    );
    // Calls go through now.
    lab.recv_msg(INSIDE, PBX, pbx_invite(2, "+4971100100", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
    // Refresh half-way through the 60 s granted, reusing the nonce with nc=2.
    lab.advance(Duration::from_secs(29));
    assert!(lab.take().iter().all(|(_, m)| describe(m) != "REGISTER"));
    lab.advance(Duration::from_secs(1));
    let refresh = lab.find(CARRIER1, "REGISTER");
    let c2 =
        palisade_digest::Credentials::parse(&header(&refresh, HeaderName::Authorization)).unwrap();
    assert_eq!((c2.nonce.as_str(), c2.nc), ("carrier-nonce-1", Some(2)));
    // The carrier now refuses (wrong password from its point of view): back-off, trunk down.
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        resp(
            &refresh,
            401,
            &format!(
                "WWW-Authenticate: {}",
                Challenge {
                    nonce: "n2".into(),
                    ..ch.clone()
                }
                .to_header()
            ),
        ),
    );
    let again = lab.expect(CARRIER1, "REGISTER");
    lab.recv_msg(OUTSIDE, CARRIER1, resp(&again, 403, ""));
    assert_eq!(lab.engine.registration_up(lab.now, "carrier"), Some(false));
    lab.recv_msg(INSIDE, PBX, pbx_invite(3, "+4971100100", Some(PBX_SDP)));
    lab.find(PBX, "503/INVITE");
    assert!(lab.engine.edge_stats().trunk_down_rejected >= 2);
    // Retries after 10 s, then 20 s.
    lab.advance(Duration::from_secs(9));
    assert!(lab.take().iter().all(|(_, m)| describe(m) != "REGISTER"));
    lab.advance(Duration::from_secs(1));
    let r1 = lab.find(CARRIER1, "REGISTER");
    lab.recv_msg(OUTSIDE, CARRIER1, resp(&r1, 500, ""));
    lab.advance(Duration::from_secs(19));
    assert!(lab.take().iter().all(|(_, m)| describe(m) != "REGISTER"));
    lab.advance(Duration::from_secs(1));
    lab.find(CARRIER1, "REGISTER");
}

#[test]
fn carrier_invite_challenge_is_answered_once_with_credentials() {
    let mut lab = lab_with(config(
        "    auth: {username: palisade1, password: trunkpw}\n",
        "",
        "",
    ));
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    let inv = lab.find(CARRIER1, "INVITE");
    let ch = Challenge {
        realm: "carrier.test".into(),
        nonce: "inv-nonce".into(),
        opaque: None,
        algorithm: Algorithm::Sha256,
        qop_auth: true,
        stale: false,
    };
    let mut w = palisade_sip::MessageWriter::response_to(
        &inv,
        407,
        "Proxy Authentication Required",
        None,
        Some("c1"),
    );
    w.header(HeaderName::ProxyAuthenticate, &ch.to_header());
    lab.recv_msg(OUTSIDE, CARRIER1, w.finish_empty());
    let new = lab.take();
    assert!(
        new.iter().any(|(_, m)| describe(m) == "ACK"),
        "the 407 is ACKed"
    );
    let inv2 = new
        .iter()
        .find(|(_, m)| describe(m) == "INVITE")
        .map(|(_, m)| m.clone())
        .unwrap();
    assert_eq!(inv2.call_id(), inv.call_id());
    assert_eq!(inv2.from_tag(), inv.from_tag());
    assert_eq!(inv2.cseq().seq, inv.cseq().seq + 1);
    assert_ne!(inv2.branch(), inv.branch());
    let creds = palisade_digest::Credentials::parse(&header(&inv2, HeaderName::ProxyAuthorization))
        .unwrap();
    assert_eq!(creds.algorithm, Algorithm::Sha256);
    let h1 = ha1(Algorithm::Sha256, "palisade1", "carrier.test", "trunkpw");
    assert!(palisade_digest::verify(&creds, &h1, "INVITE"));
    assert_eq!(lab.engine.edge_stats().outbound_auth_retries, 1);
    // Refused again: no second try; the call fails (407 relayed as is).
    let mut w = palisade_sip::MessageWriter::response_to(
        &inv2,
        407,
        "Proxy Authentication Required",
        None,
        Some("c2"),
    );
    w.header(HeaderName::ProxyAuthenticate, &ch.to_header());
    lab.recv_msg(OUTSIDE, CARRIER1, w.finish_empty());
    lab.find(PBX, "407/INVITE");
    assert_eq!(lab.engine.edge_stats().outbound_auth_retries, 1);
    assert_eq!(lab.engine.cac_held_calls(), 0);
}

#[test]
fn challenge_inbound_invites_from_a_trunk() {
    let mut lab = lab_with(config("", "    challenge_inbound: true\n", ""));
    let invite = pbx_invite(1, "+4971100100", Some(PBX_SDP));
    lab.recv_msg(INSIDE, PBX, invite.clone());
    let r = lab.expect(PBX, "407/INVITE");
    let chs = challenges(&r, HeaderName::ProxyAuthenticate);
    let uri = "sip:+4971100100@127.0.0.1:5060;user=phone";
    let creds = client_credentials(&chs[0], DID, "s3cret", "INVITE", uri, "cn", 1);
    let text = String::from_utf8(invite.to_vec())
        .unwrap()
        .replace(
            "CSeq: 1 INVITE\r\n",
            &format!(
                "CSeq: 2 INVITE\r\nProxy-Authorization: {}\r\n",
                creds.to_header()
            ),
        )
        .replace("branch=z9hG4bK-pbx-1", "branch=z9hG4bK-pbx-1b");
    lab.recv_msg(INSIDE, PBX, bytes::Bytes::from(text));
    let inv = lab.find(CARRIER1, "INVITE");
    assert!(
        !inv.has_header(HeaderName::ProxyAuthorization),
        "credentials never cross"
    );
    // A wrong password is challenged again and counted.
    let bad = client_credentials(&chs[0], DID, "nope", "INVITE", uri, "cn", 1);
    let text = String::from_utf8(pbx_invite(2, "+4971100100", None).to_vec())
        .unwrap()
        .replace(
            "CSeq: 1 INVITE\r\n",
            &format!(
                "CSeq: 1 INVITE\r\nProxy-Authorization: {}\r\n",
                bad.to_header()
            ),
        );
    lab.recv_msg(INSIDE, PBX, bytes::Bytes::from(text));
    lab.find(PBX, "407/INVITE");
    assert_eq!(lab.engine.edge_stats().auth_failures, 1);
}

#[test]
fn call_admission_limits_with_emergency_exemption() {
    let mut lab = lab_with(config(
        "    cac: {max_concurrent_calls: 1, reject_status: 503}\n",
        "",
        "",
    ));
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
    lab.recv_msg(INSIDE, PBX, pbx_invite(2, "+4971100101", Some(PBX_SDP)));
    let r = lab.find(PBX, "503/INVITE");
    assert_eq!(header(&r, HeaderName::RetryAfter), "30");
    assert_eq!(lab.engine.edge_stats().cac_rejected_concurrent, 1);
    assert!(lab.events.iter().any(|e| matches!(
        e,
        palisade_b2bua::Event::Rejected {
            reason: "cac-concurrent",
            status: 503,
            ..
        }
    )));
    // 112 passes the limit.
    lab.recv_msg(INSIDE, PBX, pbx_invite(3, "112", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
    assert_eq!(lab.engine.edge_stats().cac_emergency_exempted, 1);
    assert_eq!(lab.engine.cac_held_calls(), 2);
    // Ending the calls frees the slots (no answer: member timeouts, then 408s).
    lab.advance(Duration::from_secs(200));
    assert_eq!(lab.engine.cac_held_calls(), 0);
    lab.recv_msg(INSIDE, PBX, pbx_invite(4, "+4971100102", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
}

#[test]
fn calls_per_second_limit_486_on_the_virtual_clock() {
    let mut lab = lab_with(config(
        "    cac: {max_calls_per_second: 2, reject_status: 486}\n",
        "",
        "",
    ));
    for i in 0..5 {
        lab.recv_msg(INSIDE, PBX, pbx_invite(i, "+4971100100", Some(PBX_SDP)));
    }
    let busy = lab
        .take()
        .iter()
        .filter(|(_, m)| describe(m) == "486/INVITE")
        .count();
    assert_eq!(busy, 3);
    assert_eq!(lab.engine.edge_stats().cac_rejected_cps, 3);
    lab.advance(Duration::from_millis(500));
    lab.recv_msg(INSIDE, PBX, pbx_invite(10, "+4971100100", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
}

#[test]
fn keepalive_options_mark_members_down_and_up() {
    let mut lab = lab_with(config(
        "    keepalive: {method: options, interval_seconds: 10}\n",
        "",
        "sip:\n  t1_ms: 100\n",
    ));
    lab.engine.sync_edge(lab.now);
    lab.advance(Duration::from_secs(10));
    let sent = lab.take();
    let opts: Vec<_> = sent
        .iter()
        .filter(|(_, m)| describe(m) == "OPTIONS")
        .collect();
    assert_eq!(opts.len(), 2, "one per member");
    // The primary answers, the secondary stays silent (Timer F = 64*T1 = 6.4 s).
    let to_primary = opts
        .iter()
        .find(|(f, _)| f.remote == addr(CARRIER1))
        .unwrap()
        .1
        .clone();
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(&to_primary, 200, Some("k"), None, None),
    );
    lab.advance(Duration::from_secs(7));
    assert!(lab.engine.member_up("carrier", addr(CARRIER1)));
    assert!(!lab.engine.member_up("carrier", addr(CARRIER2)));
    let evs: Vec<_> = std::iter::from_fn(|| lab.engine.poll_edge_event()).collect();
    assert!(
        evs.contains(&EdgeEvent::MemberHealth {
            trunk: "carrier".into(),
            member: addr(CARRIER2),
            up: false
        }),
        "{evs:?}"
    );
    // Both down: the trunk is down and calls get 503.
    lab.engine.set_member_up("carrier", addr(CARRIER1), false);
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    lab.find(PBX, "503/INVITE");
    // The secondary answers the next ping: up again.
    lab.advance(Duration::from_secs(3));
    let ping = lab.find(CARRIER2, "OPTIONS");
    lab.recv_msg(OUTSIDE, CARRIER2, reply(&ping, 200, Some("k"), None, None));
    assert!(lab.engine.member_up("carrier", addr(CARRIER2)));
    assert!(lab.engine.edge_stats().keepalive_options_sent >= 4);
}

#[test]
fn nated_registration_gets_keepalives_on_its_flow() {
    let mut lab = lab_with(config(
        "",
        "",
        "nat: {keepalive: {method: options, interval_seconds: 20}}\n",
    ));
    assert_eq!(register_phone(&mut lab, 1, "s3cret").status(), Some(200));
    lab.advance(Duration::from_secs(20));
    let ping = lab.find(PHONE, "OPTIONS");
    assert_eq!(
        ping.request_uri_str(),
        Some("sip:+4930123555@192.168.1.50:5060")
    );
    // Restoring bindings (from the store) schedules them again.
    let mut lab2 = lab_with(config(
        "",
        "",
        "nat: {keepalive: {method: options, interval_seconds: 20}}\n",
    ));
    let b = palisade_registrar::Binding {
        user: DID.into(),
        contact: "sip:x@10.1.1.1".into(),
        flow: palisade_registrar::BindingFlow {
            zone: 0,
            transport: palisade_sip::Transport::Udp,
            remote: addr(PHONE),
        },
        expires_at: lab2.now + Duration::from_secs(100),
        call_id: "c".into(),
        cseq: 1,
        nated: true,
    };
    assert_eq!(lab2.engine.restore_bindings(lab2.now, vec![b]), 1);
    lab2.advance(Duration::from_secs(20));
    lab2.find(PHONE, "OPTIONS");
}

#[derive(Debug)]
struct RejectCalls;

impl palisade_b2bua::GuardHook for RejectCalls {
    fn call_start(
        &mut self,
        _now: std::time::Instant,
        _info: &palisade_b2bua::CallInfo<'_>,
    ) -> palisade_b2bua::Verdict {
        palisade_b2bua::Verdict::Reject(403)
    }
}

#[test]
fn a_call_the_guard_refuses_frees_its_admission_slot() {
    let mut lab = lab_with(config("    cac: {max_concurrent_calls: 1}\n", "", ""));
    lab.engine.set_guard(Box::new(RejectCalls));
    for i in 0..3 {
        lab.recv_msg(INSIDE, PBX, pbx_invite(i, "+4971100100", Some(PBX_SDP)));
        lab.find(PBX, "403/INVITE");
    }
    assert_eq!(lab.engine.cac_held_calls(), 0);
    assert_eq!(lab.engine.edge_stats().cac_rejected_concurrent, 0);
}

#[test]
fn reload_adds_and_drops_registrations_and_keepalives() {
    let mut lab = lab_with(config("", "", ""));
    lab.engine.sync_edge(lab.now);
    lab.advance(Duration::from_secs(5));
    assert!(lab.take().is_empty(), "nothing configured, nothing sent");
    // Reload with a registration and keepalives: both start.
    let with = config(
        &format!("{REGISTRATION}    keepalive: {{method: options, interval_seconds: 10}}\n"),
        "",
        "",
    );
    lab.engine.reload(std::sync::Arc::new(with));
    lab.engine.sync_edge(lab.now);
    lab.advance(Duration::ZERO);
    lab.find(CARRIER1, "REGISTER");
    assert_eq!(lab.engine.registration_up(lab.now, "carrier"), Some(false));
    lab.advance(Duration::from_secs(10));
    lab.find(CARRIER2, "OPTIONS");
    // Reload without them: the registration is gone, no more pings.
    lab.engine.reload(std::sync::Arc::new(config("", "", "")));
    lab.engine.sync_edge(lab.now);
    assert_eq!(lab.engine.registration_up(lab.now, "carrier"), None);
    // Requests already out finish their transactions (retransmissions, then
    // timeout); nothing new starts.
    lab.advance(Duration::from_secs(40));
    lab.take();
    lab.advance(Duration::from_secs(60));
    assert!(
        lab.take()
            .iter()
            .all(|(_, m)| !matches!(describe(m).as_str(), "REGISTER" | "OPTIONS")),
        "stopped after the reload"
    );
}

/// The first REGISTER of `n`, challenged; returns the challenges.
fn challenged(lab: &mut Lab, n: u32, contact: &str) -> Vec<Challenge> {
    lab.recv(INSIDE, PHONE, &register(n, contact, 120, None));
    challenges(
        &lab.expect(PHONE, "401/REGISTER"),
        HeaderName::WwwAuthenticate,
    )
}

#[test]
fn legacy_answers_foreign_uris_and_replays_are_refused_sha256_accepted() {
    let mut lab = lab_with(config("", "", ""));
    let contact = "sip:+4930123555@192.168.1.50:5060";
    let uri = format!("sip:{REALM}");
    let chs = challenged(&mut lab, 1, contact);
    // The RFC 2069 form (no qop, hence no nonce count): the digest is right,
    // but Palisade offered qop=auth, and without a count the answer could
    // be replayed for the nonce's whole life. Refused, twice.
    let legacy = client_credentials(
        &Challenge {
            qop_auth: false,
            ..chs[0].clone()
        },
        DID,
        "s3cret",
        "REGISTER",
        &uri,
        "x",
        1,
    );
    assert_eq!(legacy.qop, None);
    for n in [2, 3] {
        lab.recv(
            INSIDE,
            PHONE,
            &register(n, contact, 120, Some(&legacy.to_header())),
        );
        let r = lab.expect(PHONE, "401/REGISTER");
        assert!(!challenges(&r, HeaderName::WwwAuthenticate)[0].stale);
    }
    assert_eq!(lab.engine.edge_stats().auth_failures, 2);
    // An answer computed for another Request-URI (captured elsewhere).
    let foreign = client_credentials(
        &chs[0],
        DID,
        "s3cret",
        "REGISTER",
        "sip:other.example",
        "x",
        1,
    );
    lab.recv(
        INSIDE,
        PHONE,
        &register(4, contact, 120, Some(&foreign.to_header())),
    );
    lab.expect(PHONE, "401/REGISTER");
    assert_eq!(lab.engine.edge_stats().auth_failures, 3);
    assert!(lab.engine.bindings_of(lab.now, DID).is_empty());
    // SHA-256 with qop=auth: accepted; the same answer again is a replay.
    assert_eq!(chs[1].algorithm, Algorithm::Sha256);
    let sha = client_credentials(&chs[1], DID, "s3cret", "REGISTER", &uri, "y", 1);
    lab.recv(
        INSIDE,
        PHONE,
        &register(5, contact, 120, Some(&sha.to_header())),
    );
    lab.expect(PHONE, "200/REGISTER");
    assert_eq!(lab.engine.bindings_of(lab.now, DID).len(), 1);
    lab.recv(
        INSIDE,
        PHONE,
        &register(6, contact, 120, Some(&sha.to_header())),
    );
    let replay = lab.expect(PHONE, "401/REGISTER");
    assert!(challenges(&replay, HeaderName::WwwAuthenticate)[0].stale);
    // The next count on the same nonce is fine.
    let sha2 = client_credentials(&chs[1], DID, "s3cret", "REGISTER", &uri, "y", 2);
    lab.recv(
        INSIDE,
        PHONE,
        &register(7, contact, 120, Some(&sha2.to_header())),
    );
    lab.expect(PHONE, "200/REGISTER");
    assert_eq!(lab.engine.edge_stats().auth_failures, 3);
}

/// The PBX's INVITE `n` with `creds` in Proxy-Authorization.
fn pbx_invite_with(n: u32, creds: &palisade_digest::Credentials) -> bytes::Bytes {
    let text = String::from_utf8(pbx_invite(n, "+4971100100", Some(PBX_SDP)).to_vec())
        .unwrap()
        .replace(
            "CSeq: 1 INVITE\r\n",
            &format!(
                "CSeq: 2 INVITE\r\nProxy-Authorization: {}\r\n",
                creds.to_header()
            ),
        );
    bytes::Bytes::from(text)
}

#[test]
fn challenge_inbound_accepts_only_the_trunks_own_users() {
    let trunk_user = "pbx-trunk";
    let extra_user = format!(
        "    - user: {trunk_user}\n      ha1_md5: {}\n",
        ha1(Algorithm::Md5, trunk_user, REALM, "trunk-pw")
    );
    let mut lab = lab_with(config(
        "",
        &format!("    challenge_inbound: true\n    challenge_inbound_users: [{trunk_user}]\n"),
        &extra_user,
    ));
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    let chs = challenges(
        &lab.expect(PBX, "407/INVITE"),
        HeaderName::ProxyAuthenticate,
    );
    let uri = "sip:+4971100100@127.0.0.1:5060;user=phone";
    // A registrar user, right password, but not this trunk's user: refused
    // like a wrong password, and counted.
    let phone = client_credentials(&chs[0], DID, "s3cret", "INVITE", uri, "a", 1);
    lab.recv_msg(INSIDE, PBX, pbx_invite_with(2, &phone));
    lab.find(PBX, "407/INVITE");
    assert_eq!(lab.engine.edge_stats().auth_failures, 1);
    // The trunk's user, but the digest uri of another request: refused.
    let elsewhere = client_credentials(
        &chs[0],
        trunk_user,
        "trunk-pw",
        "INVITE",
        "sip:+4971100999@127.0.0.1:5060;user=phone",
        "b",
        1,
    );
    lab.recv_msg(INSIDE, PBX, pbx_invite_with(3, &elsewhere));
    lab.find(PBX, "407/INVITE");
    assert_eq!(lab.engine.edge_stats().auth_failures, 2);
    // The trunk's user for this Request-URI: the call goes out.
    let good = client_credentials(&chs[0], trunk_user, "trunk-pw", "INVITE", uri, "c", 1);
    lab.recv_msg(INSIDE, PBX, pbx_invite_with(4, &good));
    lab.find(CARRIER1, "INVITE");
    assert_eq!(lab.engine.edge_stats().auth_failures, 2);
}

#[test]
fn zone_registration_limit_counts_live_bindings_only() {
    let text = with_zone_cac(
        &config_text("", "", ""),
        "inside",
        "{max_registrations: 1, reject_status: 480}",
    );
    let mut lab = lab_with(load(&text));
    let uri = format!("sip:{REALM}");
    let first = "sip:+4930123555@192.168.1.50:5060";
    let chs = challenged(&mut lab, 1, first);
    let auth =
        |nc| client_credentials(&chs[1], DID, "s3cret", "REGISTER", &uri, "z", nc).to_header();
    lab.recv(INSIDE, PHONE, &register(2, first, 30, Some(&auth(1))));
    lab.expect(PHONE, "200/REGISTER");
    // A second contact while the first is live: over the zone's limit,
    // refused with the zone's status (480: no Retry-After).
    let second = "sip:+4930123555@192.168.1.51:5060";
    lab.recv(INSIDE, PHONE, &register(3, second, 30, Some(&auth(2))));
    let r = lab.expect(PHONE, "480/REGISTER");
    assert!(!r.has_header(HeaderName::RetryAfter));
    assert_eq!(lab.engine.edge_stats().cac_rejected_registrations, 1);
    // The first binding expires; the REGISTER arrives before the edge timer
    // swept it (the clock moves, no timer runs): it holds no registration
    // any more, so the second contact fits.
    lab.now += Duration::from_secs(31);
    assert_eq!(lab.engine.edge_stats().bindings, 1, "not swept yet");
    let chs = challenged(&mut lab, 4, second);
    let creds = client_credentials(&chs[1], DID, "s3cret", "REGISTER", &uri, "w", 1);
    lab.recv(
        INSIDE,
        PHONE,
        &register(5, second, 30, Some(&creds.to_header())),
    );
    let ok = lab.expect(PHONE, "200/REGISTER");
    assert_eq!(
        header(&ok, HeaderName::Contact),
        format!("<{second}>;expires=30")
    );
    assert_eq!(lab.engine.edge_stats().cac_rejected_registrations, 1);
    let evs: Vec<_> = std::iter::from_fn(|| lab.engine.poll_edge_event()).collect();
    assert!(
        evs.iter()
            .any(|e| matches!(e, EdgeEvent::BindingRemoved { contact, .. } if contact == first)),
        "the expired binding is removed from the store too: {evs:?}"
    );
}

#[test]
fn sha256_is_preferred_when_a_carrier_offers_both() {
    let mut lab = lab_with(config(REGISTRATION, "", ""));
    lab.engine.sync_edge(lab.now);
    lab.advance(Duration::ZERO);
    let reg = lab.expect(CARRIER1, "REGISTER");
    let md5 = Challenge {
        realm: "carrier.test".into(),
        nonce: "both-nonce".into(),
        opaque: None,
        algorithm: Algorithm::Md5,
        qop_auth: true,
        stale: false,
    };
    let sha = Challenge {
        algorithm: Algorithm::Sha256,
        ..md5.clone()
    };
    // Another realm's SHA-256 challenge is not ours to answer.
    let foreign = Challenge {
        realm: "elsewhere".into(),
        ..sha.clone()
    };
    // MD5 listed first, as most carriers do.
    let mut w =
        palisade_sip::MessageWriter::response_to(&reg, 401, "Unauthorized", None, Some("t"));
    w.header(HeaderName::WwwAuthenticate, &foreign.to_header());
    w.header(HeaderName::WwwAuthenticate, &md5.to_header());
    w.header(HeaderName::WwwAuthenticate, &sha.to_header());
    lab.recv_msg(OUTSIDE, CARRIER1, w.finish_empty());
    let reg2 = lab.expect(CARRIER1, "REGISTER");
    let creds =
        palisade_digest::Credentials::parse(&header(&reg2, HeaderName::Authorization)).unwrap();
    assert_eq!(
        (creds.algorithm, creds.realm.as_str()),
        (Algorithm::Sha256, "carrier.test")
    );
    let h1 = ha1(Algorithm::Sha256, "palisade1", "carrier.test", "trunkpw");
    assert!(palisade_digest::verify(&creds, &h1, "REGISTER"));
    // Only MD5 offered: MD5 it is.
    let mut lab = lab_with(config(REGISTRATION, "", ""));
    lab.engine.sync_edge(lab.now);
    lab.advance(Duration::ZERO);
    let reg = lab.expect(CARRIER1, "REGISTER");
    let mut w =
        palisade_sip::MessageWriter::response_to(&reg, 401, "Unauthorized", None, Some("t"));
    w.header(HeaderName::WwwAuthenticate, &md5.to_header());
    lab.recv_msg(OUTSIDE, CARRIER1, w.finish_empty());
    let reg2 = lab.expect(CARRIER1, "REGISTER");
    let creds =
        palisade_digest::Credentials::parse(&header(&reg2, HeaderName::Authorization)).unwrap();
    assert_eq!(creds.algorithm, Algorithm::Md5);

    // The same choice on a carrier's 407 to an INVITE.
    let mut lab = lab_with(config(
        "    auth: {username: palisade1, password: trunkpw}\n",
        "",
        "",
    ));
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    let inv = lab.find(CARRIER1, "INVITE");
    let mut w = palisade_sip::MessageWriter::response_to(
        &inv,
        407,
        "Proxy Authentication Required",
        None,
        Some("c1"),
    );
    w.header(HeaderName::ProxyAuthenticate, &md5.to_header());
    w.header(HeaderName::ProxyAuthenticate, &sha.to_header());
    lab.recv_msg(OUTSIDE, CARRIER1, w.finish_empty());
    let inv2 = lab.find(CARRIER1, "INVITE");
    let creds = palisade_digest::Credentials::parse(&header(&inv2, HeaderName::ProxyAuthorization))
        .unwrap();
    assert_eq!(creds.algorithm, Algorithm::Sha256);
}

/// A media hook that records the NAT flags it is given (SDP as `OriginOnly`).
#[derive(Debug, Clone, Default)]
struct NatSeen(std::sync::Arc<std::sync::Mutex<Vec<(palisade_b2bua::Side, bool, bool)>>>);

impl palisade_b2bua::MediaHook for NatSeen {
    fn sdp(
        &mut self,
        now: std::time::Instant,
        ctx: &palisade_b2bua::SdpContext<'_>,
        sdp: &[u8],
    ) -> Result<bytes::Bytes, palisade_b2bua::MediaRefusal> {
        self.0
            .lock()
            .unwrap()
            .push((ctx.from, ctx.from_nated, ctx.to_nated));
        palisade_b2bua::OriginOnly.sdp(now, ctx, sdp)
    }
    fn release(&mut self, _now: std::time::Instant, _call: palisade_b2bua::CallRef) {}
}

#[test]
fn nat_is_detected_on_initial_invites_counted_logged_and_given_to_media() {
    let mut lab = lab_with(config("", "", ""));
    let seen = NatSeen::default();
    lab.engine.set_media(Box::new(seen.clone()));
    // The PBX sits behind a NAT that maps it to 127.0.0.10:5070 (the trunk
    // member): its Via, Contact and SDP name its private address.
    let text = String::from_utf8(pbx_invite(1, "+4971100100", Some(PBX_SDP)).to_vec())
        .unwrap()
        .replace("127.0.0.10", "192.168.77.10");
    lab.recv_msg(INSIDE, PBX, bytes::Bytes::from(text));
    let new = lab.take();
    let trying = new
        .iter()
        .find(|(f, m)| f.remote == addr(PBX) && describe(m) == "100/INVITE")
        .map(|(_, m)| m.clone())
        .unwrap();
    // RFC 3581: the response tells the NATed caller where it was seen from.
    let via = header(&trying, HeaderName::Via);
    assert!(
        via.starts_with("SIP/2.0/UDP 192.168.77.10:5070;branch=z9hG4bK-pbx-1")
            && via.contains(";received=127.0.0.10")
            && via.contains(";rport=5070"),
        "{via}"
    );
    let inv = new
        .iter()
        .find(|(f, m)| f.remote == addr(CARRIER1) && describe(m) == "INVITE")
        .map(|(_, m)| m.clone())
        .unwrap();
    assert_no_leak(&inv, &["192.168.77.10"]);
    assert!(lab.call_events().iter().any(|e| matches!(
        e,
        palisade_b2bua::CallEventKind::Started { nated: true, .. }
    )));
    assert_eq!(lab.engine.edge_stats().nated_calls, 1);
    // The carrier answers: the final response to the PBX carries the same
    // received/rport, and the media layer knew the PBX's leg was NATed for
    // the offer (from it) and the answer (toward it).
    lab.recv_msg(
        OUTSIDE,
        CARRIER1,
        reply(
            &inv,
            200,
            Some("c1"),
            Some("<sip:c@127.0.0.20:5080>"),
            Some(CARRIER_SDP),
        ),
    );
    let ok = lab.find(PBX, "200/INVITE");
    let via = header(&ok, HeaderName::Via);
    assert!(
        via.contains(";received=127.0.0.10") && via.contains(";rport=5070"),
        "{via}"
    );
    let flags = seen.0.lock().unwrap().clone();
    assert_eq!(
        flags,
        [
            (palisade_b2bua::Side::A, true, false),
            (palisade_b2bua::Side::B, false, true)
        ]
    );

    // A PBX that writes its real address is not NATed (its responses still
    // answer rport, as RFC 3581 asks whenever the parameter is present).
    lab.recv_msg(INSIDE, PBX, pbx_invite(2, "+4971100100", Some(PBX_SDP)));
    let trying = lab.find(PBX, "100/INVITE");
    let via = header(&trying, HeaderName::Via);
    assert!(via.contains(";rport=5070"), "{via}");
    assert_eq!(lab.engine.edge_stats().nated_calls, 1);
    assert!(lab.call_events().iter().any(|e| matches!(
        e,
        palisade_b2bua::CallEventKind::Started { nated: false, .. }
    )));
}

#[test]
fn crlf_keepalives_to_trunk_members_expect_nothing_back() {
    let mut lab = lab_with(config(
        "    keepalive: {method: crlf, interval_seconds: 5}\n",
        "",
        "",
    ));
    lab.engine.sync_edge(lab.now);
    lab.advance(Duration::from_secs(4));
    assert!(lab.pings.is_empty(), "first ping one interval after start");
    lab.advance(Duration::from_secs(1));
    let mut to: Vec<_> = lab.pings.iter().map(|(f, _)| f.remote).collect();
    to.sort();
    assert_eq!(to, [addr(CARRIER1), addr(CARRIER2)], "one per member");
    for (f, data) in &lab.pings {
        assert_eq!(&data[..], b"\r\n\r\n");
        assert_eq!(
            (f.zone, f.transport),
            (OUTSIDE, palisade_sip::Transport::Udp),
            "from the trunk's zone, over the member's transport"
        );
    }
    assert!(
        lab.take().iter().all(|(_, m)| describe(m) != "OPTIONS"),
        "no OPTIONS"
    );
    // Nothing ever answers a CRLF ping: members stay up, pings go on every 5 s.
    lab.advance(Duration::from_secs(30));
    assert_eq!(lab.pings.len(), 2 * 7);
    let stats = lab.engine.edge_stats();
    assert_eq!((stats.keepalive_crlf_sent, stats.keepalive_misses), (14, 0));
    assert!(lab.engine.member_up("carrier", addr(CARRIER1)));
    assert!(lab.engine.member_up("carrier", addr(CARRIER2)));
    let evs: Vec<_> = std::iter::from_fn(|| lab.engine.poll_edge_event()).collect();
    assert!(
        !evs.iter()
            .any(|e| matches!(e, EdgeEvent::MemberHealth { .. })),
        "{evs:?}"
    );
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
}

#[test]
fn zone_call_limits_apply_to_calls_in_either_direction() {
    // The outside zone holds one call at a time (480 over it) and admits at
    // most 2 new calls per second; the carrier trunk itself has no limit.
    let text = with_zone_cac(
        &config_text("", "", ""),
        "outside",
        "{max_concurrent_calls: 1, reject_status: 480}",
    );
    let mut lab = lab_with(load(&text));
    lab.recv_msg(INSIDE, PBX, pbx_invite(1, "+4971100100", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
    // Outbound over the zone's limit.
    lab.recv_msg(INSIDE, PBX, pbx_invite(2, "+4971100101", Some(PBX_SDP)));
    let r = lab.find(PBX, "480/INVITE");
    assert!(!r.has_header(HeaderName::RetryAfter));
    // Inbound from the carrier: the same zone, the same limit (the PBX trunk
    // and the inside zone have none).
    let text = with_zone_cac(
        &config_text("", "", ""),
        "outside",
        "{max_concurrent_calls: 1, reject_status: 480}",
    )
    .replace("    to_registered: true\n", "");
    let mut inbound = lab_with(load(&text));
    inbound.recv(OUTSIDE, CARRIER1, &carrier_invite(1, DID));
    inbound.find(PBX, "INVITE");
    inbound.recv(OUTSIDE, CARRIER1, &carrier_invite(2, DID));
    inbound.find(CARRIER1, "480/INVITE");
    assert_eq!(inbound.engine.edge_stats().cac_rejected_concurrent, 1);
    assert!(inbound.events.iter().any(|e| matches!(
        e,
        palisade_b2bua::Event::Rejected {
            reason: "cac-concurrent",
            status: 480,
            ..
        }
    )));
    // Emergency calls pass the zone's limit too.
    lab.recv_msg(INSIDE, PBX, pbx_invite(3, "112", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
    assert_eq!(
        (
            lab.engine.edge_stats().cac_rejected_concurrent,
            lab.engine.edge_stats().cac_emergency_exempted
        ),
        (1, 1)
    );

    // Calls per second on the inside zone: 503 with the configured Retry-After.
    let text = with_zone_cac(
        &config_text("", "", "call_admission: {retry_after_seconds: 7}\n"),
        "inside",
        "{max_calls_per_second: 2}",
    );
    let mut lab = lab_with(load(&text));
    for i in 0..4 {
        lab.recv_msg(INSIDE, PBX, pbx_invite(i, "+4971100100", Some(PBX_SDP)));
    }
    let refused: Vec<Message> = lab
        .take()
        .into_iter()
        .filter(|(_, m)| describe(m) == "503/INVITE")
        .map(|(_, m)| m)
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(
        refused
            .iter()
            .all(|m| header(m, HeaderName::RetryAfter) == "7")
    );
    assert_eq!(lab.engine.edge_stats().cac_rejected_cps, 2);
    lab.advance(Duration::from_secs(1));
    lab.recv_msg(INSIDE, PBX, pbx_invite(9, "+4971100100", Some(PBX_SDP)));
    lab.find(CARRIER1, "INVITE");
}
