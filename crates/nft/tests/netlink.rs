//! The netlink client against the real kernel.
//!
//! Each test re-runs itself (`ip netns exec NS <this binary> NAME --exact`)
//! inside a network namespace it creates, with `PALISADE_NFT_NETNS` set: the
//! table, the sockets, conntrack and every `nft` run live there, and the
//! host's ruleset is never touched. The namespace is deleted afterwards,
//! whatever happened. Needs root; missing `ip`/`nft` or no permission fails
//! the test (it is never skipped).

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use palisade_nft::netlink::{Netlink, SetOp, Value, ValueKind};

mod support;

use support::in_netns;

/// The table: the IPv4 part exactly as specified, and its IPv6 twin.
const TABLE: &str = "\
table inet t {
  map mark4 { type ipv4_addr . inet_service : mark; }
  map dnat4 { type mark : ipv4_addr . inet_service; }
  map snat4 { type mark : ipv4_addr . inet_service; }
  set fwd4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; counter; }
  map mark6 { type ipv6_addr . inet_service : mark; }
  map dnat6 { type mark : ipv6_addr . inet_service; }
  map snat6 { type mark : ipv6_addr . inet_service; }
  set fwd6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; counter; }
  chain raw_out { type filter hook output priority raw;
     ip saddr . udp sport . ip daddr . udp dport @fwd4 return
     ip6 saddr . udp sport . ip6 daddr . udp dport @fwd6 return
     udp dport 20000-29999 notrack
  }
  chain nat_out { type nat hook output priority -100;
     meta l4proto udp ct mark set ip daddr . udp dport map @mark4
     meta l4proto udp ct mark set ip6 daddr . udp dport map @mark6
     meta l4proto udp dnat ip to ct mark map @dnat4
     meta l4proto udp dnat ip6 to ct mark map @dnat6
  }
  chain nat_post { type nat hook postrouting priority srcnat;
     meta l4proto udp snat ip to ct mark map @snat4
     meta l4proto udp snat ip6 to ct mark map @snat6
  }
}
";

/// Runs a command in the current (test) namespace; panics unless it succeeds.
fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write as _;
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn setup_table() {
    run("ip", &["link", "set", "lo", "up"], None);
    run("nft", &["-f", "-"], Some(TABLE));
}

fn list(kind: &str, name: &str) -> String {
    run("nft", &["list", kind, "inet", "t", name], None)
}

