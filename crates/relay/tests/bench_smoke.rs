//! A tiny run of the benchmark programs (`bench/media/run.sh` uses them), so
//! they cannot rot: the relay server and the bare forwarder each relay a
//! few hundred packets of the load generator, losslessly. `cargo test`
//! builds the examples next to this test's binary.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/bench_smoke-… → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: `cargo test -p palisade-relay` builds the examples",
        path.display()
    );
    path
}

fn run(server: &str, n: u8) {
    let plan = [
        "--sessions".to_string(),
        "5".into(),
        "--sockets".into(),
        "2".into(),
        "--relay-a".into(),
        format!("127.0.77.{n}"),
        "--relay-b".into(),
        format!("127.0.77.{}", n + 1),
        "--peer-a".into(),
        format!("127.0.78.{n}"),
        "--peer-b".into(),
        format!("127.0.78.{}", n + 1),
    ];
    let mut child = Command::new(example(server))
        .args(&plan)
        .args(["--threads", "1", "--seconds", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready"), "{server}: {line:?}");
    let out = Command::new(example("rtp_blast"))
        .args(&plan)
        .args(["--rate", "1000", "--packets", "400", "--max-seconds", "10"])
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("sent=400 received=400 "),
        "{server}: {text}"
    );
}

#[test]
fn relay_server_relays_the_load() {
    run("relay_server", 60);
}

#[test]
fn bare_forwarder_relays_the_load() {
    run("bare_forwarder", 62);
}
