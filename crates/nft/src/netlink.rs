//! A small netlink client for nf_tables set elements and conntrack entries.
//!
//! Owns: talking to the kernel over one `NETLINK_NETFILTER` socket with no
//! process spawned: adding and deleting elements of the sets and maps of an
//! `inet` table as one nf_tables transaction ([`Netlink::apply`]), dumping a
//! set's per-element counters ([`Netlink::counters`]) and deleting a UDP
//! conntrack entry ([`Netlink::delete_conntrack`]). This is the hot control
//! path for media streams offloaded to the kernel: a batch costs one `send`
//! and the reads of its acks, and the socket's buffers are reused.
//!
//! Does not own: creating the table, its sets or its rules (`nft -f`, see
//! [`crate::Nft`]), or deciding what to offload.
//!
//! Messages are encoded and decoded here by hand (`nlmsghdr`, `nfgenmsg`,
//! `nlattr`s padded to 4 bytes); every length in a kernel reply is checked
//! against the bytes actually received, so a malformed reply is an
//! [`NftError::Malformed`], never a panic. Datagrams are sized with
//! `MSG_PEEK | MSG_TRUNC` before they are read, so none is ever truncated.

use std::io::{ErrorKind, Read as _};
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::NftError;

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const NLMSG_OVERRUN: u16 = 0x4;
const NLMSG_MIN_TYPE: u16 = 0x10;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_ROOT: u16 = 0x100;
const NLM_F_MATCH: u16 = 0x200;
const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_F_NET_BYTEORDER: u16 = 0x4000;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

// linux/netfilter/nfnetlink.h
const NFNETLINK_V0: u8 = 0;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = NLMSG_MIN_TYPE;
const NFNL_MSG_BATCH_END: u16 = NLMSG_MIN_TYPE + 1;
const NFGENMSG_LEN: usize = 4;

// linux/netfilter.h
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;

// linux/netfilter/nf_tables.h
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_EXPR: u16 = 7;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFT_SET_ELEM_CATCHALL: u32 = 0x2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// `NFT_TABLE_MAXNAMELEN` and `NFT_SET_MAXNAMELEN` (with the NUL).
const NFT_NAME_MAXLEN: usize = 256;

// linux/netfilter/nfnetlink_conntrack.h
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;

/// `nlmsg_type` of nf_tables set element messages.
const SETELEM_NEW: u16 = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;
const SETELEM_GET: u16 = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM;
const SETELEM_DEL: u16 = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELSETELEM;
const GEN_GET: u16 = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN;
const CT_DELETE: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;

/// Element bytes per message: an `NFTA_SET_ELEM_LIST_ELEMENTS` nest must
/// stay under 64 KiB (its length is a `u16`); bigger ops are split into
/// several messages of the same transaction.
const MAX_ELEMENTS_NEST: usize = 60_000;
/// Receive buffer start size (dump datagrams are at most 32 KiB).
const RX_START: usize = 64 * 1024;
/// Socket buffers asked for (the kernel caps them at `net.core.[rw]mem_max`
/// and doubles them): room for a big batch and for its acks.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// How long a reply may take by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Dumps retried when concurrent changes interrupt them.
const DUMP_ATTEMPTS: usize = 4;

/// The shape of a set key or map value (see [`Value`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `ipv4_addr . inet_service` (8 bytes).
    V4Port,
    /// `ipv6_addr . inet_service` (20 bytes).
    V6Port,
    /// `ipv4_addr . inet_service . ipv4_addr . inet_service` (16 bytes).
    V4Tuple,
    /// `ipv6_addr . inet_service . ipv6_addr . inet_service` (40 bytes).
    V6Tuple,
    /// `mark` (4 bytes).
    Mark,
}

impl ValueKind {
    /// Bytes of a value of this kind as nf_tables stores it.
    pub const fn size(self) -> usize {
        match self {
            ValueKind::V4Port => 8,
            ValueKind::V6Port => 20,
            ValueKind::V4Tuple => 16,
            ValueKind::V6Tuple => 40,
            ValueKind::Mark => 4,
        }
    }
}

/// A typed set key or map value, encoded as nf_tables stores it: each field
/// of a concatenation padded to 4 bytes, addresses and ports in network
/// byte order, marks in host byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    /// `ipv4_addr . inet_service` (4 + 2 bytes, each field padded to 4: 8 bytes).
    V4Port(Ipv4Addr, u16),
    /// `ipv6_addr . inet_service` (16 + 4 = 20 bytes).
    V6Port(Ipv6Addr, u16),
    /// `ipv4_addr . inet_service . ipv4_addr . inet_service` (16 bytes).
    V4Tuple(Ipv4Addr, u16, Ipv4Addr, u16),
    /// `ipv6_addr . inet_service . ipv6_addr . inet_service` (40 bytes).
    V6Tuple(Ipv6Addr, u16, Ipv6Addr, u16),
    /// `mark` (u32 in host byte order, 4 bytes), as used by `ct mark`.
    Mark(u32),
}

impl Value {
    /// This value's kind.
    pub const fn kind(&self) -> ValueKind {
        match self {
            Value::V4Port(..) => ValueKind::V4Port,
            Value::V6Port(..) => ValueKind::V6Port,
            Value::V4Tuple(..) => ValueKind::V4Tuple,
            Value::V6Tuple(..) => ValueKind::V6Tuple,
            Value::Mark(_) => ValueKind::Mark,
        }
    }

    /// Appends the value's bytes as nf_tables stores them.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn port(out: &mut Vec<u8>, p: u16) {
            out.extend_from_slice(&p.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        match *self {
            Value::V4Port(a, p) => {
                out.extend_from_slice(&a.octets());
                port(out, p);
            }
            Value::V6Port(a, p) => {
                out.extend_from_slice(&a.octets());
                port(out, p);
            }
            Value::V4Tuple(a, p, b, q) => {
                out.extend_from_slice(&a.octets());
                port(out, p);
                out.extend_from_slice(&b.octets());
                port(out, q);
            }
            Value::V6Tuple(a, p, b, q) => {
                out.extend_from_slice(&a.octets());
                port(out, p);
                out.extend_from_slice(&b.octets());
                port(out, q);
            }
            Value::Mark(m) => out.extend_from_slice(&m.to_ne_bytes()),
        }
    }

