//! Palisade's own nftables tables: the guard's, and the media table of
//! kernel forwarding ([`media`]).
//!
//! Owns: rendering the `inet` table (allow-list sets evaluated first, static
//! deny sets, IPv4 and IPv6 ban sets with `flags timeout`, named counters,
//! and a per-source kernel meter on the SIP ports that puts a source over a
//! hard packet rate into the ban set with no userspace involvement),
//! installing it atomically (one `nft -f` transaction that also replaces a
//! stale copy), adding ban elements in batches (a batch a full ban set
//! refuses is retried with what still fits; the rest are counted), unbanning, listing bans with
//! their expiry, reading the counters, and deleting the table on shutdown.
//! Nothing here touches any other table.
//!
//! For media: the table that lets conntrack NAT forward plain RTP streams
//! the relay hands over, their elements and counters, and deleting their
//! connections ([`media::MediaOffload`]).
//!
//! Does not own: deciding whom to ban (`palisade-guard`) or which streams
//! the kernel forwards (`palisade-relay`'s offload policy), threads (the
//! binary runs [`Programmer`] on its own thread, the relay its offload
//! thread), or recording bans.
//!
//! Why `nft` text and not the `nftables` crate's JSON: the crate's schema
//! cannot express a set `update` carrying a per-element `limit` statement
//! (the kernel meter), and `nft -j` output drops the `dynamic` flag on the
//! way back. nft's own language is its stable interface, a file passed to
//! `nft -f` is applied as one transaction, and every value written here is
//! formatted from a typed `IpAddr`, `IpNet`, port or `Duration` (never text
//! from the network), so nothing can be injected. Listing uses `nft -j` and
//! `serde_json`.
//!
//! The hot path (set and map elements changed hundreds of times a second for
//! media streams offloaded to the kernel, their per-element counters, and
//! conntrack entries) does not spawn `nft`: [`netlink`] talks to the kernel
//! over a `NETLINK_NETFILTER` socket. The table itself still comes from
//! `nft -f`.

pub mod media;
pub mod netlink;

pub use netlink::Netlink;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use ipnet::IpNet;

/// Errors, by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The host: `nft` is missing, or not permitted (no CAP_NET_ADMIN).
    #[error("nft is not usable: {0}")]
    Unavailable(String),
    /// A ban set is full (`guard.max_bans` elements, counting the kernel
    /// meter's): these bans stay in-process only until elements expire.
    #[error(
        "ban set {set} is full: {bans} ban(s) not added to the kernel (in-process blocking only)"
    )]
    SetFull {
        /// `ban_v4` or `ban_v6`.
        set: String,
        /// Bans left out.
        bans: usize,
    },
    /// nft refused a command (a bug in what we rendered, or a kernel without
    /// a needed feature).
    #[error("nft failed: {0}")]
    Failed(String),
    /// nft's JSON output did not have the expected shape.
    #[error("unexpected nft output: {0}")]
    Output(String),
    /// The kernel refused a netlink request ([`netlink`]): `op` names it
    /// (for a batch, the op's index), `errno` says why (`ENOENT`: deleting a
    /// missing element; `EEXIST`: creating one already there).
    #[error("{op}: {}", errno_text(.errno))]
    Kernel {
        /// What was refused.
        op: String,
        /// The positive errno.
        errno: i32,
    },
    /// A netlink reply did not parse (a length that does not fit, a missing
    /// attribute): nothing was trusted past the fault.
    #[error("malformed netlink reply: {0}")]
    Malformed(String),
    /// A request that cannot be sent as asked (a bad name, a batch larger
    /// than the socket allows, a set without counters to dump).
    #[error("invalid netlink request: {0}")]
    Invalid(String),
}

impl NftError {
    /// The errno of a kernel refusal ([`NftError::Kernel`]).
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// `ENOENT (No such file or directory)`: the symbolic name of the errnos
/// nf_tables and ctnetlink return, and the system's text.
pub(crate) fn errno_text(errno: &i32) -> String {
    let name = match *errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::E2BIG => "E2BIG",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENOBUFS => "ENOBUFS",
        libc::ELOOP => "ELOOP",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => "errno",
    };
    let text = std::io::Error::from_raw_os_error(*errno);
    if name == "errno" {
        format!("errno {errno} ({text})")
    } else {
        format!("{name} ({text})")
    }
}

/// A port or an inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// First port.
    pub first: u16,
    /// Last port (== first for a single port).
    pub last: u16,
}

