#!/bin/bash
# usage: slowlink.sh --name NAME [--netem 'delay 50ms'] [--slow-node K] ... (see slowlink.py --help)
# Check the run with: python3 tests/partition/check.py target/partition-runs/slow-NAME
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec unshare -n python3 "$HERE/slowlink.py" "$@"
