#!/usr/bin/env python3
"""Dependency hygiene without extra tools (the spirit of `cargo deny check`).

Reads `cargo metadata` for the workspace (normal, build and dev dependencies,
all targets) and fails when:
  - a crate's license expression uses a license outside ALLOWED;
  - a crate comes from anywhere but crates.io or this repository;
  - a crate is forbidden (see BANNED);
  - two versions of one crate are in the graph, unless listed in
    DUPLICATES_ALLOWED with the reason.
"""
import json
import re
import subprocess
import sys

ALLOWED = {
    "MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause", "BSD-3-Clause",
    "ISC", "Unicode-3.0", "Unicode-DFS-2016", "Zlib", "MPL-2.0", "CC0-1.0", "Unlicense", "BSL-1.0",
    "0BSD",
}
BANNED = {
    "sip-codec": "built on bytes 0.4 / nom 4 / tokio-codec 0.1",
    "serde_yaml": "archived upstream; use serde-saphyr",
}
# crate -> why two versions are tolerated (each entry should name the dependents).
DUPLICATES_ALLOWED = {
    "getrandom": "0.2 only through ring, the optional DNSSEC backend of hickory-proto that "
                 "`cargo metadata` lists but no build enables (`cargo tree -i ring --target all` "
                 "is empty); everything built uses 0.4 (rand 0.10)",
    "windows-sys": "0.52 only through that same unbuilt ring (aarch64 Windows); 0.61 elsewhere",
    "syn": "proc-macro only: serde_derive/clap_derive moved to syn 3, thiserror-impl/tokio-macros "
           "and others are still on syn 2; nothing of either ends up in the binary",
    # SRTP (palisade-relay -> libsrtp) is built on the RustCrypto 0.10 generation (aes 0.8,
    # sha1 0.10, aes-gcm 0.10); rand 0.10 (and proptest) are on the next one. Every maintained
    # pure-Rust SRTP crate is on the older generation today.
    "cpufeatures": "aes 0.8/sha1 0.10 (libsrtp) use 0.2; chacha20 0.10 (rand 0.10, proptest) uses 0.3",
    "rand_core": "crypto-common 0.1 (aes-gcm 0.10 via libsrtp) uses 0.6; rand 0.10 uses 0.10",
    "getrandom": "rand_core 0.6 (aes-gcm 0.10 via libsrtp) uses 0.2; rand 0.10 uses 0.4",
}


def main() -> int:
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked"], text=True))
    resolve = {n["id"]: n for n in meta["resolve"]["nodes"]}
    packages = {p["id"]: p for p in meta["packages"]}
    # Only what is reachable from the workspace members.
    seen, stack = set(), list(meta["workspace_members"])
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(d["pkg"] for d in resolve[pid]["deps"])
    problems = []
    versions: dict[str, set[str]] = {}
    for pid in sorted(seen):
        p = packages[pid]
        name, version = p["name"], p["version"]
        if name in BANNED:
            problems.append(f"{name}: banned ({BANNED[name]})")
        src = p.get("source")
        if src is not None and not src.startswith("registry+https://github.com/rust-lang/crates.io-index") \
                and not src.startswith("sparse+https://index.crates.io/"):
            problems.append(f"{name} {version}: unexpected source {src}")
        if src is None:
            continue  # our own crates
        versions.setdefault(name, set()).add(version)
        lic = p.get("license") or ""
        if not lic:
            problems.append(f"{name} {version}: no license expression")
            continue
        # Every alternative of an OR must be checked only if no alternative is allowed.
        alternatives = [a.strip(" ()") for a in re.split(r"\s+OR\s+|/", lic)]
        ok = False
        for alt in alternatives:
            parts = [x.strip(" ()") for x in re.split(r"\s+AND\s+", alt)]
            if all(x in ALLOWED for x in parts):
                ok = True
                break
        if not ok:
            problems.append(f"{name} {version}: license {lic!r} not in the allowed list")
    for name, vs in sorted(versions.items()):
        if len(vs) > 1 and name not in DUPLICATES_ALLOWED:
            problems.append(f"{name}: {len(vs)} versions in the graph ({', '.join(sorted(vs))})")
    if problems:
        print("dependency hygiene failed:")
        for p in problems:
            print("  -", p)
        return 1
    print(f"dependency hygiene: {len(seen)} crates, licenses allowed, no banned crates, no unexplained duplicates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
