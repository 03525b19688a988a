//! The one table of test slots. Every test owns a slot, and a slot owns the
//! loopback network `127.100.N.0/24`, so tests run in parallel without port or
//! address clashes. Rust rejects duplicate enum discriminants, so two tests
//! cannot share a number; a unit test checks the names are unique too.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

macro_rules! slots {
    ($($(#[$doc:meta])* $variant:ident = $n:literal,)*) => {
        /// A test's slot: its own `127.100.N.0/24` and its own output directory.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Slot {
            $($(#[$doc])* $variant = $n,)*
        }

        impl Slot {
            /// Every slot, in table order.
            pub const ALL: &'static [Slot] = &[$(Slot::$variant,)*];

            /// The slot's name (its output directory under `tests/e2e/out/`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Slot::$variant => stringify!($variant),)*
                }
            }
        }
    };
}

slots! {
    // Harness self-checks (no Palisade, or a stand-in for it).
    /// The Lab plumbing, driven against a stand-in "palisade".
    HarnessStandin = 1,
    /// Lab::start against a binary that exits at once.
    HarnessDeadBinary = 15,
    /// Lab's drop against a "palisade" that was killed mid-test.
    HarnessCrash = 16,
    /// The scenarios' own peer checks, made to fail on purpose.
    DirectChecks = 17,
    /// SIPp scenarios validated against each other, no Palisade in between.
    DirectBasicCall = 2,
    DirectLateOffer = 3,
    DirectBusy = 4,
    DirectCancel = 5,
    DirectReinviteHold = 6,
    DirectCalleeBye = 7,
    DirectInfo = 8,
    DirectOptions = 9,
    DirectTcp = 10,
    DirectRetryAfter = 11,
    DirectSilent = 12,
    DirectLoad = 13,
    DirectLeakScan = 14,
    // Palisade end-to-end.
    OutboundCall = 20,
    InboundCall = 21,
    LateOffer = 22,
    Failover503 = 23,
    FailoverSilent = 24,
    Cancel = 25,
    Busy486 = 26,
    ReinviteHold = 27,
    CalleeBye = 28,
    InfoRelayed = 29,
    OptionsPing = 30,
    PbxOverTcp = 31,
    LeakOutbound = 32,
    LeakInbound = 33,
    Load500Calls = 34,
    MalformedUdp = 35,
    MalformedTcp = 36,
    CheckConfigBad = 37,
    RunBadConfig = 38,
    CheckConfigGood = 39,
    // Media anchoring (60-79).
    /// SIPp RTP through the relay, captured with tshark.
    MediaRtpPath = 60,
    /// baresip both sides: SRTP toward the carrier, RTP toward the PBX.
    MediaSrtpBaresip = 61,
    /// The PBX sends RTP from another port than its SDP says (learn).
    MediaLatchLearn = 62,
    /// The same with strict latching: dropped and counted.
    MediaLatchStrict = 63,
    /// Hold and unhold re-INVITEs with RTP before and after.
    MediaHold = 64,
    /// No RTP: media timeout, BYE on both legs.
    MediaTimeout = 65,
    /// A two-port-pair media range: 503, then recovery.
    MediaPortExhaustion = 66,
    /// baresip both sides, the carrier calling in (SRTP) to the PBX (RTP).
    MediaSrtpBaresipInbound = 67,
    // Normalization and edge (100-119).
    /// PBX -> carrier with the carrier's outbound profile (E.164 -> national, X-MS-SBC, User-Agent).
    NormalizeOutbound = 100,
    /// Carrier -> PBX with the carrier's inbound profile (national -> E.164, so routing works).
    NormalizeInbound = 101,
    /// The normalization scenarios' checks, directly (no Palisade): pass when right, fail when wrong.
    NormalizeDirectChecks = 102,
    /// Without the inbound profile the carrier's national number has no route: 404.
    NormalizeInboundWithoutProfile = 103,
    // DNS trunks and health probes (120-129).
    /// FQDN carrier trunk (NAPTR -> SRV -> A from dnsmasq): primary, then SRV failover.
    DnsSrvFailover = 120,
    /// OPTIONS probes take a stopped primary out of routing and put it back.
    DnsHealthProbes = 121,
    // Guard (80-99): each runs in a network namespace it creates.
    /// svmap, svwar and svcrack banned in the kernel; trunk calls unaffected.
    GuardSipvicious = 80,
    /// A SIPp INVITE flood banned while the PBX places 200 calls.
    GuardInviteFlood = 81,
    /// Office traffic: no alert.
    FraudOffice = 82,
    /// Calls per minute.
    FraudCallsPerMinute = 83,
    /// High-risk destinations.
    FraudHighRisk = 84,
    /// International calls after hours.
    FraudAfterHours = 85,
    /// Number walking.
    FraudNumberWalking = 86,
    /// Wangiri: bursts of unanswered calls.
    FraudWangiri = 87,
    /// Repeated calls to one number.
    FraudRepeated = 88,
    /// The duration cap ends a call mid-way.
    FraudDurationCap = 89,
    /// Dry-run: decisions logged, nothing blocked.
    GuardDryRun = 90,
    /// The kernel meter bans a flood userspace lets through.
    GuardKernelMeter = 91,
    /// REGISTER answers are the same for every user.
    GuardSameAnswer = 92,
    /// Without permission for nft: in-process blocking, said loudly.
    GuardFallback = 93,
    /// SIGHUP applies a new deny-list to the kernel.
    GuardReload = 94,
    /// Concurrent calls.
    FraudConcurrent = 95,
    /// Alerts persist across a restart and keep merging.
    FraudRestart = 96,
    /// Digest brute force against the registrar: one answer for all, then a ban.
    GuardRegistrarBruteForce = 97,
    // Guard, continued (180-199): each nftables test in its own namespace.
    /// A fraud rule with `ban` bans a registered phone in the kernel; the PBX is only refused.
    FraudBanPhone = 180,
    /// sipvicious fingerprints (From tag, Contact) without a scanner User-Agent.
    GuardFingerprint = 181,
    /// Many sources banned at once: few nft batches; a full ban set keeps what fits.
    GuardBanSetFull = 182,
    /// An IPv6 scanner banned in ban_v6; a banned source's RTP probe dropped by the kernel.
    GuardIpv6Media = 183,
    /// The trusted PBX above the kernel meter's rate is accepted first, never banned.
    GuardAllowBeforeMeter = 184,
    /// Dry-run with nftables on: the table, but no meter, no deny and no bans.
    GuardDryRunNft = 185,
    /// Calls per day.
    FraudCallsPerDay = 186,
    /// Minutes per day.
    FraudMinutesPerDay = 187,
    // Edge (issue 4): registration, digest, NAT, call admission (110-119).
    /// Palisade registers to a SIPp registrar that challenges with 401.
    EdgeOutboundRegister = 110,
    /// The registrar refuses Palisade's password: back-off, trunk down.
    EdgeRegisterWrongPassword = 111,
    /// A phone registers with digest, then the carrier calls it.
    EdgePhoneRegisterCall = 112,
    /// A binding survives a restart (SQLite store).
    EdgeRegistrarRestart = 113,
    /// SIPp load over a per-trunk limit: 503 + Retry-After, 112 still passes.
    EdgeCacLoad = 114,
    /// A carrier answering INVITE with 407: Palisade re-sends with credentials.
    EdgeInviteChallenge = 115,
    /// A PBX behind a real NAT (network namespaces, nftables masquerade)
    /// registers and takes and places calls through it.
    EdgeNatNetns = 116,
    /// OPTIONS keepalives to carrier members: a silent member goes down; all down, 503.
    EdgeKeepalive = 117,
    /// A phone registers over TCP: CRLF keepalives and the carrier's call
    /// arrive on that same connection (RFC 5626 flow reuse).
    EdgeTcpFlow = 118,
    // Edge gaps (140-159).
    /// The carrier's registrar grants 4 s: Palisade refreshes (same nonce, nc=2) in time.
    EdgeRegisterRefresh = 140,
    /// SIPp at 10 calls/s against a 2 calls/s limit: the excess gets 503 with the configured Retry-After.
    EdgeCacCps = 141,
    // Core gaps (160-179).
    /// configs/quickstart.yaml itself, on 127.0.0.x inside a network
    /// namespace the test creates, with the README's exact SIPp commands.
    Quickstart = 160,
    /// SIGHUP changes a route: the answered call survives, the next call takes the new route.
    ReloadRoute = 161,
    /// 183 with SDP: the callee's early media reaches the PBX before the 200.
    MediaEarly183 = 162,
    /// media.kernel_forwarding in a network namespace: conntrack NAT carries
    /// the SIPp call's RTP, and nothing of it is left after the call.
    MediaKernelForwarding = 163,
}

impl Slot {
    /// The slot's network.
    pub fn net(self) -> Net {
        Net { n: self as u8 }
    }

    /// A fresh, empty output directory `tests/e2e/out/<name>/` (wiped first).
    pub fn fresh_dir(self) -> PathBuf {
        let dir = crate::paths::out_root().join(self.name());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot wipe {}: {e}", dir.display()));
        }
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    }
}

