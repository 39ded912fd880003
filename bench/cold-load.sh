#!/usr/bin/env bash
# Cold documents (issue 13, BENCHMARKS.md "Loading a cold document"): DOCS documents are
# opened, edited and left by `codraft-bench soak`, the server unloads them (IDLE_UNLOAD_SECS
# 5), then the soak reads every text back through GET /api/text, which loads each document
# again; the first 2,000 reads go one at a time and are timed. Once against a standalone
# server (embedded SQLite store) and once against a cluster of one docnode (PostgreSQL, a
# scratch database made and dropped) behind one gateway; servers pinned to CPU 0, the load
# generator to CPU 1.
#
#   bench/cold-load.sh [standalone|cluster ...]
#
# Environment: DOCS (100000 standalone, 20000 cluster), CODRAFT, GATEWAY, DOCNODE, BENCH
# (target/release/*), DATABASE_URL's server for the cluster (postgres@127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(standalone cluster)
CODRAFT=${CODRAFT:-target/release/codraft}
GATEWAY=${GATEWAY:-target/release/gateway}
DOCNODE=${DOCNODE:-target/release/docnode}
BENCH=${BENCH:-target/release/codraft-bench}
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d)
pids=()
scratch_db=codraft_cold_$$
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $scratch_db" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
source bench/lib.sh
settings=(IDLE_UNLOAD_SECS=5 EDITS_PER_SECOND=1000000 EDIT_BURST=1000000
    MESSAGES_PER_SECOND=1000000 RUST_LOG=warn)
for mode in "${modes[@]}"; do
    case $mode in
        standalone)
            docs=${DOCS:-100000}
            taskset -c 0 env "${settings[@]}" BIND=127.0.0.1 PORT=3060 DATA_DIR="$work/data" \
                "$CODRAFT" >"$work/codraft.log" 2>&1 &
            pids+=($!)
            server=$!
            ;;
        cluster)
            docs=${DOCS:-20000}
            psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $scratch_db" \
                -c "CREATE DATABASE $scratch_db" >/dev/null
            taskset -c 0 env "${settings[@]}" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$scratch_db" \
                NODE_ID=dn0 DOCNODE_ADDR=127.0.0.1:3062 ADMIN_ADDR=127.0.0.1:3063 "$DOCNODE" \
                >"$work/docnode.log" 2>&1 &
            pids+=($!)
            wait_port 3062 "${pids[-1]}"
            taskset -c 0 env "${settings[@]}" BIND=127.0.0.1 PORT=3060 DOCNODES=dn0=http://127.0.0.1:3062 \
                "$GATEWAY" >"$work/gateway.log" 2>&1 &
            pids+=($!)
            server=$!
            ;;
        *) echo "unknown mode $mode (standalone, cluster)" >&2; exit 2 ;;
    esac
    wait_port 3060 "$server"
    echo "== $mode: $docs documents (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    taskset -c 1 "$BENCH" --quiet --url ws://127.0.0.1:3060 --pid "$server" \
        soak --docs "$docs" --seconds 60 --concurrency 64 --idle-unload-secs 5 || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
done
