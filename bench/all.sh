#!/bin/sh
# Every benchmark, one after another, each bounded in time; then the plot.
#   bench/all.sh            full run (about 10 minutes on 2 cores)
#   bench/all.sh --quick    smoke run with tiny sizes (about a minute)
# Results: bench/results/*.json and bench/results/throughput.png; see BENCHMARKS.md.
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
QUICK="${1:-}"
FAILED=""
run() {
    echo "== $*"
    # A benchmark that fails is reported at the end; the others still run.
    timeout 900 "$PY" "$@" $QUICK || FAILED="$FAILED $1"
}
run bench/poller_throughput.py
run bench/backlog.py
run bench/big_message.py
run bench/many_accounts.py
run bench/proxy.py
"$PY" bench/plot.py $QUICK
if [ -n "$FAILED" ]; then
    echo "FAILED:$FAILED" >&2
    exit 1
fi
