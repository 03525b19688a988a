//! Media anchoring end to end: real RTP from SIPp and baresip through the
//! built binary, observed with tshark, sox and Palisade's own media-stats.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use palisade_e2e::baresip::{Baresip, audio_stat, make_tone, make_ulaw_tone};
use palisade_e2e::capture::{Capture, Packet, rtp_times, sip_dscp, sip_response_times};
use palisade_e2e::http;
use palisade_e2e::net::{now, wait_until};
use palisade_e2e::rtp::RtpPeer;
use palisade_e2e::{Direction, Lab, Slot, assert_topology_hidden, numbers};

const INSIDE_MEDIA: std::ops::RangeInclusive<u16> = 20000..=20999;
const OUTSIDE_MEDIA: std::ops::RangeInclusive<u16> = 30000..=30999;

/// `key=value` fields of a Palisade log line.
fn fields(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn num(f: &BTreeMap<String, String>, key: &str) -> u64 {
    f.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key} in {f:?}"))
}

/// The `m=audio` ports in the SDP bodies a peer received.
fn received_audio_ports(msgs: &[palisade_e2e::SipMessage]) -> Vec<u16> {
    msgs.iter()
        .filter(|m| m.direction == Direction::Received)
        .flat_map(|m| {
            m.text()
                .lines()
                .filter_map(|l| l.trim_end().strip_prefix("m=audio "))
                .filter_map(|rest| rest.split(' ').next()?.parse().ok())
                .collect::<Vec<u16>>()
        })
        .collect()
}

/// Counts captured packets per (src, dst) address pair.
fn flows(pkts: &[Packet]) -> BTreeMap<(Ipv4Addr, Ipv4Addr), usize> {
    let mut m = BTreeMap::new();
    for p in pkts {
        *m.entry((p.src, p.dst)).or_insert(0) += 1;
    }
    m
}

/// Asserts every captured RTP/RTCP packet is on an anchored path (a peer
/// and Palisade's media address of its zone, within the zone's range);
/// returns the packets per (src, dst).
fn assert_anchored(
    net: palisade_e2e::Net,
    pkts: &[Packet],
) -> BTreeMap<(Ipv4Addr, Ipv4Addr), usize> {
    let (pbx_ip, carrier_ip) = (net.pbx_ip(), net.carrier_primary_ip());
    let (inside, outside) = (net.inside_ip(), net.outside_ip());
    let by_flow = flows(pkts);
    eprintln!("tshark RTP/RTCP flows (src, dst) -> packets: {by_flow:?}");
    for p in pkts {
        let ok = (p.src == pbx_ip && p.dst == inside && INSIDE_MEDIA.contains(&p.dst_port))
            || (p.src == inside && p.dst == pbx_ip && INSIDE_MEDIA.contains(&p.src_port))
            || (p.src == outside && p.dst == carrier_ip && OUTSIDE_MEDIA.contains(&p.src_port))
            || (p.src == carrier_ip && p.dst == outside && OUTSIDE_MEDIA.contains(&p.dst_port));
        assert!(
            ok,
            "media outside the anchored paths: {p:?}\nall flows: {by_flow:?}"
        );
    }
    by_flow
}