fn udp(addr: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Sends `n` datagrams each way through the kernel path; checks where they
/// arrive from. Returns the payload length.
fn forward(
    a: &UdpSocket,
    b: &UdpSocket,
    a_to: SocketAddr,
    b_sees: SocketAddr,
    b_to: SocketAddr,
    a_sees: SocketAddr,
    n: usize,
) -> usize {
    let mut buf = [0u8; 64];
    for i in 0..n {
        let msg = format!("a2b-{i}");
        a.send_to(msg.as_bytes(), a_to).unwrap();
        let (len, from) = b
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("B got nothing for packet {i}: {e}"));
        assert_eq!(&buf[..len], msg.as_bytes());
        assert_eq!(from, b_sees, "B must see the packet from Palisade's port");
        let msg = format!("b2a-{i}");
        b.send_to(msg.as_bytes(), b_to).unwrap();
        let (len, from) = a
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("A got nothing for packet {i}: {e}"));
        assert_eq!(&buf[..len], msg.as_bytes());
        assert_eq!(from, a_sees, "A must see the reply from Palisade's port");
    }
    "a2b-0".len()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn kernel_ipv4_forwarding_counters_conntrack_and_transactions() {
    in_netns(
        "kernel_ipv4_forwarding_counters_conntrack_and_transactions",
        "v4",
        || {
            setup_table();
            let mut nl = Netlink::open().expect("netlink open");
            let lo = v4("127.0.0.1");
            let lo2 = v4("127.0.0.2");
            let a_addr = v4("127.0.0.10");
            let b_addr = v4("127.0.0.20");
            let fwd = [
                Value::V4Tuple(a_addr, 4000, lo, 20000),
                Value::V4Tuple(b_addr, 5000, lo2, 20002),
            ];
            let mark4 = [
                (Value::V4Port(lo, 20000), Some(Value::Mark(1))),
                (Value::V4Port(lo2, 20002), Some(Value::Mark(2))),
            ];
            let dnat4 = [
                (Value::Mark(1), Some(Value::V4Port(b_addr, 5000))),
                (Value::Mark(2), Some(Value::V4Port(a_addr, 4000))),
            ];
            let snat4 = [
                (Value::Mark(1), Some(Value::V4Port(lo2, 20002))),
                (Value::Mark(2), Some(Value::V4Port(lo, 20000))),
            ];
            let fwd4 = [(fwd[0], None), (fwd[1], None)];
            nl.apply(
                "t",
                &[
                    SetOp::Add {
                        set: "mark4",
                        elements: &mark4,
                    },
                    SetOp::Add {
                        set: "dnat4",
                        elements: &dnat4,
                    },
                    SetOp::Add {
                        set: "snat4",
                        elements: &snat4,
                    },
                    SetOp::Add {
                        set: "fwd4",
                        elements: &fwd4,
                    },
                ],
            )
            .expect("apply");

            // nft sees what netlink wrote.
            let m = list("map", "mark4");
            assert!(m.contains("127.0.0.1 . 20000 : 0x00000001"), "{m}");
            assert!(m.contains("127.0.0.2 . 20002 : 0x00000002"), "{m}");
            let m = list("map", "dnat4");
            assert!(m.contains("0x00000001 : 127.0.0.20 . 5000"), "{m}");
            assert!(m.contains("0x00000002 : 127.0.0.10 . 4000"), "{m}");
            let m = list("map", "snat4");
            assert!(m.contains("0x00000001 : 127.0.0.2 . 20002"), "{m}");
            assert!(m.contains("0x00000002 : 127.0.0.1 . 20000"), "{m}");
            let s = list("set", "fwd4");
            assert!(s.contains("127.0.0.10 . 4000 . 127.0.0.1 . 20000"), "{s}");
            assert!(s.contains("127.0.0.20 . 5000 . 127.0.0.2 . 20002"), "{s}");

            // Adding what is there is not an error; creating it is (EEXIST),
            // and so is a map key with other data (EEXIST): replacing data takes a Delete and an Add.
            nl.apply(
                "t",
                &[SetOp::Add {
                    set: "fwd4",
                    elements: &fwd4,
                }],
            )
            .expect("re-adding the same elements");
            let e = nl
                .apply(
                    "t",
                    &[SetOp::Create {
                        set: "fwd4",
                        elements: &fwd4[..1],
                    }],
                )
                .expect_err("create of an existing element");
            assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
            assert!(e.to_string().contains("EEXIST"), "{e}");
            let e = nl
                .apply(
                    "t",
                    &[SetOp::Add {
                        set: "mark4",
                        elements: &[(Value::V4Port(lo, 20000), Some(Value::Mark(9)))],
                    }],
                )
                .expect_err("a map key with other data");
            assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
            // Delete + Add of one key in one batch replaces its data.
            for mark in [9, 1] {
                nl.apply(
                    "t",
                    &[
                        SetOp::Delete {
                            set: "mark4",
                            keys: &[Value::V4Port(lo, 20000)],
                        },
                        SetOp::Add {
                            set: "mark4",
                            elements: &[(Value::V4Port(lo, 20000), Some(Value::Mark(mark)))],
                        },
                    ],
                )
                .expect("replace map data");
                let m = list("map", "mark4");
                assert!(
                    m.contains(&format!("127.0.0.1 . 20000 : 0x{mark:08x}")),
                    "{m}"
                );
            }

            // The kernel forwards both ways through conntrack NAT.
            let a = udp(SocketAddr::from((a_addr, 4000)));
            let b = udp(SocketAddr::from((b_addr, 5000)));
            let n = 5;
            let payload = forward(
                &a,
                &b,
                SocketAddr::from((lo, 20000)),
                SocketAddr::from((lo2, 20002)),
                SocketAddr::from((lo2, 20002)),
                SocketAddr::from((lo, 20000)),
                n,
            );

            let mut c = nl
                .counters("t", "fwd4", ValueKind::V4Tuple)
                .expect("counters");
            c.sort_by_key(|(k, _, _)| format!("{k:?}"));
            eprintln!("fwd4 counters: {c:?}");
            assert_eq!(c.len(), 2, "{c:?}");
            for (key, packets, bytes) in &c {
                assert!(fwd.contains(key), "{key:?}");
                assert!(*packets >= n as u64, "{key:?}: {packets} packets");
                // IPv4 header + UDP header + payload, counted at the output hook.
                assert_eq!(*bytes, packets * (20 + 8 + payload) as u64, "{key:?}");
            }
            // Asking for the wrong kind is an error, not a guess.
            assert!(nl.counters("t", "fwd4", ValueKind::V6Port).is_err());
            // A set that is not there.
            let e = nl
                .counters("t", "nosuchset", ValueKind::V4Tuple)
                .expect_err("missing set");
            assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
            // A set without counters.
            assert!(matches!(
                nl.counters("t", "mark4", ValueKind::V4Port),
                Err(palisade_nft::NftError::Invalid(_))
            ));

            // Conntrack: the entry is found by its original tuple, deleted once.
            let ct = support::conntrack_table();
            assert!(
                ct.contains("src=127.0.0.10 dst=127.0.0.1 sport=4000 dport=20000"),
                "{ct}"
            );
            let from = SocketAddr::from((a_addr, 4000));
            let to = SocketAddr::from((lo, 20000));
            assert!(nl.delete_conntrack(from, to).expect("delete conntrack"));
            let ct = support::conntrack_table();
            assert!(!ct.contains("sport=4000 dport=20000"), "{ct}");
            assert!(!nl.delete_conntrack(from, to).expect("delete again"));
            // By the reply tuple too: a new flow, deleted via B's side.
            forward(
                &a,
                &b,
                SocketAddr::from((lo, 20000)),
                SocketAddr::from((lo2, 20002)),
                SocketAddr::from((lo2, 20002)),
                SocketAddr::from((lo, 20000)),
                1,
            );
            let reply_from = SocketAddr::from((b_addr, 5000));
            let reply_to = SocketAddr::from((lo2, 20002));
            assert!(nl.delete_conntrack(reply_from, reply_to).unwrap());
            assert!(!nl.delete_conntrack(from, to).unwrap());

            // One bad op fails the whole batch, and says which and why.
            let extra = [(
                Value::V4Tuple(v4("127.0.0.99"), 1, v4("127.0.0.98"), 2),
                None,
            )];
            let missing = [Value::V4Tuple(v4("127.0.0.97"), 3, v4("127.0.0.96"), 4)];
            let e = nl
                .apply(
                    "t",
                    &[
                        SetOp::Add {
                            set: "fwd4",
                            elements: &extra,
                        },
                        SetOp::Delete {
                            set: "fwd4",
                            keys: &missing,
                        },
                    ],
                )
                .expect_err("deleting a missing element");
            eprintln!("refused as expected: {e}");
            assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
            assert!(e.to_string().contains("ENOENT"), "{e}");
            assert!(e.to_string().contains("ops[1]"), "{e}");
            let after = nl.counters("t", "fwd4", ValueKind::V4Tuple).unwrap();
            assert_eq!(
                after.len(),
                2,
                "the batch must leave the set unchanged: {after:?}"
            );
            assert!(!list("set", "fwd4").contains("127.0.0.99"));
            // The socket is still in step after an error.
            nl.apply("t", &[]).unwrap();

            // Delete ops remove elements, maps and sets alike.
            let mark_keys = [Value::V4Port(lo, 20000), Value::V4Port(lo2, 20002)];
            let marks = [Value::Mark(1), Value::Mark(2)];
            nl.apply(
                "t",
                &[
                    SetOp::Delete {
                        set: "fwd4",
                        keys: &fwd,
                    },
                    SetOp::Delete {
                        set: "mark4",
                        keys: &mark_keys,
                    },
                    SetOp::Delete {
                        set: "dnat4",
                        keys: &marks,
                    },
                    SetOp::Delete {
                        set: "snat4",
                        keys: &marks,
                    },
                ],
            )
            .expect("delete");
            assert!(
                nl.counters("t", "fwd4", ValueKind::V4Tuple)
                    .unwrap()
                    .is_empty()
            );
            for m in ["mark4", "dnat4", "snat4"] {
                let text = list("map", m);
                assert!(!text.contains("elements"), "{text}");
            }
            // With the elements gone the traffic is notracked: B hears nothing.
            a.send_to(b"late", SocketAddr::from((lo, 20000))).unwrap();
            let mut buf = [0u8; 16];
            b.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            assert!(b.recv_from(&mut buf).is_err());
        },
    );
}

