#!/usr/bin/env python3
"""Palisade against Kamailio + rtpengine: the same SIPp call flow, the same run.

    bench/sbc/run.py calls      CPU per 1000 calls, peak memory, failures, at one rate
    bench/sbc/run.py capacity   the highest call rate with zero failed calls, stepping up
    bench/sbc/run.py media      N concurrent calls with RTP: CPU per million relayed packets
    bench/sbc/run.py memory     N concurrent anchored calls held: memory per call
    bench/sbc/run.py all        all four (and bench/media/run.sh for the relay ceiling),
                                printed as Markdown; --results FILE writes bench/RESULTS.md

Both SBCs get the flow INVITE(SDP)/100/180/200(SDP)/ACK/BYE/200 from SIPp UAC/UAS pairs,
with media anchored and topology hiding on:

- palisade: the release binary (`cargo build --release -p palisade`), its inside zone on
  127.0.60.1, its outside zone on 127.0.60.2; UAC i on 127.0.60.(10+i), UAS i on
  127.0.60.(20+i). Guard and fraud off (the anchor has no pike/fraud either), logging at
  `info` (one line per call event, as shipped).
- anchor: Kamailio (Debian `kamailio`, kamailio.cfg.in: tm, rr, topoh, nathelper, sanity)
  on 127.0.61.1:5060 and rtpengine (Debian `rtpengine-daemon`, userspace, --table=-1,
  --delete-delay=0) on 127.0.61.1; UAC i on 127.0.61.(10+i), UAS i on 127.0.61.(20+i).

The CPU of an SBC is utime+stime (/proc/PID/stat) of all its processes (Kamailio's
children and rtpengine included), read just before the first call and after the last.
Memory is the peak over the run of the summed PSS (/proc/PID/smaps_rollup) of those
processes, sampled every 200 ms. SIPp's own CPU is not counted.

Media is also measured for the whole machine, so that work the kernel does for an SBC
(Palisade's kernel forwarding, or loopback delivery run in the sender's context) is not
hidden in SIPp's account: busy time from /proc/stat during the window, minus the same
window of a baseline run of the same SIPp load with no SBC in between (UAC to UAS
directly), per packet relayed. Relayed packets are counted by an nftables counter of the
benchmark's own on RTP delivered to SIPp's media sockets (each crossed the SBC once),
whichever way the SBC forwards them.

In the media mode Palisade runs with media.kernel_forwarding: on (plain RTP streams go to
conntrack NAT after 1 s), and once more with it off ("palisade-userspace"); the signalling
modes (calls, capacity, memory) carry no RTP and run it with the default (off), since its
table costs every packet a conntrack lookup.
The anchor's rtpengine runs in userspace (its kernel module is not loadable here).

Everything runs inside a network namespace the script creates (`ip netns add`), on its
loopback: Palisade's nftables tables and the counting table never touch the host's
ruleset. Every load is bounded: a fixed number of calls at a fixed rate, each SIPp
process killed after a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# One SIPp UAC/UAS pair carries about 1,000 calls per second on this kind of machine.
PAIR_CPS = 800
MAX_PAIRS = 8


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def proc_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return 0
    # The command name may contain spaces: fields start after the last ')'.
    rest = s[s.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def proc_kib_field(path: str, key: str) -> int:
    """A `key: N kB` line of a /proc file, in bytes; 0 if the process is gone."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_pss(pid: int) -> int:
    """Proportional set size of a process, in bytes; 0 if gone."""
    return proc_kib_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def proc_rss(pid: int) -> int:
    """Resident set size of a process, in bytes; 0 if gone."""
    return proc_kib_field(f"/proc/{pid}/status", "VmRSS:")


