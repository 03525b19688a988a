#!/usr/bin/env bash
# Relay benchmark: the same fixed RTP load through (1) a bare recvmmsg/sendmmsg
# UDP forwarder (the physical ceiling), (2) the Palisade relay driven through
# its `Relay` API, (3) rtpengine in userspace (Debian rtpengine-daemon, driven
# over its ng protocol), in one run. Prints CPU seconds per million packets
# forwarded (utime+stime of the relay process from /proc/PID/stat, measured
# from just before the load starts to just after it ends), packets per second
# achieved, loss, and the ratios. Not part of scripts/test.sh.
#
#   bench/media/run.sh                 # defaults below
#   SESSIONS=2000 RATE=200000 PACKETS=3000000 THREADS=1 bench/media/run.sh
#
# Everything runs on loopback: relays on 127.0.77.100-101 (rtpengine on
# 127.0.77.200), generator peers on 127.0.78.100-101. Bounded: each phase
# sends PACKETS packets at RATE (default 15 s) and is killed after 60 s.
set -euo pipefail
cd "$(dirname "$0")/../.."

SESSIONS=${SESSIONS:-1000}   # concurrent calls (both directions each)
RATE=${RATE:-100000}         # packets per second in total (1000 G.711 calls = 100k pps)
PACKETS=${PACKETS:-1500000}  # packets per phase
THREADS=${THREADS:-1}        # relay threads for all three
SOCKETS=4                    # generator sockets per side
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
EX="$TARGET_DIR/release/examples"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

command -v rtpengine >/dev/null || {
    echo "rtpengine missing: installing rtpengine-daemon" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rtpengine-daemon >/dev/null
}
cargo build --quiet --release -p palisade-relay --examples

TCK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_ready() { # FILE PID
    for _ in $(seq 300); do
        grep -q '^ready' "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { cat "$1" >&2; return 1; }
        sleep 0.1
    done
    echo "not ready after 30 s" >&2; return 1
}

RESULTS="$TMP/results"
: > "$RESULTS"
measure() { # NAME PID [blast args...]
    local name=$1 pid=$2; shift 2
    local t0 t1 out
    t0=$(ticks "$pid")
    out=$(timeout 90 "$EX/rtp_blast" --sessions "$SESSIONS" --sockets "$SOCKETS" --rate "$RATE" \
        --packets "$PACKETS" --max-seconds 60 "$@")
    t1=$(ticks "$pid")
    echo "$name $out cpu_ticks=$((t1 - t0))" >> "$RESULTS"
    echo "  $name: $out cpu_ticks=$((t1 - t0))" >&2
}

SECS=$(( PACKETS / RATE + 30 ))
COMMON=(--sessions "$SESSIONS" --threads "$THREADS" --sockets "$SOCKETS" --seconds "$SECS")

echo "== bare forwarder" >&2
"$EX/bare_forwarder" "${COMMON[@]}" > "$TMP/bare.out" 2>&1 & PID=$!; PIDS+=("$PID")
wait_ready "$TMP/bare.out" "$PID"
measure bare "$PID"
kill "$PID"; wait "$PID" 2>/dev/null || true

echo "== palisade relay" >&2
"$EX/relay_server" "${COMMON[@]}" > "$TMP/palisade.out" 2>&1 & PID=$!; PIDS+=("$PID")
wait_ready "$TMP/palisade.out" "$PID"
measure palisade "$PID"
kill "$PID"; wait "$PID" 2>/dev/null || true

echo "== rtpengine (userspace)" >&2
rtpengine --interface=127.0.77.200 --listen-ng=127.0.77.200:2223 --foreground --table=-1 \
    --port-min=30000 --port-max=39999 --num-threads="$THREADS" --log-level=2 --log-stderr \
    > "$TMP/rtpengine.log" 2>&1 & PID=$!; PIDS+=("$PID")
for _ in $(seq 50); do python3 bench/media/ng.py ping 127.0.77.200:2223 2>/dev/null && break; sleep 0.2; done
python3 bench/media/ng.py setup 127.0.77.200:2223 "$SESSIONS" 127.0.78.100 127.0.78.101 40000 "$SOCKETS" "$TMP/targets"
measure rtpengine "$PID" --targets "$TMP/targets"
kill "$PID"; wait "$PID" 2>/dev/null || true

python3 - "$RESULTS" "$TCK" "$SESSIONS" "$RATE" "$THREADS" <<'PY'
import sys
rows, tck = {}, float(sys.argv[2])
for line in open(sys.argv[1]):
    name, *kv = line.split()
    rows[name] = {k: float(v) for k, v in (x.split("=") for x in kv)}
print(f"\nload: {sys.argv[3]} sessions, {sys.argv[4]} packets/s offered, 172-byte RTP, "
      f"both directions, {sys.argv[5]} relay thread(s)")
print(f"{'relay':<10} {'sent':>9} {'forwarded':>9} {'loss %':>7} {'pps':>8} {'CPU s':>6} {'CPU s/Mpkt':>10}")
per = {}
for name in ("bare", "palisade", "rtpengine"):
    r = rows[name]
    cpu = r["cpu_ticks"] / tck
    per[name] = cpu / (r["received"] / 1e6) if r["received"] else float("inf")
    loss = 100.0 * (r["sent"] - r["received"]) / r["sent"]
    print(f"{name:<10} {r['sent']:>9.0f} {r['received']:>9.0f} {loss:>7.3f} "
          f"{r['received'] / r['seconds']:>8.0f} {cpu:>6.2f} {per[name]:>10.3f}")
print(f"\nCPU per packet, palisade / rtpengine: {per['palisade'] / per['rtpengine']:.2f}")
print(f"CPU per packet, palisade / bare:      {per['palisade'] / per['bare']:.2f}")
PY