#[test]
fn sipp_rtp_flows_only_through_palisades_media_addresses() {
    let lab = Lab::start(Slot::MediaRtpPath);
    let net = lab.net();
    make_ulaw_tone(&lab.dir().join("tone.wav"), 1000, 2);
    let cap = Capture::start(lab.slot(), lab.dir(), "lo");
    let carrier = lab
        .carrier_primary("uas_answer")
        .arg("-rtp_echo")
        .spawn_uas();
    let pbx = lab.pbx_uac("uac_rtp").pause_ms(2500).run();
    pbx.assert_success(1);
    let carrier = carrier.wait();
    carrier.assert_success(1);
    let pkts = cap.stop();

    let (pbx_ip, carrier_ip) = (net.pbx_ip(), net.carrier_primary_ip());
    let (inside, outside) = (net.inside_ip(), net.outside_ip());
    let by_flow = assert_anchored(net, &pkts);
    // The tone (2 s, 50 packets/s) reached the carrier and its echo came back.
    for (flow, what) in [
        ((pbx_ip, inside), "PBX -> inside media"),
        ((outside, carrier_ip), "outside media -> carrier"),
        ((carrier_ip, outside), "carrier echo -> outside media"),
        ((inside, pbx_ip), "echo -> PBX"),
    ] {
        let n = by_flow.get(&flow).copied().unwrap_or(0);
        assert!(n >= 90, "{what}: {n} packets\nall flows: {by_flow:?}");
    }
    assert!(
        !by_flow
            .keys()
            .any(|(s, d)| (*s == pbx_ip && *d == carrier_ip) || (*s == carrier_ip && *d == pbx_ip)),
        "PBX and carrier exchanged media directly: {by_flow:?}"
    );
    // DSCP: media Palisade sends is EF (46), its SIP is CS3 (24), by default.
    for p in pkts.iter().filter(|p| p.src == inside || p.src == outside) {
        assert_eq!(p.dscp, 46, "RTP from Palisade not marked EF: {p:?}");
    }
    let file = lab.dir().join("lo.pcapng");
    for zone in [inside, outside] {
        let marks = sip_dscp(&file, zone);
        assert!(
            !marks.is_empty() && marks.iter().all(|d| *d == 24),
            "SIP from {zone}: {marks:?}"
        );
    }
    // Signalling and SDP name only Palisade on each side.
    assert_topology_hidden(net, &pbx.messages(), &[&carrier.messages()]);
    let stats = fields(&lab.wait_log(&["event=media-stats"], Duration::from_secs(5)));
    assert!(
        num(&stats, "a_packets") >= 90 && num(&stats, "b_packets") >= 90,
        "{stats:?}"
    );
    // Quality kept with the call: MOS and jitter present and sane for clean
    // loopback PCMU (E-model tops out at 4.5), RTCP fields present (SIPp's
    // rtp_stream sends no RTCP: `-`).
    for side in ["a", "b"] {
        let mos: f64 = stats[&format!("{side}_mos")]
            .parse()
            .unwrap_or_else(|_| panic!("{side}_mos is not a number: {stats:?}"));
        assert!((4.0..=4.5).contains(&mos), "{side}_mos={mos}: {stats:?}");
        let jitter: f64 = stats[&format!("{side}_jitter_ms")].parse().unwrap();
        assert!(
            (0.0..20.0).contains(&jitter),
            "{side}_jitter_ms={jitter}: {stats:?}"
        );
        assert_eq!(num(&stats, &format!("{side}_lost")), 0, "{stats:?}");
        for k in ["rtcp_fraction_lost", "rtcp_jitter_ms", "rtt_ms"] {
            assert!(
                stats.contains_key(&format!("{side}_{k}")),
                "no {side}_{k}: {stats:?}"
            );
        }
    }
    // The same call reference as the call's other event lines.
    let started = fields(&lab.wait_log(&["event=started"], Duration::from_secs(1)));
    assert_eq!(started["call"], stats["call"]);
    // And in /metrics: both directions ended good, nothing lost, all relayed.
    let m = http::get(lab.admin(), "/metrics").expect("no answer from /metrics");
    let metric = |name: &str| http::metric(&m.body, name);
    assert_eq!(
        metric("palisade_media_stream_directions_total{quality=\"good\"}"),
        Some(2),
        "{}",
        m.body
    );
    for band in ["fair", "poor", "bad", "none"] {
        let name = format!("palisade_media_stream_directions_total{{quality=\"{band}\"}}");
        assert_eq!(metric(&name), Some(0), "{name}\n{}", m.body);
    }
    assert_eq!(metric("palisade_media_lost_packets_total"), Some(0));
    let received = metric("palisade_media_received_packets_total").unwrap_or(0);
    assert_eq!(
        received,
        num(&stats, "a_packets") + num(&stats, "b_packets"),
        "{}",
        m.body
    );
    assert!(
        metric("palisade_relay_packets_total").is_some_and(|n| n >= received),
        "{}",
        m.body
    );
    assert_eq!(metric("palisade_media_ports_in_use"), Some(0), "{}", m.body);
}