    /// Decodes `bytes` as a value of `kind`; the length must match exactly.
    pub fn decode(kind: ValueKind, bytes: &[u8]) -> Result<Value, NftError> {
        if bytes.len() != kind.size() {
            return Err(NftError::Malformed(format!(
                "a {kind:?} value is {} bytes, the kernel sent {}",
                kind.size(),
                bytes.len()
            )));
        }
        let v4 = |at: usize| array::<4>(bytes, at).map(Ipv4Addr::from);
        let v6 = |at: usize| array::<16>(bytes, at).map(Ipv6Addr::from);
        let port = |at: usize| array::<2>(bytes, at).map(u16::from_be_bytes);
        Ok(match kind {
            ValueKind::V4Port => Value::V4Port(v4(0)?, port(4)?),
            ValueKind::V6Port => Value::V6Port(v6(0)?, port(16)?),
            ValueKind::V4Tuple => Value::V4Tuple(v4(0)?, port(4)?, v4(8)?, port(12)?),
            ValueKind::V6Tuple => Value::V6Tuple(v6(0)?, port(16)?, v6(20)?, port(36)?),
            ValueKind::Mark => Value::Mark(u32::from_ne_bytes(array::<4>(bytes, 0)?)),
        })
    }
}

/// `N` bytes of `b` at `at`, bounds-checked.
fn array<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], NftError> {
    at.checked_add(N)
        .and_then(|end| b.get(at..end))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or_else(|| NftError::Malformed(format!("{N} bytes wanted at {at} of {}", b.len())))
}

/// One change to a set or map of the table, part of an [`Netlink::apply`]
/// transaction.
#[derive(Debug, Clone, Copy)]
pub enum SetOp<'a> {
    /// Add elements (maps: with their data) to `set`, like `nft add element`:
    /// an element already there with the same data is not an error (a map
    /// key already there with other data is: `EEXIST`; replace it with a
    /// `Delete` and an `Add` in one batch).
    Add {
        /// Set or map name.
        set: &'a str,
        /// Keys, and the data for maps (`None` for sets).
        elements: &'a [(Value, Option<Value>)],
    },
    /// Like [`SetOp::Add`] but an element already there fails the
    /// transaction with `EEXIST` (`nft create element`).
    Create {
        /// Set or map name.
        set: &'a str,
        /// Keys, and the data for maps (`None` for sets).
        elements: &'a [(Value, Option<Value>)],
    },
    /// Delete elements by key; a missing one fails the transaction with `ENOENT`.
    Delete {
        /// Set or map name.
        set: &'a str,
        /// The keys.
        keys: &'a [Value],
    },
}

impl SetOp<'_> {
    fn set(&self) -> &str {
        match self {
            SetOp::Add { set, .. } | SetOp::Create { set, .. } | SetOp::Delete { set, .. } => set,
        }
    }

    fn len(&self) -> usize {
        match self {
            SetOp::Add { elements, .. } | SetOp::Create { elements, .. } => elements.len(),
            SetOp::Delete { keys, .. } => keys.len(),
        }
    }

    fn item(&self, i: usize) -> Option<(&Value, Option<&Value>)> {
        match self {
            SetOp::Add { elements, .. } | SetOp::Create { elements, .. } => {
                elements.get(i).map(|(k, d)| (k, d.as_ref()))
            }
            SetOp::Delete { keys, .. } => keys.get(i).map(|k| (k, None)),
        }
    }

    fn header(&self) -> (u16, u16) {
        match self {
            SetOp::Add { .. } => (SETELEM_NEW, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
            SetOp::Create { .. } => (
                SETELEM_NEW,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            ),
            SetOp::Delete { .. } => (SETELEM_DEL, NLM_F_REQUEST | NLM_F_ACK),
        }
    }

    fn describe(&self, index: usize, table: &str) -> String {
        let (verb, prep) = match self {
            SetOp::Add { .. } => ("add", "to"),
            SetOp::Create { .. } => ("create", "in"),
            SetOp::Delete { .. } => ("delete", "from"),
        };
        format!(
            "ops[{index}]: {verb} {} element(s) {prep} set inet {table} {}",
            self.len(),
            self.set()
        )
    }
}

/// A `NETLINK_NETFILTER` socket and its reusable buffers.
#[derive(Debug)]
pub struct Netlink {
    sock: Socket,
    seq: u32,
    /// Largest datagram the kernel accepts from this socket.
    max_send: usize,
    timeout: Duration,
    tx: Vec<u8>,
    rx: Vec<u8>,
    /// Per message of the current batch: the index of its op.
    msg_ops: Vec<usize>,
    /// Per message of the current batch: whether it was answered.
    answered: Vec<bool>,
}

fn io_error(what: &str, e: &std::io::Error) -> NftError {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT) => {
            NftError::Unavailable(format!("netlink {what}: {e}"))
        }
        _ => NftError::Failed(format!("netlink {what}: {e}")),
    }
}

/// The error for a kernel refusal: not permitted means the host cannot do
/// this at all.
fn refused(op: String, errno: i32) -> NftError {
    if errno == libc::EPERM || errno == libc::EACCES {
        NftError::Unavailable(format!("{op}: {}", crate::errno_text(&errno)))
    } else {
        NftError::Kernel { op, errno }
    }
}

