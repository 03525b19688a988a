#!/usr/bin/env bash
# Relay benchmark: the same fixed RTP load through (1) a bare recvmmsg/sendmmsg
# UDP forwarder (the user-space ceiling), (2) the Palisade relay driven through
# its `Relay` API, (3) Palisade's kernel forwarding (the nftables media table,
# conntrack NAT), (4) rtpengine in userspace (Debian rtpengine-daemon, driven
# over its ng protocol), and first a baseline "direct" phase where the
# generator sends the same load straight between its own peers, in one run.
#
# Two CPU figures per relay, both per million packets forwarded, measured from
# just before the load starts to just after it ends:
#   process CPU   utime+stime of the relay process (/proc/PID/stat)
#   machine added the whole machine's busy ticks (/proc/stat: user, nice,
#                 system, irq, softirq) minus those of the direct phase for
#                 the same offered load
# On loopback the kernel's work of delivering a packet is charged to whoever
# sends it, so a relay's own CPU includes or hides kernel work depending on
# who sends (and the kernel phase has no process doing anything): the machine
# figure is the honest one. Also prints packets per second achieved, loss,
# and the ratios. Not part of scripts/test.sh.
#
#   bench/media/run.sh                 # defaults below
#   SESSIONS=2000 RATE=200000 PACKETS=3000000 THREADS=1 bench/media/run.sh
#
# Everything runs inside a network namespace the script creates
# (palisade-relaybench-PID, deleted on exit whatever happens), on its
# loopback: the media table and conntrack never touch the host. Relays on
# 127.0.77.100-101 (rtpengine on 127.0.77.200), generator peers on
# 127.0.78.100-101. Needs root, `ip` and `nft`. Bounded: each phase sends
# PACKETS packets at RATE (default 15 s), is cut after 60 s of sending and
# killed after 90 s; relays stop by themselves after PACKETS/RATE + 30 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

SESSIONS=${SESSIONS:-1000}   # concurrent calls (both directions each)
RATE=${RATE:-100000}         # packets per second in total (1000 G.711 calls = 100k pps)
PACKETS=${PACKETS:-1500000}  # packets per phase
THREADS=${THREADS:-1}        # relay threads for bare, palisade and rtpengine
SOCKETS=4                    # generator sockets per side
LOSS_WARN=0.1                # % lost above which a phase is flagged
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
EX="$TARGET_DIR/release/examples"

for tool in ip nft; do
    command -v "$tool" >/dev/null || {
        echo "run.sh: \`$tool\` is missing (apt-get install iproute2 nftables)" >&2
        exit 1
    }
done
[ "$(id -u)" = 0 ] || {
    echo "run.sh: needs root (a network namespace, nftables, conntrack)" >&2
    exit 1
}

NS="palisade-relaybench-$$"
NS_MADE=0
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    exec 3>&- 2>/dev/null || true  # the kernel forwarder stops at EOF
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$NS_MADE" = 1 ]; then
        ip netns del "$NS" 2>/dev/null || echo "run.sh: could not delete netns $NS" >&2
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v rtpengine >/dev/null || {
    echo "rtpengine missing: installing rtpengine-daemon" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rtpengine-daemon >/dev/null
}
cargo build --quiet --release -p palisade-relay --examples
cargo build --quiet --release -p palisade-nft --examples

ip netns add "$NS"
NS_MADE=1
ip netns exec "$NS" ip link set lo up
# In the namespace. Background processes are started with `ip netns exec`
# itself, never through a function (that would fork a subshell whose PID is
# not the relay's): ip execs the command in place, so $! is the relay.
nsx() { ip netns exec "$NS" "$@"; }

TCK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
busy() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8; exit}' /proc/stat; }

wait_ready() { # FILE PID
    for _ in $(seq 300); do
        grep -q '^ready' "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { cat "$1" >&2; return 1; }
        sleep 0.1
    done
    echo "not ready after 30 s" >&2; return 1
}

stop() { # PID: TERM, at most 10 s, then KILL
    kill "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    PIDS=()
}

check_pid() { # PID NAME: the measured PID must be the relay itself, not a wrapper
    local comm
    comm=$(cat "/proc/$1/comm")
    [ "$comm" = "${2:0:15}" ] || {
        echo "run.sh: PID $1 is \`$comm\`, not $2: its CPU would not be the relay's" >&2
        exit 1
    }
}

