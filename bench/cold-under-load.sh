#!/usr/bin/env bash
# Cold loads while others type (BENCHMARKS.md "Cold loads while others type, with the
# journal"): a standalone server pinned to CPU 0 carries 100 documents x 4 clients at 10
# edits/s each (`codraft-bench typing`, CPU 1) while LOADS documents never written are loaded
# one after another with GET /api/text/<id> (curl, CPU 1); prints the loads' percentiles and
# the typing's round trip.
#
#   bench/cold-under-load.sh
#
# Environment: CODRAFT (target/release/codraft), BENCH (target/release/codraft-bench),
# LOADS (300), PORT (3040).
set -euo pipefail
cd "$(dirname "$0")/.."
CODRAFT=${CODRAFT:-target/release/codraft}
BENCH=${BENCH:-target/release/codraft-bench}
LOADS=${LOADS:-300}
PORT=${PORT:-3040}
source bench/lib.sh
work=$(mktemp -d)
pids=()
trap kill_started EXIT

taskset -c 0 env EDITS_PER_SECOND=1000000 EDIT_BURST=1000000 MESSAGES_PER_SECOND=1000000 \
    MAX_CONNECTIONS_PER_DOCUMENT=100000 RUST_LOG=warn PORT="$PORT" DATA_DIR="$work/data" \
    "$CODRAFT" >"$work/server.log" 2>&1 &
server=$!
pids+=("$server")
wait_port "$PORT" "$server"
taskset -c 1 "$BENCH" --url "ws://127.0.0.1:$PORT" --pid "$server" typing --docs 100 \
    --clients 4 --rate 10 --seconds 12 >"$work/typing.txt" 2>&1 &
typing=$!
pids+=("$typing")
sleep 3 # the typing is at its rate
for i in $(seq 1 "$LOADS"); do
    taskset -c 1 curl -s -o /dev/null -w "%{http_code} %{time_total}\n" \
        "http://127.0.0.1:$PORT/api/text/cold-$$-$i"
    sleep 0.02
done >"$work/loads.txt"
wait "$typing"
python3 - "$work/loads.txt" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
failed = [code for code, _ in rows if code != "200"]
ms = sorted(float(t) * 1000 for _, t in rows)
pick = lambda q: ms[min(len(ms) - 1, int(len(ms) * q))]
print(f"cold loads under typing: n={len(ms)} failed={len(failed)} "
      f"p50 {pick(0.5):.2f}  p90 {pick(0.9):.2f}  p99 {pick(0.99):.2f}  max {ms[-1]:.2f} ms")
PY
grep -E "edit round trip  " "$work/typing.txt"
