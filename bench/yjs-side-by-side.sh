#!/usr/bin/env bash
# Yjs documents against y-websocket's reference server (issue 17, BENCHMARKS.md "Yjs
# documents against y-websocket's reference server"): each scenario against a fresh codraft
# standalone server (durable: every update committed to SQLite, synchronous=FULL, before it
# is sent back) and a fresh y-websocket@1.5.4 `bin/server.js` (in memory, no persistence),
# one after the other, each server pinned to CPU 0 and the load generator to CPU 1, with
# `codraft-bench compare`.
#
#   bench/yjs-side-by-side.sh [scenario ...]
#
# Scenarios: closed (100 docs x 4 providers, closed loop), open (100 x 4 x 10 updates/s),
# idle (5,000 idle providers over 100 documents), documents (2,000 documents of 16
# one-character updates). Default: all four.
# Environment: CODRAFT (target/release/codraft), BENCH (target/release/codraft-bench),
# SECONDS_EACH (10), YWS_DIR (where y-websocket is installed with npm if it is not there
# yet; ~/.cache/codraft-bench/y-websocket-1.5.4), NODE (node).
set -euo pipefail
cd "$(dirname "$0")/.."
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(closed open idle documents)
CODRAFT=${CODRAFT:-target/release/codraft}
BENCH=${BENCH:-target/release/codraft-bench}
SECONDS_EACH=${SECONDS_EACH:-10}
YWS_DIR=${YWS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/codraft-bench/y-websocket-1.5.4}
NODE=${NODE:-node}
# Every connection is an open file; node does not raise its own limit.
ulimit -n "$(ulimit -Hn)"
CODRAFT_PORT=3070
YWS_PORT=3071
for binary in "$CODRAFT" "$BENCH"; do
    [ -x "$binary" ] || { echo "$binary is missing: cargo build --release --workspace" >&2; exit 2; }
done

# y-websocket 1.5.4 and its peer yjs, in a scratch directory outside the repository.
yws_server=$YWS_DIR/node_modules/y-websocket/bin/server.js
if [ ! -f "$yws_server" ]; then
    mkdir -p "$YWS_DIR"
    [ -f "$YWS_DIR/package.json" ] || echo '{"private": true}' >"$YWS_DIR/package.json"
    echo "installing y-websocket@1.5.4 and yjs@13 into $YWS_DIR" >&2
    (cd "$YWS_DIR" && npm install --no-audit --no-fund y-websocket@1.5.4 yjs@13 >&2)
fi
versions=$(cd "$YWS_DIR" && "$NODE" -p \
    '["y-websocket","yjs","y-protocols","ws"].map(p => p + "@" + require(p + "/package.json").version).join(", ")')

source bench/lib.sh
work=$(mktemp -d)
pids=()
trap kill_started EXIT

# codraft without its per-connection rate limits (y-websocket's server has none), and with
# loaded documents kept for an hour (y-websocket's in-memory server keeps them for good).
codraft_env=(EDITS_PER_SECOND=1000000 EDIT_BURST=1000000 MESSAGES_PER_SECOND=1000000
    MAX_CONNECTIONS_PER_DOCUMENT=100000
    IDLE_UNLOAD_SECS=3600 RUST_LOG=warn)

start_codraft() {
    rm -rf "$work/data" && mkdir -p "$work/data"
    taskset -c 0 env "${codraft_env[@]}" BIND=127.0.0.1 PORT=$CODRAFT_PORT \
        ADMIN_ADDR=127.0.0.1:3072 DATA_DIR="$work/data" "$CODRAFT" >"$work/codraft.log" 2>&1 &
    pids+=($!)
    codraft_pid=$!
    wait_port $CODRAFT_PORT "$codraft_pid"
}

start_yws() {
    # In memory: no YPERSISTENCE (LevelDB) and no CALLBACK_URL.
    (cd "$YWS_DIR" && exec taskset -c 0 env -u YPERSISTENCE -u CALLBACK_URL HOST=127.0.0.1 \
        PORT=$YWS_PORT "$NODE" node_modules/y-websocket/bin/server.js) >"$work/yws.log" 2>&1 &
    pids+=($!)
    yws_pid=$!
    wait_port $YWS_PORT "$yws_pid"
}

stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

echo "y-websocket's server: $versions (node $("$NODE" --version)); codraft: $(git rev-parse --short HEAD)"
for scenario in "${scenarios[@]}"; do
    case $scenario in
        closed) args=(yjs-typing --docs 100 --providers 4 --rate 0 --seconds "$SECONDS_EACH") ;;
        open) args=(yjs-typing --docs 100 --providers 4 --rate 10 --seconds "$SECONDS_EACH") ;;
        idle) args=(yjs-idle --connections 5000 --docs 100) ;;
        documents) args=(yjs-documents --docs 2000 --updates 16) ;;
        *) echo "unknown scenario $scenario (closed, open, idle, documents)" >&2; exit 2 ;;
    esac
    start_codraft
    start_yws
    echo "== ${args[*]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    taskset -c 1 "$BENCH" --quiet --url ws://127.0.0.1:$CODRAFT_PORT/yjs --pid "$codraft_pid" \
        compare --against ws://127.0.0.1:$YWS_PORT --against-pid "$yws_pid" \
        --label-a "codraft standalone" --label-b "y-websocket 1.5.4" "${args[@]}" || true
    stop_all
done