/// What the table is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Table name (in family `inet`).
    pub name: String,
    /// SIP ports (UDP and TCP): banned sources are dropped and the meter runs here.
    pub sip_ports: Vec<Ports>,
    /// Media ports (UDP): banned sources are dropped.
    pub media_ports: Vec<Ports>,
    /// Trusted: accepted before anything else.
    pub allow: Vec<IpNet>,
    /// Always dropped.
    pub deny: Vec<IpNet>,
    /// Packets per second per untrusted source to the SIP ports before the
    /// kernel bans it (0 = no meter).
    pub meter_packets_per_second: u32,
    /// Meter burst, in packets.
    pub meter_burst_packets: u32,
    /// Ban length for the meter.
    pub meter_ban: Duration,
    /// Capacity of each ban set (`guard.max_bans`).
    pub ban_set_size: u32,
    /// Capacity of each meter set (sources the kernel meter tracks).
    pub meter_set_size: u32,
}

/// The named counters the table keeps.
pub const COUNTERS: [&str; 4] = ["allowed", "denied", "banned_dropped", "meter_banned"];

fn ports(list: &[Ports]) -> String {
    list.iter()
        .map(|p| {
            if p.first == p.last {
                p.first.to_string()
            } else {
                format!("{}-{}", p.first, p.last)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn elements(nets: &[IpNet], v4: bool) -> Option<String> {
    let list: Vec<String> = nets
        .iter()
        .filter(|n| matches!(n, IpNet::V4(_)) == v4)
        .map(|n| {
            if n.prefix_len() == n.max_prefix_len() {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        })
        .collect();
    (!list.is_empty()).then(|| list.join(", "))
}

/// The `nft -f` text that (re)creates the table atomically: an existing
/// table of that name is replaced in the same transaction.
pub fn render_table(spec: &TableSpec) -> String {
    let t = &spec.name;
    let mut s = String::new();
    // `add` then `delete` makes the delete succeed whether or not the table
    // existed; the whole file is one transaction.
    let _ = writeln!(
        s,
        "add table inet {t}\ndelete table inet {t}\ntable inet {t} {{"
    );
    for c in COUNTERS {
        let _ = writeln!(s, "\tcounter {c} {{ }}");
    }
    for (fam, v4) in [("ipv4_addr", true), ("ipv6_addr", false)] {
        let sfx = if v4 { "v4" } else { "v6" };
        for (set, list) in [("allow", &spec.allow), ("deny", &spec.deny)] {
            let _ = write!(s, "\tset {set}_{sfx} {{ type {fam}; flags interval; ");
            if let Some(e) = elements(list, v4) {
                let _ = write!(s, "elements = {{ {e} }} ");
            }
            let _ = writeln!(s, "}}");
        }
        let _ = writeln!(
            s,
            "\tset ban_{sfx} {{ type {fam}; flags timeout; size {}; }}",
            spec.ban_set_size
        );
        let _ = writeln!(
            s,
            "\tset meter_{sfx} {{ type {fam}; flags dynamic,timeout; size {}; timeout 60s; }}",
            spec.meter_set_size
        );
    }
    let sip = ports(&spec.sip_ports);
    let _ = writeln!(s, "\tchain input {{");
    let _ = writeln!(s, "\t\ttype filter hook input priority -10; policy accept;");
    // Only our ports; anything else is not our business.
    let mut all = spec.sip_ports.clone();
    all.extend(spec.media_ports.iter().copied());
    let _ = writeln!(
        s,
        "\t\tmeta l4proto {{ udp, tcp }} th dport != {{ {} }} return",
        ports(&all)
    );
    let _ = writeln!(s, "\t\tmeta l4proto != {{ udp, tcp }} return");
    for (ipk, sfx) in [("ip", "v4"), ("ip6", "v6")] {
        let _ = writeln!(
            s,
            "\t\t{ipk} saddr @allow_{sfx} counter name allowed accept"
        );
        let _ = writeln!(s, "\t\t{ipk} saddr @deny_{sfx} counter name denied drop");
        let _ = writeln!(
            s,
            "\t\t{ipk} saddr @ban_{sfx} counter name banned_dropped drop"
        );
    }
    if spec.meter_packets_per_second > 0 && !spec.sip_ports.is_empty() {
        for (ipk, sfx) in [("ip", "v4"), ("ip6", "v6")] {
            let _ = writeln!(
                s,
                "\t\tth dport {{ {sip} }} update @meter_{sfx} {{ {ipk} saddr limit rate over {}/second burst {} packets }} add @ban_{sfx} {{ {ipk} saddr timeout {}s }} counter name meter_banned drop",
                spec.meter_packets_per_second,
                spec.meter_burst_packets.max(1),
                spec.meter_ban.as_secs().max(1),
            );
        }
    }
    let _ = writeln!(s, "\t}}\n}}");
    s
}

/// `add element` commands for `bans` (one transaction).
pub fn render_bans(table: &str, bans: &[(IpAddr, Duration)]) -> String {
    let mut s = String::new();
    for (ip, d) in bans {
        let sfx = if ip.is_ipv4() { "v4" } else { "v6" };
        let secs = d.as_secs().max(1);
        // `add` keeps an existing element's timeout; delete first so a
        // repeat offender gets the full ban again. `add` before `delete`
        // makes the delete valid when the element is absent.
        let _ = writeln!(
            s,
            "add element inet {table} ban_{sfx} {{ {ip} timeout {secs}s }}\n\
             delete element inet {table} ban_{sfx} {{ {ip} }}\n\
             add element inet {table} ban_{sfx} {{ {ip} timeout {secs}s }}"
        );
    }
    s
}

/// A ban as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelBan {
    /// The address.
    pub ip: IpAddr,
    /// Time left, if the kernel reported it.
    pub expires: Option<Duration>,
}

/// Runs `nft` for one table.
#[derive(Debug, Clone)]
pub struct Nft {
    binary: PathBuf,
    table: String,
}

impl Nft {
    /// `nft` from PATH (or `/usr/sbin/nft`) for table `inet <table>`.
    pub fn new(table: &str) -> Self {
        let binary = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("nft"));
        Nft {
            binary,
            table: table.to_owned(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            NftError::Unavailable(format!("cannot run {}: {e}", self.binary.display()))
        })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|e| NftError::Failed(format!("writing to nft: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| NftError::Failed(format!("waiting for nft: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            if err.contains("Operation not permitted") || err.contains("Permission denied") {
                Err(NftError::Unavailable(err))
            } else {
                Err(NftError::Failed(err))
            }
        }
    }

    /// Whether nft runs and may change the ruleset here (a no-op
    /// transaction on our own table name).
    pub fn probe(&self) -> Result<(), NftError> {
        let t = &self.table;
        // Creating and deleting a scratch table needs CAP_NET_ADMIN and
        // touches nothing else; `nft -c` checks without committing.
        self.run(
            &["-c", "-f", "-"],
            Some(&format!("add table inet {t}_probe\n")),
        )?;
        self.run(&["list", "tables"], None).map(|_| ())
    }

    /// Installs (or atomically replaces) the media table (kernel
    /// forwarding; this `Nft`'s table name is the media table's).
    pub fn install_media(&self, spec: &media::MediaTableSpec) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(&media::render_media_table(spec)))
            .map(|_| ())
    }

    /// Installs (or atomically replaces) the table.
    pub fn install(&self, spec: &TableSpec) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(&render_table(spec)))
            .map(|_| ())
    }

    /// Replaces the allow and deny sets (on reload), atomically.
    pub fn set_lists(&self, allow: &[IpNet], deny: &[IpNet]) -> Result<(), NftError> {
        let t = &self.table;
        let mut s = String::new();
        for (set, list) in [("allow", allow), ("deny", deny)] {
            for (sfx, v4) in [("v4", true), ("v6", false)] {
                let _ = writeln!(s, "flush set inet {t} {set}_{sfx}");
                if let Some(e) = elements(list, v4) {
                    let _ = writeln!(s, "add element inet {t} {set}_{sfx} {{ {e} }}");
                }
            }
        }
        self.run(&["-f", "-"], Some(&s)).map(|_| ())
    }

    /// Adds ban elements, all in one transaction.
    pub fn ban(&self, bans: &[(IpAddr, Duration)]) -> Result<(), NftError> {
        if bans.is_empty() {
            return Ok(());
        }
        self.run(&["-f", "-"], Some(&render_bans(&self.table, bans)))
            .map(|_| ())
    }

    /// Removes `ip` from the ban set. Returns whether it was there.
    pub fn unban(&self, ip: IpAddr) -> Result<bool, NftError> {
        let present = self.list_bans()?.iter().any(|b| b.ip == ip);
        if !present {
            return Ok(false);
        }
        let sfx = if ip.is_ipv4() { "v4" } else { "v6" };
        let t = &self.table;
        self.run(
            &["-f", "-"],
            Some(&format!("delete element inet {t} ban_{sfx} {{ {ip} }}\n")),
        )?;
        Ok(true)
    }

    /// The elements of one ban set (`v4`: `ban_v4`, else `ban_v6`) and its
    /// capacity (`None`: no size limit).
    pub fn ban_set(&self, v4: bool) -> Result<(Vec<KernelBan>, Option<usize>), NftError> {
        let set = if v4 { "ban_v4" } else { "ban_v6" };
        let json = self.run(&["-j", "list", "set", "inet", &self.table, set], None)?;
        Ok((parse_set_elements(&json)?, parse_set_size(&json)?))
    }

    /// The bans the kernel holds (IPv4 and IPv6).
    pub fn list_bans(&self) -> Result<Vec<KernelBan>, NftError> {
        let mut out = Vec::new();
        for sfx in ["v4", "v6"] {
            let set = format!("ban_{sfx}");
            let json = self.run(&["-j", "list", "set", "inet", &self.table, &set], None)?;
            out.extend(parse_set_elements(&json)?);
        }
        Ok(out)
    }

    /// Packets per named counter.
    pub fn counters(&self) -> Result<Vec<(String, u64)>, NftError> {
        let json = self.run(
            &["-j", "list", "counters", "table", "inet", &self.table],
            None,
        )?;
        parse_counters(&json)
    }

    /// Deletes the table (only ours). Missing is fine.
    pub fn remove(&self) -> Result<(), NftError> {
        let t = &self.table;
        self.run(
            &["-f", "-"],
            Some(&format!("add table inet {t}\ndelete table inet {t}\n")),
        )
        .map(|_| ())
    }
}