#[test]
fn early_media_183_reaches_the_pbx_before_the_200() {
    let lab = Lab::start(Slot::MediaEarly183);
    let net = lab.net();
    make_ulaw_tone(&lab.dir().join("tone.wav"), 800, 2);
    let cap = Capture::start(lab.slot(), lab.dir(), "lo");
    let carrier = lab.carrier_primary("uas_early_media").spawn_uas();
    let pbx = lab.pbx_uac("uac_call").pause_ms(500).run();
    pbx.assert_success(1);
    let carrier = carrier.wait();
    carrier.assert_success(1);
    let _ = cap.stop();
    let statuses: Vec<u16> = pbx.received().iter().filter_map(|m| m.status()).collect();
    assert!(
        statuses.contains(&183),
        "the PBX never got the 183: {statuses:?}"
    );
    let file = lab.dir().join("lo.pcapng");
    let (inside, outside) = (net.inside_ip(), net.outside_ip());
    let ok_times = sip_response_times(&file, inside, net.pbx_ip(), 200, "INVITE");
    let answered = ok_times
        .iter()
        .copied()
        .reduce(f64::min)
        .expect("no 200 for the INVITE captured toward the PBX");
    let to_pbx = rtp_times(&file, inside, net.pbx_ip());
    let from_carrier = rtp_times(&file, net.carrier_primary_ip(), outside);
    let early = to_pbx.iter().filter(|t| **t < answered).count();
    let early_in = from_carrier.iter().filter(|t| **t < answered).count();
    // 1.5 s of announcement at 50 packets/s before the 200.
    assert!(
        early >= 40 && early_in >= 40,
        "early media: {early_in} packets from the carrier, {early} relayed to the PBX before the 200 \
         (of {} and {})",
        from_carrier.len(),
        to_pbx.len()
    );
    // And only through Palisade's media addresses.
    assert!(
        rtp_times(&file, net.carrier_primary_ip(), net.pbx_ip()).is_empty(),
        "the carrier sent media to the PBX directly"
    );
    assert_topology_hidden(net, &pbx.messages(), &[&carrier.messages()]);
}