# Where packets were lost (the namespace's own counters, so only this run's):
# UDP datagrams dropped for a full receive buffer and sent to no socket
# (/proc/net/snmp), and the drops of the relay's sockets on 127.0.77.*
# (/proc/net/udp, last column; read before the relay stops).
udp_snmp() {
    nsx awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) n[$i] = i; h = 1 }
        else { print $n["RcvbufErrors"], $n["NoPorts"]; exit } }' /proc/net/snmp
}
relay_drops() { nsx awk 'NR > 1 && substr($2, 3, 6) == "4D007F" { s += $NF } END { print s + 0 }' /proc/net/udp; }

RESULTS="$TMP/results"
: > "$RESULTS"
measure() { # NAME PID|- [blast args...]
    local name=$1 pid=$2; shift 2
    local t0=0 t1=0 b0 b1 out s0 s1 line
    s0=($(udp_snmp))
    [ "$pid" = - ] || t0=$(ticks "$pid")
    b0=$(busy)
    out=$(timeout 90 ip netns exec "$NS" "$EX/rtp_blast" --sessions "$SESSIONS" \
        --sockets "$SOCKETS" --rate "$RATE" --packets "$PACKETS" --max-seconds 60 "$@")
    b1=$(busy)
    [ "$pid" = - ] || t1=$(ticks "$pid")
    s1=($(udp_snmp))
    line="$out cpu_ticks=$((t1 - t0)) busy_ticks=$((b1 - b0)) rcvbuf_drops=$((s1[0] - s0[0]))"
    line+=" relay_drops=$(relay_drops) no_port=$((s1[1] - s0[1]))"
    echo "$name $line" >> "$RESULTS"
    echo "  $name: $line" >&2
}

SECS=$(( PACKETS / RATE + 30 ))
COMMON=(--sessions "$SESSIONS" --threads "$THREADS" --sockets "$SOCKETS" --seconds "$SECS")

echo "== direct (no relay: the generator's peers send to each other)" >&2
for ((i = 0; i < SESSIONS; i++)); do
    p=$(( 40000 + i % SOCKETS ))
    echo "127.0.78.101:$p 127.0.78.100:$p"
done > "$TMP/direct_targets"
measure direct - --targets "$TMP/direct_targets"

echo "== bare forwarder" >&2
ip netns exec "$NS" "$EX/bare_forwarder" "${COMMON[@]}" > "$TMP/bare.out" 2>&1 & PID=$!; PIDS+=("$PID")
wait_ready "$TMP/bare.out" "$PID"
check_pid "$PID" bare_forwarder
measure bare "$PID"
stop "$PID"

echo "== palisade relay (user space)" >&2
ip netns exec "$NS" "$EX/relay_server" "${COMMON[@]}" > "$TMP/palisade.out" 2>&1 & PID=$!; PIDS+=("$PID")
wait_ready "$TMP/palisade.out" "$PID"
check_pid "$PID" relay_server
measure palisade "$PID"
stop "$PID"

echo "== palisade kernel forwarding (nftables media table)" >&2
# Stopped by EOF on its stdin (a FIFO whose only writer is fd 3 here) so it
# removes its streams and table itself; the netns takes them along anyway.
mkfifo "$TMP/kernel.stop"
exec 3<> "$TMP/kernel.stop"
ip netns exec "$NS" "$EX/kernel_forwarder" --sessions "$SESSIONS" --sockets "$SOCKETS" --seconds "$SECS" \
    --table relaybench --eof-stops true < "$TMP/kernel.stop" 3>&- > "$TMP/kernel.out" 2>&1 &