fn json(text: &str) -> Result<Vec<serde_json::Value>, NftError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| NftError::Output(e.to_string()))?;
    v.get("nftables")
        .and_then(|n| n.as_array())
        .cloned()
        .ok_or_else(|| NftError::Output("no `nftables` array".into()))
}

/// Elements of a `nft -j list set` answer.
pub fn parse_set_elements(text: &str) -> Result<Vec<KernelBan>, NftError> {
    let mut out = Vec::new();
    for item in json(text)? {
        let Some(elems) = item
            .get("set")
            .and_then(|s| s.get("elem"))
            .and_then(|e| e.as_array())
        else {
            continue;
        };
        for e in elems {
            // Either a bare address or {"elem": {"val": addr, "timeout": s, "expires": s}}.
            let (val, expires) = match e.get("elem") {
                Some(inner) => (
                    inner.get("val").and_then(|v| v.as_str()),
                    inner.get("expires").and_then(serde_json::Value::as_u64),
                ),
                None => (e.as_str(), None),
            };
            if let Some(ip) = val.and_then(|v| v.parse::<IpAddr>().ok()) {
                out.push(KernelBan {
                    ip,
                    expires: expires.map(Duration::from_secs),
                });
            }
        }
    }
    Ok(out)
}

/// The `size` of the set in a `nft -j list set` answer (`None`: unlimited).
pub fn parse_set_size(text: &str) -> Result<Option<usize>, NftError> {
    Ok(json(text)?
        .iter()
        .filter_map(|item| item.get("set"))
        .find_map(|s| s.get("size").and_then(serde_json::Value::as_u64))
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
}

/// Named counters of a `nft -j list counters` answer.
pub fn parse_counters(text: &str) -> Result<Vec<(String, u64)>, NftError> {
    let mut out = Vec::new();
    for item in json(text)? {
        if let Some(c) = item.get("counter") {
            let name = c.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            let packets = c
                .get("packets")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            out.push((name.to_owned(), packets));
        }
    }
    Ok(out)
}

/// Requests for the [`Programmer`] thread.
#[derive(Debug)]
pub enum Request {
    /// Ban for that long.
    Ban(IpAddr, Duration),
    /// Remove a ban.
    Unban(IpAddr),
    /// Replace the allow and deny lists.
    Lists(Vec<IpNet>, Vec<IpNet>),
}

/// What the programmer thread counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgrammerStats {
    /// Ban elements added.
    pub bans_applied: u64,
    /// nft transactions run for bans.
    pub batches: u64,
    /// nft runs that failed.
    pub errors: u64,
    /// Bans not added to the kernel because their set was full (they are
    /// enforced in-process only).
    pub set_full: u64,
}

