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
# database is made and dropped). In cluster mode each scenario ends with codraft's CPU per
# accepted edit by process: gateway, docnode and Postgres.
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
        docnode_pid=$!
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

# CPU ticks (user + system) so far of the docnode, the gateway and Postgres: every postgres
# process of this machine, and the backends that already exited (the postmaster's reaped
# children), so connections the pool opens and closes during a run are counted too.
cluster_ticks() {
    local pid ticks pg=0 postmaster
    postmaster=$(pgrep -o -x postgres || true)
    for pid in $(pgrep -x postgres || true); do
        ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        pg=$((pg + ticks))
    done
    [ -n "$postmaster" ] && pg=$((pg + $(awk '{print $16 + $17}' "/proc/$postmaster/stat")))
    echo "$(awk '{print $14 + $15}' "/proc/$docnode_pid/stat") \
        $(awk '{print $14 + $15}' "/proc/$codraft_pid/stat") $pg"
}

# The cluster's CPU per accepted edit of codraft's run, by process: $1 and $2 are
# cluster_ticks before and after the comparison (Rustpad's run leaves the three idle), $3
# the comparison's output, whose first "accepted edits" line is codraft's.
cluster_cpu() {
    local edits
    edits=$(grep -m1 -E '^\| accepted edits \(' "$3" | sed -E 's/.*\(([0-9,]+)\).*/\1/' | tr -d ,)
    [ -n "$edits" ] && [ "$edits" -gt 0 ] || return 0
    read -r d0 g0 p0 <<<"$1"
    read -r d1 g1 p1 <<<"$2"
    awk -v e="$edits" -v hz="$(getconf CLK_TCK)" -v d=$((d1 - d0)) -v g=$((g1 - g0)) \
        -v p=$((p1 - p0)) 'BEGIN {
            f = 1e6 / hz / e
            printf "\ncluster CPU per accepted edit (codraft): gateway %.1f µs, docnode %.1f µs, " \
                "Postgres %.1f µs (all its processes), together %.1f µs\n",
                g * f, d * f, p * f, (g + d + p) * f }'
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
    # the gateway (the docnode's and Postgres's shares follow the tables, see cluster_cpu).
    echo "== $mode: ${args[*]} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    [ "$mode" = cluster ] && before=$(cluster_ticks)
    taskset -c 1 "$BENCH" --quiet --url ws://127.0.0.1:$CODRAFT_PORT --pid "$codraft_pid" \
        compare --against ws://127.0.0.1:$RUSTPAD_PORT --against-pid "$rustpad_pid" \
        --label-a "codraft $mode" "${args[@]}" | tee "$work/compare.txt" || true
    [ "$mode" = cluster ] && cluster_cpu "$before" "$(cluster_ticks)" "$work/compare.txt"
    stop_all
done
