# Shell helpers the bench scripts share (sourced, not run).

# Waits up to 10 s for something to listen on 127.0.0.1:$1 and, given a pid as $2, checks
# that it is that process: a server left over from an earlier run would otherwise answer for
# one that could not bind the port, and be measured in its place.
wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            [ -z "${2:-}" ] && return 0
            ss -ltnpH "sport = :$1" | grep -q "pid=$2," && return 0
            echo "port $1 answers, but not from the server just started (pid $2):" \
                "$(ss -ltnpH "sport = :$1")" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# The EXIT trap of a script that keeps its started processes' pids in `pids` and its scratch
# files in `work`: kills the processes and removes the files.
kill_started() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