/// How long the programmer waits for more bans before running nft: a
/// flood of verdicts costs one nft run per window.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Most bans in one nft transaction.
pub const MAX_BATCH: usize = 512;

/// Applies ban requests in batches on its own thread (nft is a process
/// spawn, never on the engine's path).
#[derive(Debug)]
pub struct Programmer {
    nft: Nft,
    stats: std::sync::Arc<std::sync::Mutex<ProgrammerStats>>,
}

impl Programmer {
    /// A programmer for `nft`; `stats` is shared with whoever reports it.
    pub fn new(nft: Nft, stats: std::sync::Arc<std::sync::Mutex<ProgrammerStats>>) -> Self {
        Programmer { nft, stats }
    }

    fn bump(&self, f: impl FnOnce(&mut ProgrammerStats)) {
        let mut s = self
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut s);
    }

    /// Runs until every sender is gone. `on_error` is told about failures
    /// (the binary logs them).
    pub fn run(self, rx: &Receiver<Request>, on_error: &dyn Fn(&NftError)) {
        let mut pending: Vec<(IpAddr, Duration)> = Vec::new();
        loop {
            let first = if pending.is_empty() {
                match rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(BATCH_WINDOW) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.flush(&mut pending, on_error);
                        break;
                    }
                }
            };
            match first {
                Some(Request::Ban(ip, d)) => {
                    if let Some(p) = pending.iter_mut().find(|(x, _)| *x == ip) {
                        p.1 = p.1.max(d);
                    } else {
                        pending.push((ip, d));
                    }
                    if pending.len() >= MAX_BATCH {
                        self.flush(&mut pending, on_error);
                    }
                }
                Some(Request::Unban(ip)) => {
                    pending.retain(|(x, _)| *x != ip);
                    self.flush(&mut pending, on_error);
                    if let Err(e) = self.nft.unban(ip) {
                        self.bump(|s| s.errors += 1);
                        on_error(&e);
                    }
                }
                Some(Request::Lists(allow, deny)) => {
                    if let Err(e) = self.nft.set_lists(&allow, &deny) {
                        self.bump(|s| s.errors += 1);
                        on_error(&e);
                    }
                }
                None => self.flush(&mut pending, on_error),
            }
        }
    }

    fn flush(&self, pending: &mut Vec<(IpAddr, Duration)>, on_error: &dyn Fn(&NftError)) {
        if pending.is_empty() {
            return;
        }
        let n = pending.len() as u64;
        match self.nft.ban(pending) {
            Ok(()) => self.bump(|s| {
                s.bans_applied += n;
                s.batches += 1;
            }),
            Err(e) => {
                // One bad element fails the whole transaction; the usual
                // cause is a full set (the kernel says ENFILE). Retry with
                // what still fits, so one full set never costs the batch.
                self.bump(|s| s.errors += 1);
                on_error(&e);
                for v4 in [true, false] {
                    let family: Vec<(IpAddr, Duration)> = pending
                        .iter()
                        .filter(|(ip, _)| ip.is_ipv4() == v4)
                        .copied()
                        .collect();
                    if !family.is_empty() {
                        self.retry(v4, &family, on_error);
                    }
                }
            }
        }
        pending.clear();
    }

    /// A failed batch of one family: refreshes of elements the set holds
    /// and as many new ones as there is room for, in one transaction; the
    /// rest are counted as `set_full`. If that fails too, one by one.
    fn retry(&self, v4: bool, bans: &[(IpAddr, Duration)], on_error: &dyn Fn(&NftError)) {
        let (fit, left_out) = match self.nft.ban_set(v4) {
            Ok((held, size)) => {
                let free = size.map_or(usize::MAX, |s| s.saturating_sub(held.len()));
                let (refresh, new): (Vec<_>, Vec<_>) = bans
                    .iter()
                    .partition(|(ip, _)| held.iter().any(|h| h.ip == *ip));
                let take = new.len().min(free);
                let mut fit = refresh;
                fit.extend_from_slice(&new[..take]);
                (fit, new.len() - take)
            }
            Err(e) => {
                on_error(&e);
                (bans.to_vec(), 0)
            }
        };
        if left_out > 0 {
            self.bump(|s| s.set_full += left_out as u64);
            on_error(&NftError::SetFull {
                set: if v4 { "ban_v4" } else { "ban_v6" }.into(),
                bans: left_out,
            });
        }
        if fit.is_empty() {
            return;
        }
        if self.nft.ban(&fit).is_ok() {
            let n = fit.len() as u64;
            self.bump(|s| {
                s.bans_applied += n;
                s.batches += 1;
            });
            return;
        }
        // Still refused (the meter filled the room meanwhile, or one element
        // is bad): each on its own, bounded by the batch size.
        for one in fit {
            match self.nft.ban(&[one]) {
                Ok(()) => self.bump(|s| {
                    s.bans_applied += 1;
                    s.batches += 1;
                }),
                Err(e) => {
                    self.bump(|s| s.errors += 1);
                    on_error(&e);
                }
            }
        }
    }
}