/// Starts two baresip phones for a call through Palisade: the carrier's with
/// SRTP required (its trunk too), the PBX's with plain RTP. `pbx_calls`
/// picks who dials. Each plays its own tone; both recordings must hold the
/// other side's tone.
fn baresip_call(slot: Slot, pbx_calls: bool) {
    let lab = Lab::builder(slot)
        .with(|c| c.carrier_media = "srtp: required".into())
        .start();
    let net = lab.net();
    let dir = lab.dir().to_path_buf();
    let (pbx_tone, carrier_tone) = (dir.join("pbx-1000hz.wav"), dir.join("carrier-600hz.wav"));
    make_tone(&pbx_tone, 1000, 3);
    make_tone(&carrier_tone, 600, 3);
    let (pbx_user, carrier_user) = if pbx_calls {
        (numbers::PBX_CALLER, numbers::EXTERNAL)
    } else {
        (numbers::DID, numbers::EXTERNAL)
    };
    let mut carrier = Baresip::new(
        &dir.join("carrier"),
        net.carrier_primary(),
        &format!("sip:{carrier_user}@{}", net.outside_ip()),
        &carrier_tone,
    )
    .srtp()
    .rtp_ports(17000, 17019)
    .quit_after(Duration::from_secs(12));
    let mut pbx = Baresip::new(
        &dir.join("pbx"),
        net.pbx(),
        &format!("sip:{pbx_user}@{}", net.inside_ip()),
        &pbx_tone,
    )
    .rtp_ports(16000, 16019)
    .quit_after(Duration::from_secs(12));
    if pbx_calls {
        pbx = pbx.dial(&format!("sip:{}@{}", numbers::EXTERNAL, net.inside()));
    } else {
        carrier = carrier.dial(&format!("sip:{}@{}", numbers::DID, net.outside()));
    }
    let (first, second) = if pbx_calls {
        (carrier, pbx)
    } else {
        (pbx, carrier)
    };
    let callee = first.spawn();
    assert!(
        callee.wait_log("baresip is ready", Duration::from_secs(10)),
        "callee baresip did not start:\n{}",
        callee.log()
    );
    let caller = second.spawn();
    let caller_log = caller.wait();
    let callee_log = callee.wait();
    let (pbx_p_log, carrier_log) = if pbx_calls {
        (&caller_log, &callee_log)
    } else {
        (&callee_log, &caller_log)
    };
    assert!(
        carrier_log.contains("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)"),
        "the carrier's leg is not SRTP:\n{carrier_log}"
    );
    assert!(
        !pbx_p_log.contains("SRTP is Enabled"),
        "the PBX's leg should be plain RTP:\n{pbx_p_log}"
    );
    let recording = |who: &str, log: &str| {
        let rec = std::fs::read_dir(dir.join(who).join("rec"))
            .unwrap_or_else(|e| panic!("{who} recordings: {e}"))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("{who} recorded nothing:\n{log}"));
        audio_stat(&rec)
    };
    let at_carrier = recording("carrier", carrier_log);
    let at_pbx = recording("pbx", pbx_p_log);
    eprintln!("carrier heard {at_carrier:?}; PBX heard {at_pbx:?}");
    assert!(
        at_carrier.seconds >= 2.0
            && at_carrier.rms > 0.1
            && (900.0..=1100.0).contains(&at_carrier.frequency),
        "the PBX's 1 kHz tone did not reach the carrier: {at_carrier:?}"
    );
    assert!(
        at_pbx.seconds >= 2.0 && at_pbx.rms > 0.1 && (500.0..=700.0).contains(&at_pbx.frequency),
        "the carrier's 600 Hz tone did not reach the PBX: {at_pbx:?}"
    );
    let stats = fields(&lab.wait_log(&["event=media-stats"], Duration::from_secs(5)));
    assert!(
        num(&stats, "a_packets") >= 100 && num(&stats, "b_packets") >= 100,
        "{stats:?}"
    );
}

#[test]
fn baresip_tone_crosses_srtp_carrier_and_rtp_pbx_outbound() {
    baresip_call(Slot::MediaSrtpBaresip, true);
}

#[test]
fn baresip_tone_crosses_srtp_carrier_and_rtp_pbx_inbound() {
    baresip_call(Slot::MediaSrtpBaresipInbound, false);
}

/// The PBX announces one port and sends from another: a call with SIPp for
/// signalling (SDP port 16010) and a bare RTP socket on 16000 for media.
/// Returns (echoes received, the media-stats line's fields).
fn latching_call(slot: Slot, strict: bool) -> (usize, BTreeMap<String, String>) {
    let lab = Lab::builder(slot)
        .with(|c| {
            if strict {
                c.pbx_media = "latching: strict".into();
            }
        })
        .start();
    let net = lab.net();
    let carrier = lab
        .carrier_primary("uas_answer")
        .arg("-rtp_echo")
        .spawn_uas();
    let pbx = lab
        .pbx_uac("uac_call")
        .media(net.pbx_ip(), 16010)
        .pause_ms(4000)
        .spawn();
    // Palisade's inside media port, from the 200 the PBX got.
    let mut port = None;
    let found = wait_until(Duration::from_secs(10), || {
        port = pbx
            .messages()
            .iter()
            .filter(|m| {
                m.direction == Direction::Received && m.start_line().starts_with("SIP/2.0 200")
            })
            .find_map(|m| {
                received_audio_ports(std::slice::from_ref(m))
                    .first()
                    .copied()
            });
        port.is_some()
    });
    assert!(found, "the PBX got no 200 with SDP");
    let to = SocketAddr::new(net.inside_ip().into(), port.unwrap_or_default());
    let mut rtp = RtpPeer::bind(SocketAddr::new(net.pbx_ip().into(), 16000));
    rtp.send(to, 50, Duration::from_millis(10));
    let echoes = rtp.count_received(Duration::from_millis(800), Duration::from_secs(5));
    pbx.wait().assert_success(1);
    carrier.wait().assert_success(1);
    let stats = fields(&lab.wait_log(&["event=media-stats"], Duration::from_secs(5)));
    (echoes, stats)
}

