#!/bin/bash
# usage: run.sh --seed S --nodes N [--duration D] ...   (see harness.py --help)
# Runs the harness in a private network namespace; check the run with
# check.py. Exits with the harness's status.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
unshare -n python3 "$HERE/harness.py" "$@"
rc=$?
echo "harness exit $rc"
exit $rc
