#!/usr/bin/env bash
# Side by side with Rustpad (issue 13, BENCHMARKS.md "Side by side with Rustpad"): each
# scenario against a fresh codraft server and a fresh Rustpad server, one after the other,
# each server pinned to CPU 0 and the load generator to CPU 1, with `codraft-bench compare`.
#
#   bench/side-by-side.sh [standalone|cluster] [scenario ...]
#
# Scenarios: closed (100 docs x 4 clients, closed loop), one (1 doc x 8, closed loop), open
# (100 x 4 x 10 edits/s), idle (5,000 idle connections). Default: all four, standalone.
# Environment: CODRAFT (the codraft binary; target/release/codraft), GATEWAY and DOCNODE
# (cluster mode), RUSTPAD (../shared/anchors/rustpad-server), BENCH
# (target/release/codraft-bench), SECONDS_EACH (10), DATABASE_URL (cluster mode; a scratch
# database is made and dropped).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-standalone}
shift || true
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(closed one open idle)
CODRAFT=${CODRAFT:-target/release/codraft}
GATEWAY=${GATEWAY:-target/release/gateway}
DOCNODE=${DOCNODE:-target/release/docnode}
RUSTPAD=${RUSTPAD:-../shared/anchors/rustpad-server}
BENCH=${BENCH:-target/release/codraft-bench}
SECONDS_EACH=${SECONDS_EACH:-10}
CODRAFT_PORT=3040
RUSTPAD_PORT=3041
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${scratch_db:-}" ] && psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $scratch_db" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

# codraft with Rustpad's lack of per-connection rate limits.
unlimited=(EDITS_PER_SECOND=1000000 EDIT_BURST=1000000 MESSAGES_PER_SECOND=1000000
    MAX_CONNECTIONS_PER_DOCUMENT=100000 RUST_LOG=warn)

source bench/lib.sh

start_codraft() {
    rm -rf "$work/data" && mkdir -p "$work/data"
    if [ "$mode" = cluster ]; then
        scratch_db=codraft_side_$$
        psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $scratch_db" -c "CREATE DATABASE $scratch_db" >/dev/null
        local db="postgres://postgres@127.0.0.1:5432/$scratch_db"
        taskset -c 0 env "${unlimited[@]}" DATABASE_URL="$db" NODE_ID=dn0 DOCNODE_ADDR=127.0.0.1:3042 \
            ADMIN_ADDR=127.0.0.1:3043 "$DOCNODE" >"$work/docnode.log" 2>&1 &
        pids+=($!)
        wait_port 3042 "${pids[-1]}"
        taskset -c 0 env "${unlimited[@]}" PORT=$CODRAFT_PORT DOCNODES=dn0=http://127.0.0.1:3042 \
            "$GATEWAY" >"$work/gateway.log" 2>&1 &
        pids+=($!)
    else
        taskset -c 0 env "${unlimited[@]}" PORT=$CODRAFT_PORT DATA_DIR="$work/data" "$CODRAFT" \
            >"$work/codraft.log" 2>&1 &
        pids+=($!)
    fi
    codraft_pid=$!
    wait_port $CODRAFT_PORT "$codraft_pid"
}

start_rustpad() {
    PORT=$RUSTPAD_PORT EXPIRY_DAYS=1 taskset -c 0 "$RUSTPAD" >"$work/rustpad.log" 2>&1 &
    pids+=($!)
    rustpad_pid=$!
    wait_port $RUSTPAD_PORT "$rustpad_pid"
}

stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    if [ -n "${scratch_db:-}" ]; then
        psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $scratch_db" >/dev/null
        scratch_db=
    fi
}

for scenario in "${scenarios[@]}"; do
    case $scenario in
        closed) args=(typing --docs 100 --clients 4 --rate 0 --seconds "$SECONDS_EACH") ;;
        one) args=(typing --docs 1 --clients 8 --rate 0 --seconds "$SECONDS_EACH") ;;
        open) args=(typing --docs 100 --clients 4 --rate 10 --seconds "$SECONDS_EACH") ;;
        idle) args=(idle --connections 5000 --docs 100) ;;
        *) echo "unknown scenario $scenario (closed, one, open, idle)" >&2; exit 2 ;;
    esac
    start_codraft
    start_rustpad
    # The bench's server figures come from each server's own pid; in cluster mode that is
    # the gateway (the docnode's share is not in them).
    echo "== $mode: ${args[*]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    taskset -c 1 "$BENCH" --quiet --url ws://127.0.0.1:$CODRAFT_PORT --pid "$codraft_pid" \
        compare --against ws://127.0.0.1:$RUSTPAD_PORT --against-pid "$rustpad_pid" \
        --label-a "codraft $mode" "${args[@]}" || true
    stop_all
done