#[test]
fn learn_latching_follows_the_real_source_port() {
    let (echoes, stats) = latching_call(Slot::MediaLatchLearn, false);
    eprintln!("echoes back at the real source port: {echoes}; media-stats {stats:?}");
    assert!(echoes >= 45, "only {echoes} of 50 packets came back");
    assert!(num(&stats, "a_packets") >= 50, "{stats:?}");
    assert!(num(&stats, "b_packets") >= 45, "{stats:?}");
}

#[test]
fn strict_latching_drops_media_from_an_unsignalled_port_and_counts_it() {
    let (echoes, stats) = latching_call(Slot::MediaLatchStrict, true);
    eprintln!("echoes: {echoes}; media-stats {stats:?}");
    assert_eq!(
        echoes, 0,
        "strict mode relayed media from an unsignalled port"
    );
    assert_eq!(num(&stats, "a_packets"), 0, "{stats:?}");
    assert!(num(&stats, "a_dropped") >= 50, "{stats:?}");
}

#[test]
fn hold_and_unhold_keep_media_flowing() {
    let lab = Lab::start(Slot::MediaHold);
    make_ulaw_tone(&lab.dir().join("tone.wav"), 1000, 1);
    let carrier = lab
        .carrier_primary("uas_reinvite_hold")
        .arg("-rtp_echo")
        .spawn_uas();
    let pbx = lab.pbx_uac("uac_rtp_hold").pause_ms(1500).run();
    pbx.assert_success(1);
    let carrier = carrier.wait();
    carrier.assert_success(1);
    // Each side keeps Palisade's port through the hold and the unhold.
    let at_pbx = received_audio_ports(&pbx.messages());
    let at_carrier = received_audio_ports(&carrier.messages());
    // Three offers or answers each (more when a 2xx was retransmitted).
    assert!(at_pbx.len() >= 3, "{at_pbx:?}");
    assert!(at_carrier.len() >= 3, "{at_carrier:?}");
    assert!(
        at_pbx
            .iter()
            .all(|p| *p == at_pbx[0] && INSIDE_MEDIA.contains(p))
    );
    assert!(
        at_carrier
            .iter()
            .all(|p| *p == at_carrier[0] && OUTSIDE_MEDIA.contains(p))
    );
    // Two one-second bursts, before the hold and after the unhold, both echoed.
    let stats = fields(&lab.wait_log(&["event=media-stats"], Duration::from_secs(5)));
    eprintln!("media-stats {stats:?}");
    assert!(num(&stats, "a_packets") >= 95, "{stats:?}");
    assert!(
        num(&stats, "b_packets") >= 95,
        "second burst not echoed: {stats:?}"
    );
}

#[test]
fn media_timeout_ends_the_call_with_bye_on_both_legs() {
    let lab = Lab::builder(Slot::MediaTimeout)
        .with(|c| c.media = "timeout_seconds: 2".into())
        .start();
    let started = now();
    let carrier = lab.carrier_primary("uas_answer").spawn_uas();
    // No RTP at all: both peers wait for Palisade's BYE.
    let pbx = lab.pbx_uac("uac_expect_bye").run();
    pbx.assert_success(1);
    carrier.wait().assert_success(1);
    let took = now().saturating_duration_since(started);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let ended = lab.wait_log(
        &["event=ended", "reason=media-timeout"],
        Duration::from_secs(5),
    );
    lab.wait_log(&["event=media-timeout"], Duration::from_secs(1));
    eprintln!("{ended}");
}