impl Netlink {
    /// Opens the socket and checks, with a no-op request, that the kernel
    /// lets this process use nf_tables (`EPERM`/`EACCES`:
    /// [`NftError::Unavailable`]).
    pub fn open() -> Result<Netlink, NftError> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_NETFILTER)),
        )
        .map_err(|e| io_error("socket", &e))?;
        // Best effort: the kernel caps both at its sysctl maxima.
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let sndbuf = sock
            .send_buffer_size()
            .map_err(|e| io_error("SO_SNDBUF", &e))?;
        sock.set_read_timeout(Some(DEFAULT_TIMEOUT))
            .map_err(|e| io_error("SO_RCVTIMEO", &e))?;
        let mut nl = Netlink {
            sock,
            seq: 1,
            // netlink_sendmsg refuses `len > sk_sndbuf - 32`.
            max_send: sndbuf.saturating_sub(32),
            timeout: DEFAULT_TIMEOUT,
            tx: Vec::with_capacity(4096),
            rx: vec![0; RX_START],
            msg_ops: Vec::new(),
            answered: Vec::new(),
        };
        nl.probe()?;
        Ok(nl)
    }

    /// How long to wait for each kernel reply (default 5 s).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), NftError> {
        self.sock
            .set_read_timeout(Some(timeout))
            .map_err(|e| io_error("SO_RCVTIMEO", &e))?;
        self.timeout = timeout;
        Ok(())
    }

    /// The largest batch (bytes on the wire) [`Netlink::apply`] can send.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_send
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    /// `NFT_MSG_GETGEN` with an ack: needs the same capability as every
    /// other nfnetlink request, and changes nothing.
    fn probe(&mut self) -> Result<(), NftError> {
        let seq = self.next_seq();
        self.tx.clear();
        let m = msg_begin(
            &mut self.tx,
            GEN_GET,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            NFPROTO_UNSPEC,
            0,
        );
        msg_end(&mut self.tx, m)?;
        self.send()?;
        match self.wait_ack(seq)? {
            0 => Ok(()),
            errno => Err(refused("nf_tables probe (NFT_MSG_GETGEN)".into(), errno)),
        }
    }

    fn send(&mut self) -> Result<(), NftError> {
        if self.tx.len() > self.max_send {
            return Err(NftError::Invalid(format!(
                "a batch of {} bytes is larger than the socket allows ({} bytes; \
                 net.core.wmem_max caps it): split the ops",
                self.tx.len(),
                self.max_send
            )));
        }
        loop {
            match self.sock.send(&self.tx) {
                Ok(n) if n == self.tx.len() => return Ok(()),
                Ok(n) => {
                    return Err(NftError::Failed(format!(
                        "netlink send: {n} of {} bytes sent",
                        self.tx.len()
                    )));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("send", &e)),
            }
        }
    }

    /// Reads one datagram into `self.rx`, sized first so it is never
    /// truncated. Returns its length.
    fn recv(&mut self) -> Result<usize, NftError> {
        loop {
            let mut none: [MaybeUninit<u8>; 0] = [];
            let len = match self
                .sock
                .recv_with_flags(&mut none, libc::MSG_PEEK | libc::MSG_TRUNC)
            {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.recv_error(&e)),
            };
            if len == 0 {
                return Err(NftError::Malformed("empty netlink datagram".into()));
            }
            if self.rx.len() < len {
                self.rx.resize(len, 0);
            }
            // The whole buffer, not just `len`: the kernel sizes its dump
            // datagrams by the largest read it has seen (up to 32 KiB).
            match (&self.sock).read(&mut self.rx) {
                Ok(n) => return Ok(n.min(len)),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.recv_error(&e)),
            }
        }
    }

    fn recv_error(&self, e: &std::io::Error) -> NftError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => NftError::Failed(format!(
                "no netlink reply from the kernel within {:?}",
                self.timeout
            )),
            _ if e.raw_os_error() == Some(libc::ENOBUFS) => {
                NftError::Failed("netlink receive buffer overrun: kernel replies were lost".into())
            }
            _ => io_error("recv", e),
        }
    }

    /// Reads until the ack (or error) for `seq`; returns its errno (0: ack).
    fn wait_ack(&mut self, seq: u32) -> Result<i32, NftError> {
        loop {
            let n = self.recv()?;
            for m in Messages::new(self.rx.get(..n).unwrap_or_default()) {
                let m = m?;
                if m.seq == seq && m.ty == NLMSG_ERROR {
                    return ack_errno(m.payload);
                }
            }
        }
    }

    /// Applies `ops` to table `inet <table>` as one nf_tables transaction:
    /// all of them or none. Every op message asks for an ack; the reply of
    /// each is read. A refusal names the op (its index in `ops`) and the
    /// errno (`ENOENT`: deleting a missing element; `EEXIST`: creating one
    /// already there, or a map key already there with other data).
    /// Ops with no elements are skipped; no ops at all send nothing.
    pub fn apply(&mut self, table: &str, ops: &[SetOp<'_>]) -> Result<(), NftError> {
        let begin = self.seq;
        encode_batch(&mut self.tx, begin, table, ops, &mut self.msg_ops)?;
        let msgs = self.msg_ops.len();
        let last = u32::try_from(msgs)
            .ok()
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| NftError::Invalid("too many messages in one batch".into()))?;
        // BATCH_BEGIN is `begin`, ops are begin+1..=begin+msgs, BATCH_END is begin+last.
        self.seq = begin.wrapping_add(last).wrapping_add(1);
        if msgs == 0 {
            return Ok(());
        }
        self.send()?;
        self.answered.clear();
        self.answered.resize(msgs, false);
        let mut waiting = msgs;
        // (message index, errno) of the first refused message.
        let mut first: Option<(usize, i32)> = None;
        while waiting > 0 {
            let n = self.recv()?;
            for m in Messages::new(self.rx.get(..n).unwrap_or_default()) {
                let m = m?;
                let rel = m.seq.wrapping_sub(begin);
                // Replies to earlier requests (a call that gave up) are not ours.
                if rel > last || m.ty != NLMSG_ERROR {
                    continue;
                }
                let errno = ack_errno(m.payload)?;
                if rel == 0 || rel == last {
                    // The batch as a whole was refused (or ENOMEM): no
                    // per-message replies follow.
                    if errno != 0 {
                        return Err(refused(
                            format!("nf_tables batch on table inet {table}"),
                            errno,
                        ));
                    }
                    continue;
                }
                let i = (rel - 1) as usize;
                if let Some(a) = self.answered.get_mut(i)
                    && !*a
                {
                    *a = true;
                    waiting -= 1;
                }
                if errno != 0 && first.is_none_or(|(j, _)| i < j) {
                    first = Some((i, errno));
                }
            }
        }
        match first {
            None => Ok(()),
            Some((i, errno)) => {
                let op = self.msg_ops.get(i).copied().unwrap_or_default();
                let what = ops
                    .get(op)
                    .map_or_else(|| format!("ops[{op}]"), |o| o.describe(op, table));
                Err(refused(what, errno))
            }
        }
    }

    /// The elements of set `inet <table> <set>`, declared with a
    /// per-element `counter`, as `(key, packets, bytes)`. Keys are
    /// decoded as `kind` (a key of another length is an error). Handles
    /// both one expression per element (`NFTA_SET_ELEM_EXPR`) and a list
    /// (`NFTA_SET_ELEM_EXPRESSIONS`). Sorted by key.
    ///
    /// A set is dumped in several datagrams and the kernel resumes each by
    /// element index, so a dump that overlaps a change to the set can be
    /// inconsistent. One flagged `NLM_F_DUMP_INTR`, or with a key twice (a
    /// hash set resized or grown meanwhile), is retried (4 attempts, then an
    /// error). An element deleted concurrently can still make one other
    /// element miss one dump without any sign: treat an element absent from
    /// one dump as unknown, not gone.
    pub fn counters(
        &mut self,
        table: &str,
        set: &str,
        kind: ValueKind,
    ) -> Result<Vec<(Value, u64, u64)>, NftError> {
        let mut out = Vec::new();
        for _ in 0..DUMP_ATTEMPTS {
            out.clear();
            let seq = self.next_seq();
            encode_dump(&mut self.tx, seq, table, set)?;
            self.send()?;
            let mut interrupted = false;
            // The first problem; the dump is still read to its end so the
            // socket is free for the next request.
            let mut failure: Option<NftError> = None;
            'dump: loop {
                let n = self.recv()?;
                for m in Messages::new(self.rx.get(..n).unwrap_or_default()) {
                    let m = match m {
                        Ok(m) => m,
                        Err(e) => {
                            failure.get_or_insert(e);
                            break;
                        }
                    };
                    if m.seq != seq {
                        continue;
                    }
                    if m.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match m.ty {
                        NLMSG_DONE => {
                            // An int: 0, or a negative errno if the dump failed.
                            let err = array::<4>(m.payload, 0).map_or(0, i32::from_ne_bytes);
                            if err < 0 {
                                failure.get_or_insert(refused(
                                    format!("dump set inet {table} {set}"),
                                    err.saturating_neg(),
                                ));
                            }
                            break 'dump;
                        }
                        NLMSG_ERROR => match ack_errno(m.payload) {
                            Ok(0) => {}
                            Ok(errno) => {
                                failure.get_or_insert(refused(
                                    format!("dump set inet {table} {set}"),
                                    errno,
                                ));
                                break 'dump;
                            }
                            Err(e) => {
                                failure.get_or_insert(e);
                                break 'dump;
                            }
                        },
                        NLMSG_OVERRUN => {
                            failure.get_or_insert(NftError::Malformed("NLMSG_OVERRUN".into()));
                        }
                        SETELEM_NEW if failure.is_none() => {
                            if let Err(e) = parse_setelem(m.payload, kind, &mut out) {
                                failure = Some(e);
                            }
                        }
                        _ => {}
                    }
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            // The kernel resumes a multi-datagram dump by element index: a
            // hash set resized (or changed) meanwhile is walked in another
            // order, which shows as a key dumped twice. Retry then.
            out.sort_unstable_by_key(|e| e.0);
            let twice = out.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0));
            if !interrupted && !twice {
                return Ok(out);
            }
        }
        Err(NftError::Failed(format!(
            "dump of set inet {table} {set} inconsistent (changed or resized while dumped) \
             {DUMP_ATTEMPTS} times"
        )))
    }

    /// Deletes the UDP conntrack entry whose original or reply tuple is
    /// `src -> dst` (the kernel finds an entry by either direction).
    /// `Ok(false)`: there was none.
    pub fn delete_conntrack(&mut self, src: SocketAddr, dst: SocketAddr) -> Result<bool, NftError> {
        let seq = self.next_seq();
        encode_ct_delete(&mut self.tx, seq, src, dst)?;
        self.send()?;
        match self.wait_ack(seq)? {
            0 => Ok(true),
            libc::ENOENT => Ok(false),
            errno => Err(refused(
                format!("delete conntrack udp {src} -> {dst}"),
                errno,
            )),
        }
    }
}

