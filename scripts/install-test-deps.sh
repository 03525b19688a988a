#!/usr/bin/env bash
# Installs the tools the end-to-end tests (tests/e2e) drive, on Debian/Ubuntu.
#
# Idempotent and quick: when every tool is already on PATH it changes nothing
# and does not touch apt. Otherwise it runs `apt-get update` once and installs
# the missing packages non-interactively. It fails loudly (non-zero exit, a
# message naming the tool) when it cannot: the tests treat a missing tool as a
# failure, never as a skip.
#
# Usage: scripts/install-test-deps.sh        (as root, or with sudo available)
set -euo pipefail

# Debian installs daemons such as dnsmasq in /usr/sbin, not always on PATH.
export PATH="$PATH:/usr/sbin:/sbin"

# command  Debian package   why
TOOLS=(
    "sipp:sip-tester"       # the PBX and carrier peers in every call test
    "tshark:tshark"         # captures proving RTP only flows through Palisade's media addresses
    "baresip:baresip-core"  # real phones on both sides of the SRTP/RTP media tests
    "sox:sox"               # writes the test tones and checks what the phones recorded
    "dnsmasq:dnsmasq-base"  # the DNS server of the FQDN trunk tests (NAPTR, SRV, A)
    "svmap:sipvicious"      # guard tests: real scanners (svmap, svwar, svcrack)
    "nft:nftables"          # guard tests: Palisade's table, ban sets, counters
    "ip:iproute2"           # guard tests: a network namespace per test
    "timeout:coreutils"     # guard tests: bound every scanner run
    "setpriv:util-linux"    # guard tests: Palisade as an unprivileged user (the nft fallback)
)

missing_pkgs=()
for entry in "${TOOLS[@]}"; do
    cmd=${entry%%:*}
    pkg=${entry#*:}
    if ! command -v "$cmd" >/dev/null 2>&1; then
        missing_pkgs+=("$pkg")
    fi
done

if [ "${#missing_pkgs[@]}" -eq 0 ]; then
    echo "install-test-deps: all tools present ($(for e in "${TOOLS[@]}"; do printf '%s ' "${e%%:*}"; done))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: missing ${missing_pkgs[*]} and apt-get is not available; install them by hand" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install-test-deps: need root (or sudo) to install ${missing_pkgs[*]}" >&2
        exit 1
    fi
fi

echo "install-test-deps: installing ${missing_pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}"

status=0
for entry in "${TOOLS[@]}"; do
    cmd=${entry%%:*}
    if ! command -v "$cmd" >/dev/null 2>&1; then
        echo "install-test-deps: $cmd is still missing after installing ${entry#*:}" >&2
        status=1
    fi
done
exit "$status"
