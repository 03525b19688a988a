//! The malformed-input corpus (tests/e2e/corpus/malformed, see its MANIFEST)
//! thrown at the inside zone over UDP and over TCP. Each file must meet its
//! manifest expectation (an error response with our Call-ID, a silent drop, or
//! on TCP a closed connection), Palisade must survive every case, and a normal
//! call must succeed afterwards.

use std::time::Duration;

use palisade_e2e::corpus::{self, Fill, Outcome};
use palisade_e2e::{Lab, Slot, raw};

/// How long to wait for an answer to one case.
const WAIT: Duration = Duration::from_millis(800);

fn check_response_call_id(resp: &[u8], call_id: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(resp);
    let has = text.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            (n.trim().eq_ignore_ascii_case("call-id") || n.trim() == "i") && v.trim() == call_id
        })
    });
    if has {
        Ok(())
    } else {
        Err(format!(
            "the response does not carry our Call-ID {call_id}: {text:?}"
        ))
    }
}

fn normal_call_after(lab: &mut Lab) {
    lab.assert_alive();
    let carrier = lab.carrier_primary("uas_answer").spawn_uas();
    let pbx = lab.pbx_uac("uac_call").run();
    pbx.assert_success(1);
    carrier.wait().assert_success(1);
    lab.assert_alive();
}

#[test]
fn malformed_over_udp() {
    let mut lab = Lab::start(Slot::MalformedUdp);
    let net = lab.net();
    let mut failures = Vec::new();
    for (i, case) in corpus::load().into_iter().enumerate() {
        let sock = raw::udp_socket(net.pbx_ip());
        let call_id = format!("e2e-malformed-udp-{i}");
        let payload = corpus::fill(
            &case.bytes,
            &Fill {
                local: sock.local_addr().unwrap(),
                palisade: net.inside(),
                transport: "UDP",
                call_id: &call_id,
            },
        );
        let responses = raw::udp_send_collect(&sock, net.inside(), &payload, WAIT);
        let outcome = corpus::udp_outcome(&responses);
        if !case.udp.contains(&outcome) {
            failures.push(format!(
                "{} ({}): got {outcome}, expected one of {:?}",
                case.file, case.note, case.udp
            ));
        } else if let Outcome::Status(_) = outcome
            && let Err(e) = check_response_call_id(&responses[0], &call_id)
        {
            failures.push(format!("{}: {e}", case.file));
        }
        lab.assert_alive();
    }
    assert!(
        failures.is_empty(),
        "malformed input over UDP:\n  {}",
        failures.join("\n  ")
    );
    normal_call_after(&mut lab);
}

#[test]
fn malformed_over_tcp() {
    let mut lab = Lab::start(Slot::MalformedTcp);
    let net = lab.net();
    let mut failures = Vec::new();
    for (i, case) in corpus::load().into_iter().enumerate() {
        let mut stream = raw::tcp_connect(net.pbx_ip(), net.inside());
        let call_id = format!("e2e-malformed-tcp-{i}");
        let payload = corpus::fill(
            &case.bytes,
            &Fill {
                local: stream.local_addr().unwrap(),
                palisade: net.inside(),
                transport: "TCP",
                call_id: &call_id,
            },
        );
        let out = raw::tcp_send_collect(&mut stream, &payload, WAIT);
        match corpus::tcp_outcome(&out) {
            Err(e) => failures.push(format!("{} ({}): {e}", case.file, case.note)),
            Ok(outcome) if !case.tcp.contains(&outcome) => failures.push(format!(
                "{} ({}): got {outcome}, expected one of {:?}",
                case.file, case.note, case.tcp
            )),
            Ok(Outcome::Status(_)) => {
                let first = raw::split_stream(&out.received)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                if let Err(e) = check_response_call_id(&first, &call_id) {
                    failures.push(format!("{}: {e}", case.file));
                }
            }
            Ok(_) => {}
        }
        lab.assert_alive();
    }
    assert!(
        failures.is_empty(),
        "malformed input over TCP:\n  {}",
        failures.join("\n  ")
    );
    normal_call_after(&mut lab);
}