/// The addresses of one slot: the lab topology of DESIGN-NOTES section 1,
/// moved from `127.0.0.x` to `127.100.N.x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    n: u8,
}

/// Palisade's SIP port on both zones.
pub const PALISADE_PORT: u16 = 5060;
/// Palisade's admin endpoint port, on the inside address.
pub const ADMIN_PORT: u16 = 9091;
/// The PBX's SIP port.
pub const PBX_PORT: u16 = 5070;
/// The carriers' SIP port.
pub const CARRIER_PORT: u16 = 5080;
/// The RTP port SIPp peers announce (and bind) on their own address.
pub const PEER_MEDIA_PORT: u16 = 16000;

impl Net {
    /// `127.100.N.host`.
    pub fn ip(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 100, self.n, host)
    }
    /// Palisade's inside zone address (faces the PBX).
    pub fn inside_ip(self) -> Ipv4Addr {
        self.ip(1)
    }
    /// Palisade's outside zone address (faces the carriers).
    pub fn outside_ip(self) -> Ipv4Addr {
        self.ip(2)
    }
    /// The PBX.
    pub fn pbx_ip(self) -> Ipv4Addr {
        self.ip(10)
    }
    /// The primary carrier member.
    pub fn carrier_primary_ip(self) -> Ipv4Addr {
        self.ip(20)
    }
    /// The secondary carrier member.
    pub fn carrier_secondary_ip(self) -> Ipv4Addr {
        self.ip(21)
    }
    /// A source nobody configured (scanners, probes).
    pub fn untrusted_ip(self) -> Ipv4Addr {
        self.ip(66)
    }
    /// Palisade inside `ip:5060`.
    pub fn inside(self) -> SocketAddr {
        sa(self.inside_ip(), PALISADE_PORT)
    }
    /// Palisade outside `ip:5060`.
    pub fn outside(self) -> SocketAddr {
        sa(self.outside_ip(), PALISADE_PORT)
    }
    /// PBX `ip:5070`.
    pub fn pbx(self) -> SocketAddr {
        sa(self.pbx_ip(), PBX_PORT)
    }
    /// Primary carrier `ip:5080`.
    pub fn carrier_primary(self) -> SocketAddr {
        sa(self.carrier_primary_ip(), CARRIER_PORT)
    }
    /// Secondary carrier `ip:5080`.
    pub fn carrier_secondary(self) -> SocketAddr {
        sa(self.carrier_secondary_ip(), CARRIER_PORT)
    }
    /// Addresses on the inside (PBX side) that the carrier side must never see.
    pub fn inside_addresses(self) -> Vec<Ipv4Addr> {
        vec![self.pbx_ip(), self.inside_ip()]
    }
    /// Addresses on the outside (carrier side) that the PBX side must never see.
    pub fn outside_addresses(self) -> Vec<Ipv4Addr> {
        vec![
            self.outside_ip(),
            self.carrier_primary_ip(),
            self.carrier_secondary_ip(),
        ]
    }
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn slot_names_and_numbers_are_unique() {
        let names: HashSet<_> = Slot::ALL.iter().map(|s| s.name()).collect();
        let nums: HashSet<_> = Slot::ALL.iter().map(|s| *s as u8).collect();
        assert_eq!(names.len(), Slot::ALL.len());
        assert_eq!(nums.len(), Slot::ALL.len());
        assert!(
            nums.iter().all(|n| *n > 0),
            "slot 0 would be 127.100.0.x, keep it free"
        );
    }

    #[test]
    fn addresses_follow_the_lab_topology() {
        let net = Slot::OutboundCall.net();
        assert_eq!(net.inside().to_string(), "127.100.20.1:5060");
        assert_eq!(net.outside().to_string(), "127.100.20.2:5060");
        assert_eq!(net.pbx().to_string(), "127.100.20.10:5070");
        assert_eq!(net.carrier_primary().to_string(), "127.100.20.20:5080");
        assert_eq!(net.carrier_secondary().to_string(), "127.100.20.21:5080");
    }
}
