#!/bin/sh
# A stand-in for `palisade run --config FILE`, used only by the harness self-test
# (tests/harness_selftest.rs) to exercise the Lab plumbing without the real
# binary: it answers OPTIONS on the config's inside zone address with SIPp
# until it is terminated. It implements nothing else.
set -eu
if [ "$#" -ne 3 ] || [ "$1" != run ] || [ "$2" != --config ]; then
    echo "usage: $0 run --config FILE" >&2
    exit 2
fi
inside=$(awk '/sip_address:/ { print $2; exit }' "$3")
here=$(cd "$(dirname "$0")" && pwd)
echo "stand-in: answering OPTIONS on $inside:5060"
exec sipp -sf "$here/../scenarios/uas_options.xml" -i "$inside" -p 5060 \
    -mi "$inside" -mp 16000 -m 1000000 -nostdin -t u1