#[test]
fn port_exhaustion_answers_503_and_recovers() {
    // Two port pairs on the inside: 20000/20001 and 20002/20003.
    let mut lab = Lab::builder(Slot::MediaPortExhaustion)
        .with(|c| c.inside_media_ports = (20000, 20003))
        .start();
    let net = lab.net();
    let carrier = lab
        .carrier_primary("uas_answer")
        .calls(3)
        .timeout(Duration::from_secs(40))
        .spawn_uas();
    let two = lab
        .pbx_uac("uac_call")
        .calls(2)
        .limit(2)
        .rate(10)
        .pause_ms(4000)
        .spawn();
    let both_up = wait_until(Duration::from_secs(10), || {
        lab.log().matches("event=answered").count() == 2
    });
    assert!(both_up, "two calls did not connect:\n{}", lab.log_tail(30));
    // A third call while both pairs are taken: 503, cleanly.
    let refused = lab
        .sipp("pbx-503", "uac_expect_503")
        .local(SocketAddr::new(net.pbx_ip().into(), 5072))
        .media(net.pbx_ip(), 16100)
        .remote(net.inside())
        .key("caller", numbers::PBX_CALLER)
        .key("callee", numbers::EXTERNAL)
        .key("expect_peer", net.inside_ip())
        .run();
    refused.assert_success(1);
    lab.wait_log(
        &["event=media-refused", "reason=no-media-ports"],
        Duration::from_secs(2),
    );
    two.wait().assert_success(2);
    // Once the relay has closed both sessions, their ports serve a new call.
    let closed = wait_until(Duration::from_secs(10), || {
        lab.log().matches("event=media-stats").count() >= 2
    });
    assert!(closed, "sessions not closed:\n{}", lab.log_tail(30));
    let again = lab.pbx_uac("uac_call").pause_ms(200).run();
    again.assert_success(1);
    carrier.wait().assert_success(3);
    lab.assert_alive();
}