// ---- encoding ----

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends an `nlmsghdr` (length patched by [`msg_end`]) and an `nfgenmsg`.
fn msg_begin(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid: 0, the kernel.
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(family);
    buf.push(NFNETLINK_V0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

fn msg_end(buf: &mut [u8], start: usize) -> Result<(), NftError> {
    let len = u32::try_from(buf.len().saturating_sub(start))
        .map_err(|_| NftError::Invalid("netlink message over 4 GiB".into()))?;
    if let Some(h) = buf.get_mut(start..start + 4) {
        h.copy_from_slice(&len.to_ne_bytes());
    }
    Ok(())
}

fn attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) -> Result<(), NftError> {
    attr_parts(buf, ty, &[data])
}

/// A NUL-terminated string attribute.
fn attr_strz(buf: &mut Vec<u8>, ty: u16, s: &str) -> Result<(), NftError> {
    attr_parts(buf, ty, &[s.as_bytes(), &[0]])
}

/// An attribute whose payload is `parts` one after the other, padded.
fn attr_parts(buf: &mut Vec<u8>, ty: u16, parts: &[&[u8]]) -> Result<(), NftError> {
    let data_len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u16::try_from(NLA_HDRLEN + data_len)
        .map_err(|_| NftError::Invalid(format!("attribute {ty} too long")))?;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    for p in parts {
        buf.extend_from_slice(p);
    }
    buf.resize(align4(buf.len()), 0);
    Ok(())
}

fn value_attr(buf: &mut Vec<u8>, ty: u16, v: &Value) {
    // Values are 4..=40 bytes, multiples of 4: no padding, no overflow.
    let len = (NLA_HDRLEN + v.kind().size()) as u16;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    v.encode(buf);
}

fn nest_begin(buf: &mut Vec<u8>, ty: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    start
}

fn nest_end(buf: &mut [u8], start: usize) -> Result<(), NftError> {
    let len = u16::try_from(buf.len().saturating_sub(start))
        .map_err(|_| NftError::Invalid("nested attribute over 64 KiB".into()))?;
    if let Some(h) = buf.get_mut(start..start + 2) {
        h.copy_from_slice(&len.to_ne_bytes());
    }
    Ok(())
}

fn check_name(what: &str, name: &str) -> Result<(), NftError> {
    if name.is_empty() || name.len() >= NFT_NAME_MAXLEN || name.contains('\0') {
        return Err(NftError::Invalid(format!(
            "{what} name {name:?}: 1 to {} bytes, no NUL",
            NFT_NAME_MAXLEN - 1
        )));
    }
    Ok(())
}

/// Bytes one element takes in an `NFTA_SET_ELEM_LIST_ELEMENTS` nest.
fn element_len(key: &Value, data: Option<&Value>) -> usize {
    // LIST_ELEM { KEY { DATA_VALUE } [DATA { DATA_VALUE }] }
    NLA_HDRLEN
        + 2 * NLA_HDRLEN
        + key.kind().size()
        + data.map_or(0, |d| 2 * NLA_HDRLEN + d.kind().size())
}

/// Encodes `ops` as one batch into `buf` (cleared first): BATCH_BEGIN with
/// `seq`, op messages with the following seqs (`msg_ops` gets each one's op
/// index), BATCH_END.
fn encode_batch(
    buf: &mut Vec<u8>,
    seq: u32,
    table: &str,
    ops: &[SetOp<'_>],
    msg_ops: &mut Vec<usize>,
) -> Result<(), NftError> {
    check_name("table", table)?;
    buf.clear();
    msg_ops.clear();
    let b = msg_begin(
        buf,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
    );
    msg_end(buf, b)?;
    let mut next = seq.wrapping_add(1);
    for (index, op) in ops.iter().enumerate() {
        check_name("set", op.set())?;
        let (ty, flags) = op.header();
        // (message start, elements nest start) of the open message.
        let mut open: Option<(usize, usize)> = None;
        for i in 0..op.len() {
            let Some((key, data)) = op.item(i) else {
                break;
            };
            let need = element_len(key, data);
            if let Some((m, n)) = open
                && buf.len() - n + need > MAX_ELEMENTS_NEST
            {
                nest_end(buf, n)?;
                msg_end(buf, m)?;
                open = None;
            }
            if open.is_none() {
                let m = msg_begin(buf, ty, flags, next, NFPROTO_INET, 0);
                next = next.wrapping_add(1);
                attr_strz(buf, NFTA_SET_ELEM_LIST_TABLE, table)?;
                attr_strz(buf, NFTA_SET_ELEM_LIST_SET, op.set())?;
                let n = nest_begin(buf, NFTA_SET_ELEM_LIST_ELEMENTS);
                msg_ops.push(index);
                open = Some((m, n));
            }
            let e = nest_begin(buf, NFTA_LIST_ELEM);
            let k = nest_begin(buf, NFTA_SET_ELEM_KEY);
            value_attr(buf, NFTA_DATA_VALUE, key);
            nest_end(buf, k)?;
            if let Some(d) = data {
                let k = nest_begin(buf, NFTA_SET_ELEM_DATA);
                value_attr(buf, NFTA_DATA_VALUE, d);
                nest_end(buf, k)?;
            }
            nest_end(buf, e)?;
        }
        if let Some((m, n)) = open {
            nest_end(buf, n)?;
            msg_end(buf, m)?;
        }
    }
    let e = msg_begin(
        buf,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        next,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
    );
    msg_end(buf, e)
}

/// `NFT_MSG_GETSETELEM` dump request for one set.
fn encode_dump(buf: &mut Vec<u8>, seq: u32, table: &str, set: &str) -> Result<(), NftError> {
    check_name("table", table)?;
    check_name("set", set)?;
    buf.clear();
    let m = msg_begin(
        buf,
        SETELEM_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
    );
    attr_strz(buf, NFTA_SET_ELEM_LIST_TABLE, table)?;
    attr_strz(buf, NFTA_SET_ELEM_LIST_SET, set)?;
    msg_end(buf, m)
}

/// `IPCTNL_MSG_CT_DELETE` of the UDP tuple `src -> dst`.
fn encode_ct_delete(
    buf: &mut Vec<u8>,
    seq: u32,
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<(), NftError> {
    buf.clear();
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => {
            return Err(NftError::Invalid(format!(
                "conntrack tuple {src} -> {dst} mixes address families"
            )));
        }
    };
    let m = msg_begin(
        buf,
        CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family as u8,
        0,
    );
    let orig = nest_begin(buf, CTA_TUPLE_ORIG);
    let ip = nest_begin(buf, CTA_TUPLE_IP);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            attr(buf, CTA_IP_V4_SRC, &s.octets())?;
            attr(buf, CTA_IP_V4_DST, &d.octets())?;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            attr(buf, CTA_IP_V6_SRC, &s.octets())?;
            attr(buf, CTA_IP_V6_DST, &d.octets())?;
        }
        _ => {}
    }
    nest_end(buf, ip)?;
    let proto = nest_begin(buf, CTA_TUPLE_PROTO);
    attr(buf, CTA_PROTO_NUM, &[IPPROTO_UDP])?;
    attr(buf, CTA_PROTO_SRC_PORT, &src.port().to_be_bytes())?;
    attr(buf, CTA_PROTO_DST_PORT, &dst.port().to_be_bytes())?;
    nest_end(buf, proto)?;
    nest_end(buf, orig)?;
    msg_end(buf, m)
}