#[test]
fn kernel_ipv6_forwarding_over_loopback() {
    in_netns("kernel_ipv6_forwarding_over_loopback", "v6", || {
        setup_table();
        let mut nl = Netlink::open().expect("netlink open");
        let lo = Ipv6Addr::LOCALHOST;
        let fwd = [
            Value::V6Tuple(lo, 4000, lo, 20000),
            Value::V6Tuple(lo, 5000, lo, 20002),
        ];
        nl.apply(
            "t",
            &[
                SetOp::Add {
                    set: "mark6",
                    elements: &[(Value::V6Port(lo, 20000), Some(Value::Mark(3)))],
                },
                SetOp::Add {
                    set: "dnat6",
                    elements: &[(Value::Mark(3), Some(Value::V6Port(lo, 5000)))],
                },
                SetOp::Add {
                    set: "snat6",
                    elements: &[(Value::Mark(3), Some(Value::V6Port(lo, 20002)))],
                },
                SetOp::Add {
                    set: "fwd6",
                    elements: &[(fwd[0], None), (fwd[1], None)],
                },
            ],
        )
        .expect("apply");
        let s = list("set", "fwd6");
        assert!(s.contains("::1 . 4000 . ::1 . 20000"), "{s}");
        let a = udp(SocketAddr::from((lo, 4000)));
        let b = udp(SocketAddr::from((lo, 5000)));
        let n = 4;
        let payload = forward(
            &a,
            &b,
            SocketAddr::from((lo, 20000)),
            SocketAddr::from((lo, 20002)),
            SocketAddr::from((lo, 20002)),
            SocketAddr::from((lo, 20000)),
            n,
        );
        let c = nl.counters("t", "fwd6", ValueKind::V6Tuple).unwrap();
        eprintln!("fwd6 counters: {c:?}");
        assert_eq!(c.len(), 2, "{c:?}");
        for (key, packets, bytes) in &c {
            assert!(fwd.contains(key), "{key:?}");
            assert!(*packets >= n as u64, "{key:?}");
            assert_eq!(*bytes, packets * (40 + 8 + payload) as u64, "{key:?}");
        }
        let from = SocketAddr::from((lo, 4000));
        let to = SocketAddr::from((lo, 20000));
        assert!(nl.delete_conntrack(from, to).unwrap());
        assert!(!nl.delete_conntrack(from, to).unwrap());
        nl.apply(
            "t",
            &[SetOp::Delete {
                set: "fwd6",
                keys: &fwd,
            }],
        )
        .unwrap();
        assert!(
            nl.counters("t", "fwd6", ValueKind::V6Tuple)
                .unwrap()
                .is_empty()
        );
    });
}