/// A bounded sender for the programmer.
pub type Sender = SyncSender<Request>;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TableSpec {
        TableSpec {
            name: "palisade".into(),
            sip_ports: vec![Ports {
                first: 5060,
                last: 5060,
            }],
            media_ports: vec![Ports {
                first: 20000,
                last: 29999,
            }],
            allow: vec![
                "127.0.0.10/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            deny: vec!["2001:db8::/32".parse().unwrap()],
            meter_packets_per_second: 500,
            meter_burst_packets: 1000,
            meter_ban: Duration::from_secs(600),
            ban_set_size: 65536,
            meter_set_size: 100_000,
        }
    }

    #[test]
    fn table_text_has_every_part_in_order() {
        let t = render_table(&spec());
        assert!(
            t.starts_with("add table inet palisade\ndelete table inet palisade\n"),
            "{t}"
        );
        assert!(t.contains("set allow_v4 { type ipv4_addr; flags interval; elements = { 127.0.0.10, 10.0.0.0/8 } }"), "{t}");
        assert!(
            t.contains(
                "set deny_v6 { type ipv6_addr; flags interval; elements = { 2001:db8::/32 } }"
            ),
            "{t}"
        );
        assert!(
            t.contains("set ban_v4 { type ipv4_addr; flags timeout; size 65536; }"),
            "{t}"
        );
        assert!(
            t.contains("th dport != { 5060, 20000-29999 } return"),
            "{t}"
        );
        let allow = t.find("@allow_v4").unwrap();
        let ban = t.find("@ban_v4 counter").unwrap();
        let meter = t.find("update @meter_v4").unwrap();
        assert!(
            allow < ban && ban < meter,
            "allow first, then bans, then the meter:\n{t}"
        );
        assert!(t.contains("limit rate over 500/second burst 1000 packets } add @ban_v4 { ip saddr timeout 600s }"), "{t}");
    }

    #[test]
    fn no_meter_when_zero() {
        let mut s = spec();
        s.meter_packets_per_second = 0;
        assert!(!render_table(&s).contains("update @meter"));
    }

    #[test]
    fn bans_render_per_family() {
        let b = render_bans(
            "palisade",
            &[
                ("127.0.0.66".parse().unwrap(), Duration::from_secs(60)),
                ("2001:db8::1".parse().unwrap(), Duration::from_millis(10)),
            ],
        );
        assert!(b.contains("add element inet palisade ban_v4 { 127.0.0.66 timeout 60s }"));
        assert!(b.contains("delete element inet palisade ban_v4 { 127.0.0.66 }"));
        assert!(b.contains("add element inet palisade ban_v6 { 2001:db8::1 timeout 1s }"));
    }

    #[test]
    fn parses_nft_json() {
        let set = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "ban_v4", "table": "palisade", "type": "ipv4_addr", "handle": 3, "flags": ["timeout"], "elem": [{"elem": {"val": "127.0.0.66", "timeout": 60, "expires": 57}}, "127.0.0.67"]}}]}"#;
        let bans = parse_set_elements(set).unwrap();
        assert_eq!(bans.len(), 2);
        assert_eq!(bans[0].ip, "127.0.0.66".parse::<IpAddr>().unwrap());
        assert_eq!(bans[0].expires, Some(Duration::from_secs(57)));
        assert_eq!(bans[1].expires, None);
        let counters = r#"{"nftables": [{"metainfo": {}}, {"counter": {"family": "inet", "name": "banned_dropped", "table": "palisade", "handle": 2, "packets": 12, "bytes": 900}}]}"#;
        assert_eq!(
            parse_counters(counters).unwrap(),
            vec![("banned_dropped".to_owned(), 12)]
        );
        assert!(parse_set_elements("not json").is_err());
        assert_eq!(parse_set_size(set).unwrap(), None);
        let sized = r#"{"nftables": [{"metainfo": {}}, {"set": {"family": "inet", "name": "ban_v4", "table": "palisade", "type": "ipv4_addr", "handle": 1, "size": 16, "flags": ["timeout"]}}]}"#;
        assert_eq!(parse_set_size(sized).unwrap(), Some(16));
        assert!(parse_set_elements(sized).unwrap().is_empty());
    }
}