// ---- decoding ----

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Msg<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    /// After the `nlmsghdr`, up to `nlmsg_len`.
    payload: &'a [u8],
}

/// The messages of a datagram; a length that does not fit ends the walk
/// with an error.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Messages { rest: buf }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, NftError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let head = match array::<NLMSG_HDRLEN>(rest, 0) {
            Ok(h) => h,
            Err(_) => {
                return Some(Err(NftError::Malformed(format!(
                    "{} trailing bytes, shorter than a netlink header",
                    rest.len()
                ))));
            }
        };
        let [l0, l1, l2, l3, t0, t1, f0, f1, s0, s1, s2, s3, ..] = head;
        let len = u32::from_ne_bytes([l0, l1, l2, l3]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Some(Err(NftError::Malformed(format!(
                "netlink message length {len} with {} bytes left",
                rest.len()
            ))));
        }
        let payload = rest.get(NLMSG_HDRLEN..len).unwrap_or_default();
        self.rest = rest.get(align4(len).min(rest.len())..).unwrap_or_default();
        Some(Ok(Msg {
            ty: u16::from_ne_bytes([t0, t1]),
            flags: u16::from_ne_bytes([f0, f1]),
            seq: u32::from_ne_bytes([s0, s1, s2, s3]),
            payload,
        }))
    }
}

/// The attributes in `buf`: (type without the flag bits, payload).
struct Attrs<'a> {
    rest: &'a [u8],
}

fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { rest: buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), NftError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let Ok([l0, l1, t0, t1]) = array::<NLA_HDRLEN>(rest, 0) else {
            return Some(Err(NftError::Malformed(format!(
                "{} trailing bytes, shorter than an attribute header",
                rest.len()
            ))));
        };
        let len = usize::from(u16::from_ne_bytes([l0, l1]));
        if len < NLA_HDRLEN || len > rest.len() {
            return Some(Err(NftError::Malformed(format!(
                "attribute length {len} with {} bytes left",
                rest.len()
            ))));
        }
        let data = rest.get(NLA_HDRLEN..len).unwrap_or_default();
        self.rest = rest.get(align4(len).min(rest.len())..).unwrap_or_default();
        Some(Ok((u16::from_ne_bytes([t0, t1]) & NLA_TYPE_MASK, data)))
    }
}

/// The errno of an `NLMSG_ERROR` payload (`struct nlmsgerr`): 0 for an ack.
fn ack_errno(payload: &[u8]) -> Result<i32, NftError> {
    let error = i32::from_ne_bytes(array::<4>(payload, 0)?);
    if error > 0 {
        return Err(NftError::Malformed(format!("nlmsgerr.error {error} > 0")));
    }
    Ok(error.saturating_neg())
}

/// The `NFTA_DATA_VALUE` inside an `nft_data` nest.
fn data_value(nest: &[u8]) -> Result<&[u8], NftError> {
    for a in attrs(nest) {
        let (ty, data) = a?;
        if ty == NFTA_DATA_VALUE {
            return Ok(data);
        }
    }
    Err(NftError::Malformed("key without NFTA_DATA_VALUE".into()))
}