PID=$!; PIDS+=("$PID")
wait_ready "$TMP/kernel.out" "$PID"
check_pid "$PID" kernel_forwarder
measure kernel "$PID"
exec 3>&-
for _ in $(seq 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PID" 2>/dev/null && echo "run.sh: kernel_forwarder did not stop within 30 s of EOF" >&2
stop "$PID"
cat "$TMP/kernel.out" >&2
counted=$(sed -n 's/^kernel packets=\([0-9]*\).*/\1/p' "$TMP/kernel.out")
sed -i "s/^kernel .*/& counted=${counted:-0}/" "$RESULTS"
if nsx nft list table inet relaybench >/dev/null 2>&1; then
    echo "run.sh: the media table outlived kernel_forwarder" >&2
fi

echo "== rtpengine (userspace)" >&2
ip netns exec "$NS" rtpengine --interface=127.0.77.200 --listen-ng=127.0.77.200:2223 --foreground --table=-1 \
    --port-min=30000 --port-max=39999 --num-threads="$THREADS" --log-level=2 --log-stderr \
    > "$TMP/rtpengine.log" 2>&1 & PID=$!; PIDS+=("$PID")
for _ in $(seq 50); do nsx python3 bench/media/ng.py ping 127.0.77.200:2223 2>/dev/null && break; sleep 0.2; done
check_pid "$PID" rtpengine
timeout 120 ip netns exec "$NS" python3 bench/media/ng.py setup 127.0.77.200:2223 "$SESSIONS" \
    127.0.78.100 127.0.78.101 40000 "$SOCKETS" "$TMP/targets"
measure rtpengine "$PID" --targets "$TMP/targets"
stop "$PID"

python3 - "$RESULTS" "$TCK" "$SESSIONS" "$RATE" "$THREADS" "$LOSS_WARN" <<'PY'
import sys
rows, tck, warn = {}, float(sys.argv[2]), float(sys.argv[6])
for line in open(sys.argv[1]):
    name, *kv = line.split()
    rows[name] = {k: float(v) for k, v in (x.split("=") for x in kv)}
print(f"\nload: {sys.argv[3]} sessions, {sys.argv[4]} packets/s offered, 172-byte RTP, "
      f"both directions, {sys.argv[5]} relay thread(s) (kernel: none)")
d = rows["direct"]
# The direct phase's machine busy time per packet sent: what generating and
# receiving the load costs by itself, subtracted from every relay's.
base = d["busy_ticks"] / d["sent"] if d["sent"] else 0.0
print(f"{'relay':<10} {'sent':>9} {'forwarded':>9} {'loss %':>7} {'pps':>8} "
      f"{'process CPU s/Mpkt':>18} {'machine CPU added s/Mpkt':>24}")
proc, mach, pps, flagged = {}, {}, {}, []
for name in ("direct", "bare", "palisade", "kernel", "rtpengine"):
    r = rows[name]
    mpkt = r["received"] / 1e6
    loss = 100.0 * (r["sent"] - r["received"]) / r["sent"] if r["sent"] else 100.0
    pps[name] = r["received"] / r["seconds"] if r["seconds"] else 0.0
    if loss > warn:
        flagged.append(f"{name} lost {loss:.3f} % ({r['sent'] - r['received']:.0f} packets)")
    if name == "direct":
        p = m = "-"
    else:
        proc[name] = r["cpu_ticks"] / tck / mpkt if mpkt else float("inf")
        mach[name] = (r["busy_ticks"] - base * r["sent"]) / tck / mpkt if mpkt else float("inf")
        p, m = f"{proc[name]:.3f}", f"{mach[name]:.3f}"
    print(f"{name:<10} {r['sent']:>9.0f} {r['received']:>9.0f} {loss:>7.3f} {pps[name]:>8.0f} "
          f"{p:>18} {m:>24}")
print(f"(direct: {d['busy_ticks'] / tck / (d['received'] / 1e6 or 1):.3f} s/Mpkt of machine CPU "
      f"to generate and receive the load, subtracted above)")
k = rows["kernel"]
if "counted" in k:
    print(f"(kernel: the media table's fwd counters saw {k['counted']:.0f} packets "
          f"of {k['sent']:.0f} sent)")
print("(UDP drops, full receive buffer at the relay's sockets / at the generator's; "
      "datagrams to no socket:")
for name in ("direct", "bare", "palisade", "kernel", "rtpengine"):
    r = rows[name]
    print(f"   {name:<10} {r['relay_drops']:.0f} / {r['rcvbuf_drops'] - r['relay_drops']:.0f}; "
          f"{r['no_port']:.0f}")
print(")")
def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"
print(f"\nprocess CPU per packet, palisade / rtpengine: {ratio(proc['palisade'], proc['rtpengine'])}")
print(f"process CPU per packet, kernel / rtpengine:   {ratio(proc['kernel'], proc['rtpengine'])}")
print(f"machine CPU added per packet, palisade / rtpengine: {ratio(mach['palisade'], mach['rtpengine'])}")
print(f"machine CPU added per packet, kernel / rtpengine:   {ratio(mach['kernel'], mach['rtpengine'])}")
print(f"packets per second, palisade / bare: {ratio(pps['palisade'], pps['bare'])}")
for f in flagged:
    print(f"WARNING: {f}")
PY
