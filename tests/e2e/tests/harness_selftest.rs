//! The Lab plumbing, checked against a stand-in "palisade" (a SIPp OPTIONS
//! responder, `fake/palisade-standin.sh`) and against programs that die, so
//! harness bugs show up here rather than as mysterious end-to-end failures.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::Duration;

use palisade_e2e::{Lab, Slot, paths};

fn standin() -> PathBuf {
    paths::require_tool("sipp");
    paths::crate_dir().join("fake").join("palisade-standin.sh")
}

fn panic_text(err: Box<dyn std::any::Any + Send>) -> String {
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn lab_starts_pings_and_stops_a_standin() {
    let lab = Lab::builder(Slot::HarnessStandin).binary(standin()).start();
    let net = lab.net();
    // The readiness probe got its 200; a second ping does too, with Allow.
    let resp = lab
        .options_ping(Duration::from_secs(2))
        .expect("stand-in answers OPTIONS");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("SIP/2.0 200"), "{text}");
    assert!(text.contains("Allow:"), "{text}");
    assert!(palisade_e2e::net::udp_bound(net.inside()));
    assert!(lab.config_path().is_file());
    assert!(
        lab.log().contains("stand-in: answering OPTIONS"),
        "{}",
        lab.log()
    );
    lab.shutdown();
    assert!(
        palisade_e2e::net::wait_until(Duration::from_secs(3), || !palisade_e2e::net::udp_bound(
            net.inside()
        )),
        "the stand-in still holds the inside port after shutdown"
    );
}

#[test]
fn lab_start_fails_loudly_when_the_binary_exits() {
    let err = catch_unwind(|| {
        Lab::builder(Slot::HarnessDeadBinary)
            .binary("/bin/false")
            .ready_timeout(Duration::from_secs(3))
            .start()
    })
    .expect_err("a binary that exits must fail Lab::start");
    let text = panic_text(err);
    assert!(text.contains("is not running any more"), "{text}");
}

#[test]
fn lab_drop_reports_a_crash() {
    let lab = Lab::builder(Slot::HarnessCrash).binary(standin()).start();
    let pid = lab.pid().expect("running");
    // Simulate a crash: kill the "palisade" behind the harness's back.
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -KILL {pid}"))
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let err =
        catch_unwind(AssertUnwindSafe(move || drop(lab))).expect_err("a crash must fail the test");
    let text = panic_text(err);
    assert!(text.contains("died during the test"), "{text}");
}