fn be64(data: &[u8]) -> Result<u64, NftError> {
    if data.len() != 8 {
        return Err(NftError::Malformed(format!(
            "a 64-bit counter attribute of {} bytes",
            data.len()
        )));
    }
    array::<8>(data, 0).map(u64::from_be_bytes)
}

/// (packets, bytes) if `nest` (`nft_expr_attributes`) is a counter.
fn counter_expr(nest: &[u8]) -> Result<Option<(u64, u64)>, NftError> {
    let mut name: Option<&[u8]> = None;
    let mut body: Option<&[u8]> = None;
    for a in attrs(nest) {
        match a? {
            (NFTA_EXPR_NAME, n) => name = Some(n),
            (NFTA_EXPR_DATA, d) => body = Some(d),
            _ => {}
        }
    }
    let is_counter = name.is_some_and(|n| {
        let end = n.iter().position(|&b| b == 0).unwrap_or(n.len());
        n.get(..end) == Some(b"counter".as_slice())
    });
    if !is_counter {
        return Ok(None);
    }
    let (mut packets, mut bytes) = (None, None);
    for a in attrs(body.unwrap_or_default()) {
        match a? {
            (NFTA_COUNTER_PACKETS, d) => packets = Some(be64(d)?),
            (NFTA_COUNTER_BYTES, d) => bytes = Some(be64(d)?),
            _ => {}
        }
    }
    match (packets, bytes) {
        (Some(p), Some(b)) => Ok(Some((p, b))),
        _ => Err(NftError::Malformed(
            "counter expression without packets and bytes".into(),
        )),
    }
}

/// One `NFTA_LIST_ELEM` of a dump: `None` for elements without a key
/// (catch-all, interval end).
fn parse_element(nest: &[u8], kind: ValueKind) -> Result<Option<(Value, u64, u64)>, NftError> {
    let mut key = None;
    let mut flags = 0u32;
    let mut counter = None;
    for a in attrs(nest) {
        match a? {
            (NFTA_SET_ELEM_KEY, d) => key = Some(data_value(d)?),
            (NFTA_SET_ELEM_FLAGS, d) => flags = u32::from_be_bytes(array::<4>(d, 0)?),
            (NFTA_SET_ELEM_EXPR, d) => {
                if let Some(c) = counter_expr(d)? {
                    counter = Some(c);
                }
            }
            (NFTA_SET_ELEM_EXPRESSIONS, d) => {
                for e in attrs(d) {
                    if let (NFTA_LIST_ELEM, x) = e?
                        && let Some(c) = counter_expr(x)?
                    {
                        counter = Some(c);
                    }
                }
            }
            _ => {}
        }
    }
    if flags & (NFT_SET_ELEM_INTERVAL_END | NFT_SET_ELEM_CATCHALL) != 0 {
        return Ok(None);
    }
    let Some(key) = key else {
        return Ok(None);
    };
    let key = Value::decode(kind, key)?;
    let Some((packets, bytes)) = counter else {
        return Err(NftError::Invalid(format!(
            "element {key:?} has no counter: declare the set with `counter;`"
        )));
    };
    Ok(Some((key, packets, bytes)))
}

/// The elements of one `NFT_MSG_NEWSETELEM` dump message, appended to `out`.
fn parse_setelem(
    payload: &[u8],
    kind: ValueKind,
    out: &mut Vec<(Value, u64, u64)>,
) -> Result<(), NftError> {
    let body = payload
        .get(NFGENMSG_LEN..)
        .ok_or_else(|| NftError::Malformed("set element message without nfgenmsg".into()))?;
    for a in attrs(body) {
        let (ty, list) = a?;
        if ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for e in attrs(list) {
            let (ety, elem) = e?;
            if ety == NFTA_LIST_ELEM
                && let Some(c) = parse_element(elem, kind)?
            {
                out.push(c);
            }
        }
    }
    Ok(())
}