def children_of(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            with open(p / "stat") as f:
                s = f.read()
            ppid = int(s[s.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == pid:
            out.append(int(p.name))
    return out


def machine_busy() -> int:
    """Busy clock ticks of the whole machine (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6]


COUNT_TABLE = "bench_count"


def install_rtp_counter(prefix: str):
    """Counts UDP datagrams delivered to SIPp's media sockets on `prefix`.10-29 (every
    one crossed the SBC once, relayed in user space or forwarded by the kernel)."""
    rules = (f"add table inet {COUNT_TABLE}\ndelete table inet {COUNT_TABLE}\n"
             f"table inet {COUNT_TABLE} {{\n counter rtp_in {{ }}\n"
             f" chain input {{ type filter hook input priority 0; policy accept;\n"
             f"  ip daddr {prefix}.10-{prefix}.29 udp dport != {{ 5060, 5070, 5080 }} "
             f"counter name rtp_in\n }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)


def rtp_delivered() -> int:
    out = subprocess.run(["nft", "list", "counter", "inet", COUNT_TABLE, "rtp_in"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"packets (\d+)", out)
    return int(m.group(1)) if m else 0


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class MemSampler:
    """Samples the summed PSS of a set of processes until stopped; keeps the peak."""

    def __init__(self, pids_fn):
        self.pids_fn = pids_fn
        self.peak = 0
        self.last = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            v = sum(proc_pss(p) for p in self.pids_fn())
            self.last = v
            self.peak = max(self.peak, v)
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def wait_ng_pong(addr: str, port: int, timeout: float = 20.0):
    """Pings rtpengine over its ng protocol (bencode over UDP) until it answers."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    deadline = time.time() + timeout
    while time.time() < deadline:
        s.sendto(b"bench d7:command4:pinge", (addr, port))
        try:
            data, _ = s.recvfrom(4096)
            if b"pong" in data:
                s.close()
                return
        except OSError:
            pass
    s.close()
    raise RuntimeError(f"rtpengine on {addr}:{port} does not answer ng ping after {timeout}s")


def wait_udp_answer(addr: str, port: int, timeout: float = 20.0):
    """Sends OPTIONS with Max-Forwards 0 until something answers on addr:port
    (a proxy answers 483 instead of relaying it to itself)."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.59.1", 0))
    s.settimeout(0.2)
    lport = s.getsockname()[1]
    deadline = time.time() + timeout
    n = 0
    while time.time() < deadline:
        n += 1
        msg = (
            f"OPTIONS sip:{addr}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.59.1:{lport};branch=z9hG4bK-bench-{n}\r\n"
            f"From: <sip:bench@127.0.59.1>;tag=b{n}\r\nTo: <sip:{addr}>\r\n"
            f"Call-ID: bench-ready-{n}@127.0.59.1\r\nCSeq: {n} OPTIONS\r\n"
            "Max-Forwards: 0\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (addr, port))
        try:
            s.recvfrom(65535)
            s.close()
            return
        except OSError:
            pass
    s.close()
    raise RuntimeError(f"nothing answers OPTIONS on {addr}:{port} after {timeout}s")


# ---------------------------------------------------------------- the SBCs


@dataclass
class Net:
    """Where an SBC listens and where its SIPp pairs live."""

    sbc_a: str  # the address the UACs send to
    prefix: str  # 127.0.6x
    direct: bool = False  # no SBC: each UAC calls its UAS

    def uac(self, i):
        return f"{self.prefix}.{10 + i}"

    def uas(self, i):
        return f"{self.prefix}.{20 + i}"

    def target(self, i):
        return f"{self.uas(i)}:5080" if self.direct else f"{self.sbc_a}:5060"


class Sbc:
    name = ""
    net: Net

    def start(self, pairs: int, work: Path): ...

    def pids(self) -> list[int]: ...

    def stop(self) -> dict: ...


class Palisade(Sbc):
    name = "palisade"

    def __init__(self, binary: Path, level: str = "info", relay_threads: int = 0,
                 kernel_forwarding: str = "off", name: str = "palisade", prefix: str = "127.0.60"):
        self.binary = binary
        self.level = level
        self.relay_threads = relay_threads
        self.kernel_forwarding = kernel_forwarding
        self.name = name
        self.net = Net(f"{prefix}.1", prefix)
        self.proc = None

    def config(self, pairs: int) -> str:
        n = self.net
        trunks, routes = [], []
        for i in range(pairs):
            trunks.append(
                f"  - name: pbx{i}\n    zone: inside\n    members:\n"
                f"      - {{address: {n.uac(i)}, port: 5070, transport: udp}}\n"
                f"  - name: carrier{i}\n    zone: outside\n    members:\n"
                f"      - {{address: {n.uas(i)}, port: 5080, transport: udp}}\n"
            )
            routes.append(
                f"  - {{name: out{i}, from_trunk: pbx{i}, to_trunk: carrier{i}}}\n"
            )
        return (
            "# Rendered by bench/sbc/run.py.\n"
            "node: {name: palisade-bench}\n"
            "sip: {max_calls: 200000}\n"
            "zones:\n"
            f"  - name: inside\n    sip_address: {n.prefix}.1\n    transports: [udp]\n"
            f"    media: {{address: {n.prefix}.1, port_min: 10000, port_max: 59999}}\n"
            f"  - name: outside\n    sip_address: {n.prefix}.2\n    transports: [udp]\n"
            f"    media: {{address: {n.prefix}.2, port_min: 10000, port_max: 59999}}\n"
            "trunks:\n" + "".join(trunks) + "routes:\n" + "".join(routes) +
            f"media: {{relay_threads: {self.relay_threads}"
            + (f", kernel_forwarding: {self.kernel_forwarding}"
               if self.kernel_forwarding != "off" else "") + "}\n"
            "guard: {mode: off}\n"
            f"logging: {{format: text, level: {self.level}}}\n"
            "shutdown: {grace_seconds: 0}\n"
        )

    def start(self, pairs: int, work: Path):
        self.work = work
        cfg = work / "palisade.yaml"
        cfg.write_text(self.config(pairs))
        self.logf = open(work / "palisade.log", "w")
        self.proc = subprocess.Popen(
            [str(self.binary), "run", "--config", str(cfg)],
            stdout=self.logf,
            stderr=subprocess.STDOUT,
            cwd=work,
            preexec_fn=raise_nofile,
        )
        wait_udp_answer(self.net.sbc_a, 5060)

    def pids(self):
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def stop(self) -> dict:
        info = {}
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.logf.close()
            text = (self.work / "palisade.log").read_text(errors="replace")
            m = re.findall(r"final stats \(relay\).*", text)
            if m:
                info["relay"] = dict(re.findall(r"(\w+)=(\d+)", m[-1]))
            m = re.findall(r"final stats .*", text)
            info["final"] = m
        self.proc = None
        return info


class Direct(Sbc):
    """No SBC: the same SIPp load, each UAC calling its UAS (the media baseline)."""

    name = "direct (no SBC)"

    def __init__(self):
        self.net = Net("127.0.62.20", "127.0.62", direct=True)

    def start(self, pairs: int, work: Path):
        pass

    def pids(self):
        return []

    def stop(self) -> dict:
        return {}


class Anchor(Sbc):
    name = "kamailio+rtpengine"

    def __init__(self, children: int = 2):
        self.children = children
        self.net = Net("127.0.61.1", "127.0.61")
        self.kam = None
        self.rtp = None

    def start(self, pairs: int, work: Path):
        self.work = work
        ctl = work / "kamailio.ctl"
        cfg = (HERE / "kamailio.cfg.in").read_text()
        cfg = (
            cfg.replace("@LISTEN@", self.net.sbc_a)
            .replace("@CHILDREN@", str(self.children))
            .replace("@NG@", f"{self.net.sbc_a}:2223")
            .replace("@CTL@", str(ctl))
        )
        (work / "kamailio.cfg").write_text(cfg)
        self.rtp_log = open(work / "rtpengine.log", "w")
        self.rtp = subprocess.Popen(
            [
                "rtpengine",
                f"--interface={self.net.sbc_a}",
                f"--listen-ng={self.net.sbc_a}:2223",
                f"--listen-cli={self.net.sbc_a}:9900",
                "--foreground",
                "--table=-1",
                "--port-min=10000",
                "--port-max=59999",
                "--delete-delay=0",
                "--log-level=3",
                "--log-stderr",
                "--no-fallback",
                f"--pidfile={work}/rtpengine.pid",
            ],
            stdout=self.rtp_log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
        )
        wait_ng_pong(self.net.sbc_a, 2223)
        self.kam_log = open(work / "kamailio.log", "w")
        self.kam = subprocess.Popen(
            [
                "kamailio",
                "-f",
                str(work / "kamailio.cfg"),
                "-DD",
                "-E",
                "-m",
                "512",
                "-M",
                "32",
                "-P",
                str(work / "kamailio.pid"),
                "-Y",
                str(work),
            ],
            stdout=self.kam_log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
        )
        wait_udp_answer(self.net.sbc_a, 5060)
        time.sleep(0.5)
        if self.rtp.poll() is not None:
            raise RuntimeError("rtpengine exited; see " + str(work / "rtpengine.log"))

    def pids(self):
        out = []
        if self.kam and self.kam.poll() is None:
            out.append(self.kam.pid)
            out.extend(children_of(self.kam.pid))
        if self.rtp and self.rtp.poll() is None:
            out.append(self.rtp.pid)
        return out

    def relayed_packets(self) -> int | None:
        """rtpengine's own count of relayed packets (CLI `list totals`)."""
        try:
            out = subprocess.run(
                ["rtpengine-ctl", "-ip", self.net.sbc_a, "-port", "9900", "list", "totals"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        m = re.search(r"Total relayed packets\s*:\s*(\d+)", out)
        if not m:
            m = re.search(r"[Pp]ackets.*?relayed.*?:\s*(\d+)", out)
        return int(m.group(1)) if m else None

    def stop(self) -> dict:
        info = {"relayed_packets": self.relayed_packets()}
        for p in (self.kam, self.rtp):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.kam, self.rtp):
            if p:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.kam_log.close()
        self.rtp_log.close()
        self.kam = self.rtp = None
        return info


# ---------------------------------------------------------------- SIPp


@dataclass
class SippResult:
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    outgoing: int = 0
    exit_codes: list = field(default_factory=list)


def read_stat(csv: Path) -> dict:
    lines = [l for l in csv.read_text(errors="replace").splitlines() if l.strip()]
    if len(lines) < 2:
        return {}
    head = lines[0].rstrip(";").split(";")
    last = lines[-1].rstrip(";").split(";")
    return dict(zip(head, last))


def run_calls(
    sbc: Sbc,
    work: Path,
    pairs: int,
    rate: float,
    calls: int,
    hold_ms: int,
    rtp: bool = False,
    deadline_s: float | None = None,
    on_running=None,
    mux: bool = False,
) -> SippResult:
    """Starts `pairs` UAS, then `pairs` UAC each placing calls/pairs calls at rate/pairs."""
    n = sbc.net
    per_calls = [calls // pairs + (1 if i < calls % pairs else 0) for i in range(pairs)]
    per_rate = rate / pairs
    if deadline_s is None:
        deadline_s = calls / rate + hold_ms / 1000 + 60
    uas, uac = [], []
    for i in range(pairs):
        d = work / f"uas{i}"
        d.mkdir(exist_ok=True)
        args = ["sipp", "-sf", str(HERE / ("uas_mux.xml" if mux else "uas.xml")), "-i", n.uas(i), "-p", "5080",
                "-mi", n.uas(i), "-mp", "6000", "-nostdin", "-trace_err",
                "-trace_stat", "-stf", str(d / "stat.csv"), "-fd", "1",
                "-timeout", f"{int(deadline_s + 10)}s",
                "-max_recv_loops", "10000", "-max_sched_loops", "10000"]
        if rtp:
            args.append("-rtp_echo")
        uas.append(subprocess.Popen(args, cwd=d, stdout=subprocess.DEVNULL,
                                    stderr=open(d / "stderr", "w")))
    time.sleep(0.3)
    for i in range(pairs):
        d = work / f"uac{i}"
        d.mkdir(exist_ok=True)
        if rtp:
            shutil.copy(work / "tone.wav", d / "tone.wav")
        scen = "uac_rtp.xml" if rtp else ("uac_mux.xml" if mux else "uac.xml")
        args = ["sipp", "-sf", str(HERE / scen), "-i", n.uac(i), "-p", "5070",
                "-mi", n.uac(i), "-mp", "6000", "-key", "rhost", n.uas(i),
                "-r", f"{per_rate:.3f}", "-rp", "1000", "-m", str(per_calls[i]),
                "-l", str(max(1, int(per_rate * (hold_ms / 1000 + 5)) + 100)),
                "-d", str(hold_ms), "-nostdin", "-trace_err",
                # A proxy with several workers (Kamailio) may forward a 180 after
                # the 200: legal over UDP, and a UA ignores it; SIPp would abort.
                "-default_behaviors", "all,-abortunexp",
                "-trace_stat", "-stf", str(d / "stat.csv"), "-fd", "1",
                "-timeout", f"{int(deadline_s)}s", "-timeout_error",
                "-max_recv_loops", "10000", "-max_sched_loops", "10000",
                n.target(i)]
        if rtp:
            args[args.index("-mp") + 1] = "16000"
        uac.append(subprocess.Popen(args, cwd=d, stdout=subprocess.DEVNULL,
                                    stderr=open(d / "stderr", "w")))
    if on_running:
        on_running()
    res = SippResult()
    end = time.time() + deadline_s + 15
    for p in uac:
        try:
            p.wait(max(1, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        res.exit_codes.append(p.returncode)
    for i in range(pairs):
        st = read_stat(work / f"uac{i}" / "stat.csv")
        res.successful += int(st.get("SuccessfulCall(C)", 0))
        res.failed += int(st.get("FailedCall(C)", 0))
        res.retransmissions += int(st.get("Retransmissions(C)", 0))
        res.outgoing += int(st.get("OutgoingCall(C)", 0))
    # Calls SIPp never placed (it was too slow, or gave up) are failures too.
    res.failed += max(0, calls - res.successful - res.failed)
    for p in uas:
        p.terminate()
    for p in uas:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return res


def pairs_for(rate: float) -> int:
    return max(1, min(MAX_PAIRS, -(-int(rate) // PAIR_CPS)))


@dataclass
class Measured:
    sbc: str
    rate: float
    calls: int
    pairs: int
    cpu_s: float
    peak_bytes: int
    result: SippResult
    extra: dict

    @property
    def cpu_ms_per_call(self):
        return 1000 * self.cpu_s / max(1, self.result.successful)


def measure(sbc: Sbc, work: Path, rate, calls, hold_ms, rtp=False, pairs=None) -> Measured:
    pairs = pairs or pairs_for(rate)
    work.mkdir(parents=True, exist_ok=True)
    sbc.start(pairs, work)
    try:
        time.sleep(0.5)
        sampler = MemSampler(sbc.pids)
        t0 = sum(proc_ticks(p) for p in sbc.pids())
        res = run_calls(sbc, work, pairs, rate, calls, hold_ms, rtp=rtp)
        # Let the last BYE transactions finish.
        time.sleep(1.0)
        t1 = sum(proc_ticks(p) for p in sbc.pids())
        peak = sampler.stop()
    finally:
        extra = sbc.stop()
    m = Measured(sbc.name, rate, calls, pairs, (t1 - t0) / CLK_TCK, peak, res, extra)
    log(f"  {sbc.name:20} {rate:7.0f} cps x{calls:6}: ok {res.successful} failed {res.failed} "
        f"retrans {res.retransmissions} cpu {m.cpu_s:.2f}s = {m.cpu_ms_per_call:.3f} ms/call "
        f"peak {peak / 2**20:.1f} MiB")
    return m


# ---------------------------------------------------------------- modes


def sbcs(args, kernel_forwarding: str = "off") -> list[Sbc]:
    out = []
    for name in args.sbc.split(","):
        if name == "palisade":
            out.append(Palisade(args.palisade_bin, level=args.palisade_log_level,
                                kernel_forwarding=kernel_forwarding))
        elif name == "anchor":
            out.append(Anchor())
        else:
            raise SystemExit(f"unknown SBC {name!r} (palisade, anchor)")
    return out


def mode_calls(args, work: Path) -> dict:
    # Runs alternate between the SBCs, so a drift in the machine's speed
    # (other load, frequency) touches both alike; the best run of each counts.
    rows = {}
    all_sbcs = sbcs(args)
    for k in range(args.repeat):
        for sbc in all_sbcs:
            m = measure(sbc, work / f"calls-{sbc.name}-{k}", args.rate, args.calls, args.hold_ms)
            rows.setdefault(sbc.name, []).append(m)
    return rows


def mode_capacity(args, work: Path) -> dict:
    out = {}
    rates = [float(r) for r in args.rates.split(",")]
    for sbc in sbcs(args):
        best, steps = 0.0, []
        for r in rates:
            calls = int(r * args.step_seconds)
            m = measure(sbc, work / f"cap-{sbc.name}-{int(r)}", r, calls, args.hold_ms)
            steps.append(m)
            if m.result.failed == 0 and m.result.successful == calls:
                best = r
            else:
                break
        out[sbc.name] = {"best": best, "steps": steps}
    return out


def make_tone(path: Path, seconds: int = 4):
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", str(path),
                    "synth", str(seconds), "sine", "1000", "vol", "0.5"], check=True)


def mode_media(args, work: Path) -> dict:
    """N calls held with RTP both ways (SIPp rtp_stream, the UAS echoing): the SBCs' own
    CPU and the machine's, per packet relayed, against a baseline with no SBC."""
    out = {}
    n = args.sessions
    runs: list[Sbc] = [Direct()] + sbcs(args, kernel_forwarding="on")
    if args.media_userspace and any(isinstance(x, Palisade) for x in runs):
        runs.append(Palisade(args.palisade_bin, level=args.palisade_log_level,
                             kernel_forwarding="off", name="palisade-userspace",
                             prefix="127.0.63"))
    for sbc in runs:
        w = work / f"media-{sbc.name.split()[0]}"
        w.mkdir(parents=True, exist_ok=True)
        make_tone(w / "tone.wav")
        rate = min(200.0, n / 5)
        pairs = max(1, -(-n // 500))
        hold = int(args.media_seconds * 1000 + n / rate * 1000)
        install_rtp_counter(sbc.net.prefix)
        sbc.start(pairs, w)
        try:
            sampler = MemSampler(sbc.pids)
            marks = {}

            def window():
                # Measure only while all calls are up and streaming (and, with
                # kernel forwarding, handed over: 1 s after their first RTP).
                time.sleep(n / rate + 2)
                marks["t0"] = sum(proc_ticks(p) for p in sbc.pids())
                marks["b0"] = machine_busy()
                marks["p0"] = rtp_delivered()
                marks["m0"] = sampler.last
                time.sleep(args.media_seconds - 4)
                marks["t1"] = sum(proc_ticks(p) for p in sbc.pids())
                marks["b1"] = machine_busy()
                marks["p1"] = rtp_delivered()

            th = threading.Thread(target=window)
            res = run_calls(sbc, w, pairs, rate, n, hold, rtp=True,
                            on_running=th.start)
            th.join()
            peak = sampler.stop()
        finally:
            extra = sbc.stop()
        relayed = marks["p1"] - marks["p0"]
        cpu = (marks["t1"] - marks["t0"]) / CLK_TCK
        busy = (marks["b1"] - marks["b0"]) / CLK_TCK
        out[sbc.name] = {"cpu_s": cpu, "machine_s": busy, "relayed": relayed, "peak": peak,
                         "per_call_bytes": marks["m0"] / max(1, n), "result": res,
                         "seconds": args.media_seconds - 4, "extra": extra}
        log(f"  {sbc.name:20} {n} calls with RTP: {relayed / (args.media_seconds - 4):.0f} pps, "
            f"SBC cpu {cpu:.2f}s = {cpu / max(1, relayed) * 1e6:.2f} s/Mpkt, machine {busy:.2f}s "
            f"= {busy / max(1, relayed) * 1e6:.2f} s/Mpkt, peak {peak / 2**20:.1f} MiB, "
            f"calls ok {res.successful} failed {res.failed}")
    base = out.get("direct (no SBC)")
    for name, m in out.items():
        per = m["machine_s"] / max(1, m["relayed"]) * 1e6
        m["machine_per_mpkt"] = per
        m["added_per_mpkt"] = per - (base["machine_s"] / max(1, base["relayed"]) * 1e6) if base else float("nan")
        m["cpu_per_mpkt"] = m["cpu_s"] / max(1, m["relayed"]) * 1e6
    return out


def mode_memory(args, work: Path) -> dict:
    """N anchored calls held at once (no RTP): memory per call."""
    out = {}
    # An anchored call holds four sockets (RTP and RTCP on both legs) in either SBC;
    # Palisade holds two when the peers use rtcp-mux (the calls here offer and answer
    # it), so it reaches twice as many calls under a sandbox's hard open-files limit.
    # rtpengine binds RTCP ports whatever the SDP says: the anchor keeps the plain flow.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for sbc in sbcs(args):
        mux = isinstance(sbc, Palisade)
        per_call_fds = 2 if mux else 4
        n = min(args.concurrent, max(100, (hard - 400) // per_call_fds))
        if n < args.concurrent:
            log(f"  {sbc.name}: the hard open-files limit ({hard}) allows about {n} anchored calls "
                f"({per_call_fds} sockets each): measuring {n}, extrapolating to {args.concurrent}")
        w = work / f"memory-{sbc.name}"
        w.mkdir(parents=True, exist_ok=True)
        rate = args.memory_rate
        hold = int(n / rate * 1000 + 8000)
        pairs = pairs_for(rate)
        sbc.start(pairs, w)
        try:
            time.sleep(0.5)
            idle = sum(proc_pss(p) for p in sbc.pids())
            rss_idle = sum(proc_rss(p) for p in sbc.pids())
            sampler = MemSampler(sbc.pids)
            marks = {}

            def at_peak():
                time.sleep(n / rate + 4)
                marks["held"] = sum(proc_pss(p) for p in sbc.pids())
                marks["rss"] = sum(proc_rss(p) for p in sbc.pids())

            th = threading.Thread(target=at_peak)
            res = run_calls(sbc, w, pairs, rate, n, hold, on_running=th.start, mux=mux)
            th.join()
            peak = sampler.stop()
        finally:
            sbc.stop()
        held = marks.get("held", peak)
        out[sbc.name] = {"idle": idle, "held": held, "peak": peak, "calls": n,
                         "rss": marks.get("rss", 0), "rss_idle": rss_idle, "mux": mux,
                         "per_call": (held - idle) / max(1, n), "result": res}
        log(f"  {sbc.name:20} {n} concurrent calls: idle {idle / 2**20:.1f} MiB, held "
            f"{held / 2**20:.1f} MiB (RSS {marks.get('rss', 0) / 2**20:.1f} MiB), "
            f"{(held - idle) / max(1, n) / 1024:.1f} KiB/call, ok {res.successful} failed {res.failed}")
    return out


# ---------------------------------------------------------------- report


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    def ver(cmd):
        with contextlib.suppress(Exception):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        return "?"
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Linux {platform.release()}; "
            f"{ver(['kamailio', '-v'])}; rtpengine {ver(['rtpengine', '--version'])}; "
            f"{ver(['sipp', '-v'])}; load average before the run "
            f"{os.getloadavg()[0]:.2f}")


def ratio(a, b):
    return a / b if b else float("nan")


def report(args, calls=None, capacity=None, media=None, memory=None, relay=None) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"## Run of {now}", "", f"Machine: {machine()}.", ""]
    if calls:
        out += [f"### CPU per call ({args.rate:.0f} calls/s, {args.calls} calls, hold {args.hold_ms} ms, "
                f"best of {args.repeat})", "",
                "| SBC | CPU s / 1000 calls | peak memory (PSS) | failed | retransmissions |",
                "|---|---|---|---|---|"]
        best = {}
        for name, runs in calls.items():
            b = min(runs, key=lambda m: m.cpu_ms_per_call)
            best[name] = b
            out.append(f"| {name} | {b.cpu_ms_per_call:.3f} | {b.peak_bytes / 2**20:.1f} MiB | "
                       f"{b.result.failed} | {b.result.retransmissions} |")
        if "palisade" in best and "kamailio+rtpengine" in best:
            r = ratio(best["palisade"].cpu_ms_per_call, best["kamailio+rtpengine"].cpu_ms_per_call)
            out += ["", f"Ratio palisade / anchor, CPU per call: **{r:.3f}** (target <= 0.2)."]
        out.append("")
    if capacity:
        out += [f"### Highest rate with zero failed calls ({args.step_seconds} s per step, hold {args.hold_ms} ms)", "",
                "| SBC | highest zero-failure rate | steps (rate: failed, CPU ms/call) |", "|---|---|---|"]
        for name, c in capacity.items():
            steps = ", ".join(f"{m.rate:.0f}: {m.result.failed}, {m.cpu_ms_per_call:.2f}" for m in c["steps"])
            out.append(f"| {name} | {c['best']:.0f} calls/s | {steps} |")
        if "palisade" in capacity and "kamailio+rtpengine" in capacity:
            p, a = capacity["palisade"]["best"], capacity["kamailio+rtpengine"]["best"]
            top = float(args.rates.split(",")[-1])
            more = " (the highest rate tried: Palisade's limit is higher)" if p >= top else ""
            out += ["", f"Palisade / anchor: {ratio(p, a):.2f}x{more} "
                    "(target: zero failures at 2x the anchor's highest zero-failure rate)."]
        out.append("")
    if media:
        out += [f"### Media: {args.sessions} concurrent calls with RTP both ways ({args.media_seconds} s)", "",
                "CPU per million packets relayed: of the SBC's own processes, and what the whole machine "
                "spent beyond the same SIPp load with no SBC (kernel work in any process's account included).",
                "",
                "| SBC | packets relayed / s | SBC processes CPU s / Mpkt | machine CPU added s / Mpkt | "
                "memory per call | failed calls |",
                "|---|---|---|---|---|---|"]
        for name, m in media.items():
            pps = m["relayed"] / m["seconds"]
            added = "-" if name.startswith("direct") else f"{m['added_per_mpkt']:.2f}"
            own = "-" if name.startswith("direct") else f"{m['cpu_per_mpkt']:.2f}"
            out.append(f"| {name} | {pps:.0f} | {own} | {added} | "
                       f"{m['per_call_bytes'] / 1024:.1f} KiB | {m['result'].failed} |")
        anchor = media.get("kamailio+rtpengine")
        for name in ("palisade", "palisade-userspace"):
            if name in media and anchor:
                a = media[name]
                out += ["", f"Ratio {name} / anchor, CPU per packet: SBC processes "
                        f"**{ratio(a['cpu_per_mpkt'], anchor['cpu_per_mpkt']):.3f}**, machine "
                        f"**{ratio(a['added_per_mpkt'], anchor['added_per_mpkt']):.3f}** (target <= 0.5)."]
        out.append("")
    if memory:
        out += [f"### Memory: concurrent anchored calls held (no RTP)", "",
                f"| SBC | calls held | idle | with the calls (PSS) | RSS | per call | "
                f"{args.concurrent} calls (extrapolated) | failed calls |",
                "|---|---|---|---|---|---|---|---|"]
        for name, m in memory.items():
            ext = m["idle"] + m["per_call"] * args.concurrent
            calls = f"{m['calls']}" + (" (rtcp-mux)" if m["mux"] else "")
            out.append(f"| {name} | {calls} | {m['idle'] / 2**20:.1f} MiB | {m['held'] / 2**20:.1f} MiB | "
                       f"{m['rss'] / 2**20:.1f} MiB | {m['per_call'] / 1024:.1f} KiB | "
                       f"{ext / 2**20:.0f} MiB | {m['result'].failed} |")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if any(m["calls"] < args.concurrent for m in memory.values()):
            out += ["", f"This machine's hard open-files limit is {hard}: Palisade's calls offer and "
                    "answer rtcp-mux (two sockets per call), the anchor's do not (rtpengine binds "
                    "RTCP ports anyway: four), and each SBC holds what the limit allows; the "
                    "extrapolated column is idle + per call x the target."]
        out.append("")
    if relay:
        out += ["### Relay ceiling (bench/media/run.sh)", "", "```", relay.strip(), "```", ""]
    return "\n".join(out)


NETNS_ENV = "PALISADE_BENCH_NETNS"


def in_netns() -> int:
    """Re-runs this script inside a network namespace of its own; returns its exit code."""
    name = f"palisade-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, **{NETNS_ENV: name})
        return subprocess.run(["ip", "netns", "exec", name, sys.executable, *sys.argv],
                              env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name])


def main():
    if not os.environ.get(NETNS_ENV):
        for tool in ("ip", "nft"):
            if not shutil.which(tool):
                raise SystemExit(f"{tool} missing: apt-get install iproute2 nftables")
        raise SystemExit(in_netns())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["calls", "capacity", "media", "memory", "all"])
    ap.add_argument("--sbc", default="palisade,anchor", help="palisade,anchor (default both)")
    ap.add_argument("--rate", type=float, default=250,
                    help="calls mode: calls per second (250: the anchor sustains it on 2 cores)")
    ap.add_argument("--calls", type=int, default=5000, help="calls mode: calls per run (5000)")
    ap.add_argument("--repeat", type=int, default=5, help="calls mode: runs per SBC, alternating, best kept (5)")
    ap.add_argument("--hold-ms", type=int, default=500, help="call hold time (500 ms)")
    ap.add_argument("--rates", default="200,300,400,600,800,1000,1200,1600,2000",
                    help="capacity mode: rates to step through")
    ap.add_argument("--step-seconds", type=int, default=10, help="capacity mode: seconds per step (10)")
    ap.add_argument("--sessions", type=int, default=500, help="media mode: concurrent calls (500)")
    ap.add_argument("--media-seconds", type=int, default=20, help="media mode: seconds of RTP (20)")
    ap.add_argument("--no-media-userspace", dest="media_userspace", action="store_false",
                    help="media mode: skip the run of Palisade with kernel forwarding off")
    ap.add_argument("--concurrent", type=int, default=10000, help="memory mode: concurrent calls (10000)")
    ap.add_argument("--memory-rate", type=float, default=500, help="memory mode: call rate (500)")
    ap.add_argument("--palisade-bin", type=Path,
                    default=Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "palisade")
    ap.add_argument("--palisade-log-level", default="info")
    ap.add_argument("--results", type=Path, help="append the Markdown report to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    for tool in ["sipp", "sox"] + (["kamailio", "rtpengine"] if "anchor" in args.sbc else []):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} missing: apt-get install sip-tester sox kamailio rtpengine-daemon")
    if "palisade" in args.sbc and not args.palisade_bin.exists():
        raise SystemExit(f"{args.palisade_bin} missing: cargo build --release -p palisade")
    raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="palisade-bench-"))
    log(f"work directory {work}")
    parts = {}
    try:
        if args.mode in ("calls", "all"):
            log("== CPU per call")
            parts["calls"] = mode_calls(args, work)
        if args.mode in ("capacity", "all"):
            log("== capacity")
            parts["capacity"] = mode_capacity(args, work)
        if args.mode in ("media", "all"):
            log("== media")
            parts["media"] = mode_media(args, work)
        if args.mode in ("memory", "all"):
            log("== memory")
            parts["memory"] = mode_memory(args, work)
        if args.mode == "all":
            log("== relay ceiling (bench/media/run.sh)")
            parts["relay"] = subprocess.run([str(ROOT / "bench/media/run.sh")], capture_output=True,
                                            text=True, timeout=900).stdout
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = report(args, **parts)
    print(text)
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
