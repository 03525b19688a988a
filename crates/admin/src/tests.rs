use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use super::*;

fn sample() -> Sample {
    let mut s = Sample::default();
    s.counter("palisade_calls_started", "Calls accepted.", 3);
    s.gauge("palisade_calls_active", "Calls in progress.", 1);
    s.counter_by(
        "palisade_sip_malformed",
        "Malformed messages.",
        "action",
        &[("answered", 2), ("dropped", 5)],
    );
    s.status = Status {
        node: "sbc-1".into(),
        version: "0.1.0",
        uptime_seconds: 7,
        calls_active: 1,
        draining: false,
        guard_blocking: "nftables",
        media_anchored: true,
    };
    s
}

#[test]
fn renders_openmetrics_with_total_suffix_labels_and_eof() {
    let text = render(sample()).unwrap();
    assert!(
        text.contains("# TYPE palisade_calls_started counter\n"),
        "{text}"
    );
    assert!(text.contains("palisade_calls_started_total 3\n"), "{text}");
    assert!(
        text.contains("# TYPE palisade_calls_active gauge\n"),
        "{text}"
    );
    assert!(text.contains("palisade_calls_active 1\n"), "{text}");
    assert!(
        text.contains("palisade_sip_malformed_total{action=\"answered\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("palisade_sip_malformed_total{action=\"dropped\"} 5\n"),
        "{text}"
    );
    assert!(text.contains("# HELP palisade_calls_active Calls in progress.\n"));
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn value_finds_plain_and_labelled_points() {
    let s = sample();
    assert_eq!(s.value("palisade_calls_started", None), Some(3));
    assert_eq!(s.value("palisade_sip_malformed", Some("dropped")), Some(5));
    assert_eq!(s.value("palisade_sip_malformed", None), None);
    assert_eq!(s.value("palisade_nothing", None), None);
}

/// A source whose answer the test sets.
struct Fixed(Mutex<Option<Sample>>);

impl Source for Fixed {
    fn sample(&self) -> SampleFuture<'_> {
        let s = self.0.lock().unwrap().clone();
        Box::pin(async move { s })
    }
}

/// One HTTP/1.1 request over a fresh connection; (status, head, body).
fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Serves `source` on an ephemeral loopback port in a runtime thread.
fn serve(source: Arc<Fixed>) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = AdminListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
            addr_tx.send(l.local_addr()).unwrap();
            l.serve(source, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    (addr_rx.recv().unwrap(), stop_tx)
}

#[test]
fn serves_metrics_health_status_and_refuses_the_rest() {
    let source = Arc::new(Fixed(Mutex::new(Some(sample()))));
    let (addr, _stop) = serve(Arc::clone(&source));

    let (code, head, body) = get(addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.contains("palisade_calls_started_total 3\n"), "{body}");

    let (code, _, body) = get(addr, "GET", "/health");
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    let (code, head, body) = get(addr, "GET", "/api/v1/status");
    assert_eq!(code, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["node"], "sbc-1");
    assert_eq!(v["calls_active"], 1);
    assert_eq!(v["guard_blocking"], "nftables");
    assert_eq!(v["draining"], false);

    assert_eq!(get(addr, "GET", "/admin").0, 404);
    assert_eq!(get(addr, "POST", "/metrics").0, 405);

    // Draining: health says so, metrics still answer.
    source.0.lock().unwrap().as_mut().unwrap().status.draining = true;
    let (code, _, body) = get(addr, "GET", "/health");
    assert_eq!((code, body.as_str()), (503, "draining\n"));
    assert_eq!(get(addr, "GET", "/metrics").0, 200);

    // The engine does not answer: everything is 503, nothing hangs.
    *source.0.lock().unwrap() = None;
    assert_eq!(get(addr, "GET", "/health").0, 503);
    assert_eq!(get(addr, "GET", "/metrics").0, 503);
    assert_eq!(get(addr, "GET", "/api/v1/status").0, 503);
}

#[test]
fn a_taken_port_is_a_bind_error_naming_the_address() {
    let taken = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(async { AdminListener::bind(addr).unwrap_err() });
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("admin.listen"),
        "{msg}"
    );
}

#[test]
fn connections_are_capped() {
    // MAX_CONNECTIONS idle connections hold every permit; the next request
    // waits until one of them closes.
    let source = Arc::new(Fixed(Mutex::new(Some(sample()))));
    let (addr, _stop) = serve(source);
    let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Let the server accept them all.
    std::thread::sleep(Duration::from_millis(200));
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(c.read(&mut buf).is_err(), "answered beyond the cap");
    drop(idle.pop());
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
}