/// Walks `data` as a kernel reply datagram the way [`Netlink::counters`]
/// does (messages, then set elements of every key kind): never panics,
/// whatever the bytes. Returns how many `ipv4 . port . ipv4 . port` elements
/// with counters it decoded. For the fuzz target `nft_reply`.
pub fn fuzz_reply(data: &[u8]) -> usize {
    let mut out = Vec::new();
    let mut v4_tuples = 0;
    for m in Messages::new(data) {
        let Ok(m) = m else {
            break;
        };
        let _ = ack_errno(m.payload);
        for kind in [
            ValueKind::V4Port,
            ValueKind::V6Port,
            ValueKind::V4Tuple,
            ValueKind::V6Tuple,
            ValueKind::Mark,
        ] {
            out.clear();
            if parse_setelem(m.payload, kind, &mut out).is_ok() {
                for (v, _, _) in &out {
                    assert_eq!(v.kind(), kind, "a decoded key has the asked kind");
                }
                if kind == ValueKind::V4Tuple {
                    v4_tuples += out.len();
                }
            }
        }
    }
    v4_tuples
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn values_encode_as_nftables_stores_them() {
        let mut b = Vec::new();
        Value::V4Port(v4("127.0.0.2"), 20002).encode(&mut b);
        assert_eq!(b, [127, 0, 0, 2, 0x4e, 0x22, 0, 0]);
        b.clear();
        Value::V4Tuple(v4("127.0.0.10"), 4000, v4("127.0.0.1"), 20000).encode(&mut b);
        assert_eq!(
            b,
            [
                127, 0, 0, 10, 0x0f, 0xa0, 0, 0, 127, 0, 0, 1, 0x4e, 0x20, 0, 0
            ]
        );
        b.clear();
        Value::Mark(2).encode(&mut b);
        assert_eq!(b, 2u32.to_ne_bytes());
        for v in [
            Value::V4Port(v4("1.2.3.4"), 5),
            Value::V6Port(Ipv6Addr::LOCALHOST, 6),
            Value::V4Tuple(v4("1.2.3.4"), 5, v4("6.7.8.9"), 10),
            Value::V6Tuple(
                Ipv6Addr::LOCALHOST,
                1,
                "2001:db8::1".parse().unwrap(),
                65535,
            ),
            Value::Mark(0xdead_beef),
        ] {
            b.clear();
            v.encode(&mut b);
            assert_eq!(b.len(), v.kind().size(), "{v:?}");
            assert_eq!(Value::decode(v.kind(), &b).unwrap(), v);
        }
        // The length decides nothing by itself: the caller names the kind.
        assert!(Value::decode(ValueKind::V6Port, &[0; 16]).is_err());
        assert!(Value::decode(ValueKind::V4Tuple, &[0; 15]).is_err());
    }

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    #[test]
    fn batch_is_byte_exact() {
        let mut buf = Vec::new();
        let mut msg_ops = Vec::new();
        let keys = [Value::Mark(7)];
        encode_batch(
            &mut buf,
            100,
            "t",
            &[SetOp::Delete {
                set: "m",
                keys: &keys,
            }],
            &mut msg_ops,
        )
        .unwrap();
        let mut want: Vec<u8> = Vec::new();
        // BATCH_BEGIN: len 20, type 0x10, NLM_F_REQUEST, seq 100, pid 0,
        // nfgenmsg { AF_UNSPEC, V0, res_id = htons(NFNL_SUBSYS_NFTABLES) }.
        want.extend(20u32.to_ne_bytes());
        want.extend(ne16(0x10));
        want.extend(ne16(1));
        want.extend(100u32.to_ne_bytes());
        want.extend(0u32.to_ne_bytes());
        want.extend([0, 0, 0, 10]);
        // DELSETELEM: 20 + table(8) + set(8) + elements(4 + 4 + 4 + 4 + 4) = 56.
        want.extend(56u32.to_ne_bytes());
        want.extend(ne16(0x0a0e));
        want.extend(ne16(NLM_F_REQUEST | NLM_F_ACK));
        want.extend(101u32.to_ne_bytes());
        want.extend(0u32.to_ne_bytes());
        want.extend([1, 0, 0, 0]);
        want.extend(ne16(6));
        want.extend(ne16(1));
        want.extend(*b"t\0\0\0");
        want.extend(ne16(6));
        want.extend(ne16(2));
        want.extend(*b"m\0\0\0");
        want.extend(ne16(20));
        want.extend(ne16(3 | 0x8000));
        want.extend(ne16(16));
        want.extend(ne16(1 | 0x8000));
        want.extend(ne16(12));
        want.extend(ne16(1 | 0x8000));
        want.extend(ne16(8));
        want.extend(ne16(1));
        want.extend(7u32.to_ne_bytes());
        // BATCH_END, seq 102.
        want.extend(20u32.to_ne_bytes());
        want.extend(ne16(0x11));
        want.extend(ne16(1));
        want.extend(102u32.to_ne_bytes());
        want.extend(0u32.to_ne_bytes());
        want.extend([0, 0, 0, 10]);
        assert_eq!(buf, want);
        assert_eq!(msg_ops, [0]);
    }

    #[test]
    fn conntrack_delete_is_byte_exact() {
        let mut buf = Vec::new();
        encode_ct_delete(
            &mut buf,
            9,
            "1.2.3.4:5".parse().unwrap(),
            "6.7.8.9:10".parse().unwrap(),
        )
        .unwrap();
        let mut want: Vec<u8> = Vec::new();
        want.extend(72u32.to_ne_bytes());
        want.extend(ne16(0x0102));
        want.extend(ne16(NLM_F_REQUEST | NLM_F_ACK));
        want.extend(9u32.to_ne_bytes());
        want.extend(0u32.to_ne_bytes());
        want.extend([2, 0, 0, 0]);
        // CTA_TUPLE_ORIG { CTA_TUPLE_IP { SRC, DST }, CTA_TUPLE_PROTO { NUM, SPORT, DPORT } }
        want.extend(ne16(52));
        want.extend(ne16(1 | 0x8000));
        want.extend(ne16(20));
        want.extend(ne16(1 | 0x8000));
        want.extend(ne16(8));
        want.extend(ne16(1));
        want.extend([1, 2, 3, 4]);
        want.extend(ne16(8));
        want.extend(ne16(2));
        want.extend([6, 7, 8, 9]);
        want.extend(ne16(28));
        want.extend(ne16(2 | 0x8000));
        want.extend(ne16(5));
        want.extend(ne16(1));
        want.extend([17, 0, 0, 0]);
        want.extend(ne16(6));
        want.extend(ne16(2));
        want.extend([0, 5, 0, 0]);
        want.extend(ne16(6));
        want.extend(ne16(3));
        want.extend([0, 10, 0, 0]);
        assert_eq!(buf, want);
        assert!(
            encode_ct_delete(
                &mut buf,
                1,
                "1.2.3.4:5".parse().unwrap(),
                "[::1]:5".parse().unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn big_ops_split_into_messages_under_64k() {
        let elements: Vec<(Value, Option<Value>)> = (0..10_000u32)
            .map(|i| {
                (
                    Value::V4Tuple(Ipv4Addr::from(i), 1, Ipv4Addr::from(i), 2),
                    None,
                )
            })
            .collect();
        let keys = [Value::Mark(1)];
        let ops = [
            SetOp::Add {
                set: "fwd4",
                elements: &elements,
            },
            SetOp::Delete {
                set: "m",
                keys: &keys,
            },
            SetOp::Delete {
                set: "m",
                keys: &[],
            },
        ];
        let mut buf = Vec::new();
        let mut msg_ops = Vec::new();
        encode_batch(&mut buf, 1, "t", &ops, &mut msg_ops).unwrap();
        // 28 bytes per element: 10,000 elements need 5 messages of < 60,000 bytes.
        assert_eq!(msg_ops, [0, 0, 0, 0, 0, 1]);
        let mut seqs = Vec::new();
        let mut elems = 0;
        for m in Messages::new(&buf) {
            let m = m.unwrap();
            seqs.push(m.seq);
            if m.ty == SETELEM_NEW {
                for a in attrs(&m.payload[4..]) {
                    let (ty, d) = a.unwrap();
                    if ty == NFTA_SET_ELEM_LIST_ELEMENTS {
                        elems += attrs(d).count();
                    }
                }
            }
        }
        assert_eq!(elems, 10_000);
        assert_eq!(seqs, (1..=8).collect::<Vec<u32>>());
        assert!(encode_batch(&mut buf, 1, "", &ops, &mut msg_ops).is_err());
        assert!(
            encode_batch(
                &mut buf,
                1,
                "t",
                &[SetOp::Delete {
                    set: "a\0b",
                    keys: &keys
                }],
                &mut msg_ops
            )
            .is_err()
        );
    }

    /// A dump message as the kernel builds it.
    fn dump_msg(seq: u32, elems: &[(Value, u64, u64, bool)]) -> Vec<u8> {
        let mut b = Vec::new();
        let m = msg_begin(&mut b, SETELEM_NEW, 2, seq, NFPROTO_INET, 0);
        attr_strz(&mut b, NFTA_SET_ELEM_LIST_TABLE, "t").unwrap();
        attr_strz(&mut b, NFTA_SET_ELEM_LIST_SET, "fwd4").unwrap();
        let list = nest_begin(&mut b, NFTA_SET_ELEM_LIST_ELEMENTS);
        for (key, packets, bytes, many) in elems {
            let e = nest_begin(&mut b, NFTA_LIST_ELEM);
            let k = nest_begin(&mut b, NFTA_SET_ELEM_KEY);
            value_attr(&mut b, NFTA_DATA_VALUE, key);
            nest_end(&mut b, k).unwrap();
            let outer = if *many {
                Some(nest_begin(&mut b, NFTA_SET_ELEM_EXPRESSIONS))
            } else {
                None
            };
            let x = nest_begin(
                &mut b,
                if *many {
                    NFTA_LIST_ELEM
                } else {
                    NFTA_SET_ELEM_EXPR
                },
            );
            attr_strz(&mut b, NFTA_EXPR_NAME, "counter").unwrap();
            let d = nest_begin(&mut b, NFTA_EXPR_DATA);
            attr(&mut b, 3, &[]).unwrap(); // NFTA_COUNTER_PAD
            attr(&mut b, NFTA_COUNTER_BYTES, &bytes.to_be_bytes()).unwrap();
            attr(&mut b, NFTA_COUNTER_PACKETS, &packets.to_be_bytes()).unwrap();
            nest_end(&mut b, d).unwrap();
            nest_end(&mut b, x).unwrap();
            if let Some(o) = outer {
                nest_end(&mut b, o).unwrap();
            }
            nest_end(&mut b, e).unwrap();
        }
        nest_end(&mut b, list).unwrap();
        msg_end(&mut b, m).unwrap();
        b
    }

    #[test]
    fn dump_replies_decode() {
        let a = Value::V4Tuple(v4("127.0.0.10"), 4000, v4("127.0.0.1"), 20000);
        let c = Value::V4Tuple(v4("127.0.0.20"), 5000, v4("127.0.0.2"), 20002);
        let msg = dump_msg(5, &[(a, 3, 99, false), (c, 4, 132, true)]);
        let mut out = Vec::new();
        for m in Messages::new(&msg) {
            let m = m.unwrap();
            assert_eq!((m.ty, m.seq), (SETELEM_NEW, 5));
            parse_setelem(m.payload, ValueKind::V4Tuple, &mut out).unwrap();
        }
        assert_eq!(out, [(a, 3, 99), (c, 4, 132)]);
        // The wrong kind is an error, not a guess.
        let m = Messages::new(&msg).next().unwrap().unwrap();
        assert!(parse_setelem(m.payload, ValueKind::V6Port, &mut Vec::new()).is_err());
    }

    #[test]
    fn truncated_or_lying_replies_are_errors() {
        let a = Value::V4Tuple(v4("127.0.0.10"), 4000, v4("127.0.0.1"), 20000);
        let msg = dump_msg(5, &[(a, 3, 99, false)]);
        // Every truncation: the framing or the attribute walk fails, no panic.
        for cut in 0..msg.len() {
            let r: Result<Vec<Msg<'_>>, _> = Messages::new(&msg[..cut]).collect();
            if let Ok(ms) = r {
                for m in ms {
                    let _ = parse_setelem(m.payload, ValueKind::V4Tuple, &mut Vec::new());
                }
            }
        }
        assert!(
            Messages::new(&msg[..msg.len() - 1])
                .next()
                .unwrap()
                .is_err()
        );
        assert!(Messages::new(&msg[..10]).next().unwrap().is_err());
        // nlmsg_len larger than the datagram, and smaller than a header.
        let mut long = msg.clone();
        long[..4].copy_from_slice(&(msg.len() as u32 + 4).to_ne_bytes());
        assert!(Messages::new(&long).next().unwrap().is_err());
        let mut short = msg.clone();
        short[..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(Messages::new(&short).next().unwrap().is_err());
        // An attribute claiming more than its message holds: each byte of the
        // payload corrupted to a big length must fail or parse, never panic.
        for at in 0..msg.len() - NLMSG_HDRLEN {
            let mut bad = msg.clone();
            bad[NLMSG_HDRLEN + at] = 0xff;
            if let Some(Ok(m)) = Messages::new(&bad).next() {
                let _ = parse_setelem(m.payload, ValueKind::V4Tuple, &mut Vec::new());
            }
        }
        let m = Messages::new(&msg).next().unwrap().unwrap();
        let mut lying = m.payload.to_vec();
        // The ELEMENTS nest (after nfgenmsg, "t" and "fwd4") says 0xfff0 bytes.
        lying[24..26].copy_from_slice(&0xfff0u16.to_ne_bytes());
        assert!(parse_setelem(&lying, ValueKind::V4Tuple, &mut Vec::new()).is_err());
        // An attribute length below its header.
        lying[24..26].copy_from_slice(&2u16.to_ne_bytes());
        assert!(parse_setelem(&lying, ValueKind::V4Tuple, &mut Vec::new()).is_err());
        assert!(parse_setelem(&[1, 0], ValueKind::V4Tuple, &mut Vec::new()).is_err());
        // A counter that is not 8 bytes.
        assert!(be64(&[0; 4]).is_err());
    }

    #[test]
    fn elements_without_counter_or_key() {
        let mut b = Vec::new();
        let e = nest_begin(&mut b, NFTA_LIST_ELEM);
        let k = nest_begin(&mut b, NFTA_SET_ELEM_KEY);
        value_attr(&mut b, NFTA_DATA_VALUE, &Value::Mark(1));
        nest_end(&mut b, k).unwrap();
        nest_end(&mut b, e).unwrap();
        assert!(parse_element(&b[4..], ValueKind::Mark).is_err());
        // A catch-all element has no key: skipped.
        let mut c = Vec::new();
        attr(
            &mut c,
            NFTA_SET_ELEM_FLAGS,
            &NFT_SET_ELEM_CATCHALL.to_be_bytes(),
        )
        .unwrap();
        assert_eq!(parse_element(&c, ValueKind::Mark).unwrap(), None);
    }

    #[test]
    fn acks_and_errors_decode() {
        assert_eq!(ack_errno(&0i32.to_ne_bytes()).unwrap(), 0);
        let mut p = (-libc::ENOENT).to_ne_bytes().to_vec();
        p.extend([0; 16]);
        assert_eq!(ack_errno(&p).unwrap(), libc::ENOENT);
        assert!(ack_errno(&[0, 0]).is_err());
        assert!(ack_errno(&5i32.to_ne_bytes()).is_err());
        let e = refused("ops[1]: delete".into(), libc::ENOENT);
        assert!(e.to_string().contains("ENOENT"), "{e}");
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert!(matches!(
            refused("x".into(), libc::EPERM),
            NftError::Unavailable(_)
        ));
    }
}