#[test]
fn kernel_fifty_thousand_elements() {
    in_netns("kernel_fifty_thousand_elements", "50k", || {
        setup_table();
        let mut nl = Netlink::open().expect("netlink open");
        let keys: Vec<Value> = (0..50_000u32)
            .map(|i| {
                Value::V4Tuple(
                    Ipv4Addr::from(0x0a00_0000 + i),
                    (i % 60_000) as u16 + 1,
                    v4("127.0.0.1"),
                    20_000 + (i % 10_000) as u16,
                )
            })
            .collect();
        let elements: Vec<(Value, Option<Value>)> = keys.iter().map(|k| (*k, None)).collect();
        // Batches of 10,000 (~280 KB) fit the default socket limits of any
        // host; each is one transaction split into messages under 64 KiB.
        for chunk in elements.chunks(10_000) {
            nl.apply(
                "t",
                &[SetOp::Add {
                    set: "fwd4",
                    elements: chunk,
                }],
            )
            .expect("apply 10,000");
        }
        let c = nl.counters("t", "fwd4", ValueKind::V4Tuple).expect("dump");
        assert_eq!(c.len(), 50_000);
        let mut got: Vec<Value> = c.iter().map(|(k, _, _)| *k).collect();
        let mut want = keys.clone();
        got.sort_by_key(|k| format!("{k:?}"));
        want.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(got, want);
        assert!(c.iter().all(|(_, p, b)| *p == 0 && *b == 0));
        for chunk in keys.chunks(10_000) {
            nl.apply(
                "t",
                &[SetOp::Delete {
                    set: "fwd4",
                    keys: chunk,
                }],
            )
            .expect("delete 10,000");
        }
        assert!(
            nl.counters("t", "fwd4", ValueKind::V4Tuple)
                .unwrap()
                .is_empty()
        );
    });
}