/// Packet counters of the elements of `inet palisade_media <set>`.
fn kernel_counters(set: &str) -> Vec<u64> {
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "set", "inet", "palisade_media", set])
        .output()
        .expect("nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\"packets\": ")
        .skip(1)
        .filter_map(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// Conntrack entries naming one of Palisade's media ports (inside or outside).
fn media_conntracks() -> Vec<String> {
    // Unreadable fails the test: "nothing left behind" is never asserted blind.
    let text = std::fs::read_to_string("/proc/net/nf_conntrack")
        .unwrap_or_else(|e| panic!("cannot read /proc/net/nf_conntrack ({e}): this test needs it"));
    text.lines()
        .filter(|l| {
            l.split_whitespace()
                .filter_map(|w| {
                    w.strip_prefix("sport=")
                        .or_else(|| w.strip_prefix("dport="))
                })
                .filter_map(|p| p.parse::<u16>().ok())
                .any(|p| INSIDE_MEDIA.contains(&p) || OUTSIDE_MEDIA.contains(&p))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn kernel_forwarding_carries_plain_rtp_and_leaves_nothing_behind() {
    const NAME: &str = "kernel_forwarding_carries_plain_rtp_and_leaves_nothing_behind";
    palisade_e2e::netns::in_netns(Slot::MediaKernelForwarding, NAME, || {
        let lab = Lab::builder(Slot::MediaKernelForwarding)
            .with(|c| c.media = "kernel_forwarding: on, kernel_forwarding_after_ms: 300".into())
            .start();
        let net = lab.net();
        assert!(
            lab.log().contains("kernel forwarding of plain RTP on"),
            "{}",
            lab.log_tail(20)
        );
        make_ulaw_tone(&lab.dir().join("tone.wav"), 1000, 4);
        let cap = Capture::start(lab.slot(), lab.dir(), "lo");
        let carrier = lab
            .carrier_primary("uas_answer")
            .arg("-rtp_echo")
            .spawn_uas();
        let pbx = lab.pbx_uac("uac_rtp").pause_ms(4500).spawn();
        // Mid-call, the kernel holds both directions and counts them.
        let mut mid = Vec::new();
        wait_until(Duration::from_secs(5), || {
            mid = kernel_counters("fwd4");
            mid.len() == 2 && mid.iter().all(|&p| p >= 20)
        });
        assert!(
            mid.len() == 2 && mid.iter().all(|&p| p >= 20),
            "kernel counters mid-call: {mid:?}\n{}",
            lab.log_tail(20)
        );
        let pbx = pbx.wait();
        pbx.assert_success(1);
        let carrier = carrier.wait();
        carrier.assert_success(1);
        let pkts = cap.stop();

        // The tone (4 s, 50 packets/s) reached the carrier and its echo came
        // back, on the anchored addresses only, marked EF by the kernel too.
        let (pbx_ip, carrier_ip) = (net.pbx_ip(), net.carrier_primary_ip());
        let (inside, outside) = (net.inside_ip(), net.outside_ip());
        let by_flow = assert_anchored(net, &pkts);
        for p in &pkts {
            if p.src == inside || p.src == outside {
                assert_eq!(p.dscp, 46, "not EF: {p:?}");
            }
        }
        // On loopback a packet is captured once, as it leaves: what the
        // kernel forwards shows only as Palisade's packet to the other peer
        // (NAT happened before), the peers' own packets to Palisade only
        // until the hand-over.
        for flow in [(outside, carrier_ip), (inside, pbx_ip)] {
            let n = by_flow.get(&flow).copied().unwrap_or(0);
            assert!(n >= 190, "{flow:?}: {n} packets\n{by_flow:?}");
        }
        for flow in [(pbx_ip, inside), (carrier_ip, outside)] {
            let n = by_flow.get(&flow).copied().unwrap_or(0);
            assert!((5..100).contains(&n), "{flow:?}: {n} packets\n{by_flow:?}");
        }
        assert_topology_hidden(net, &pbx.messages(), &[&carrier.messages()]);

        // Most packets never reached Palisade: the call's record says how
        // many the kernel carried, and the relay's own count is the rest.
        let stats = fields(&lab.wait_log(&["event=media-stats"], Duration::from_secs(5)));
        for side in ["a", "b"] {
            let (all, kernel) = (
                num(&stats, &format!("{side}_packets")),
                num(&stats, &format!("{side}_offloaded")),
            );
            assert!(
                all >= 190 && kernel >= 150 && kernel < all,
                "{side}: {stats:?}"
            );
            assert_eq!(num(&stats, &format!("{side}_lost")), 0, "{stats:?}");
            let mos: f64 = stats[&format!("{side}_mos")].parse().unwrap();
            assert!((4.0..=4.5).contains(&mos), "{stats:?}");
        }
        let m = http::get(lab.admin(), "/metrics").expect("no answer from /metrics");
        let metric = |name: &str| http::metric(&m.body, name).unwrap_or(0);
        let kernel = metric("palisade_relay_kernel_packets_total");
        let user = metric("palisade_relay_packets_total");
        assert!(
            kernel >= 300 && user * 3 < kernel,
            "kernel {kernel}, user space {user}\n{}",
            m.body
        );
        assert_eq!(metric("palisade_relay_kernel_streams"), 0, "{}", m.body);
        assert_eq!(
            metric("palisade_relay_kernel_failures_total"),
            0,
            "{}",
            m.body
        );

        // Nothing of the call is left in the kernel: no element, no connection.
        wait_until(Duration::from_secs(3), || {
            kernel_counters("fwd4").is_empty() && media_conntracks().is_empty()
        });
        assert_eq!(kernel_counters("fwd4"), Vec::<u64>::new());
        assert_eq!(media_conntracks(), Vec::<String>::new());
        let status = lab.shutdown();
        assert!(status.success(), "{status:?}");
        assert!(
            !palisade_e2e::netns::nft_ruleset().contains("palisade_media"),
            "the media table outlived Palisade"
        );
    });
}
