#!/bin/bash
# usage: scenario_heal.sh [--nodes N] [--iso 5,20,60] [--kind isolate|minority]
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec unshare -n python3 "$HERE/scenario_heal.py" "$@"
