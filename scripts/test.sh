#!/usr/bin/env bash
# The whole test suite, from a fresh machine of this kind: installs what the tests need
# (idempotently), makes sure PostgreSQL and Redis run, then runs every check. `.ci/run` calls
# exactly this. Exit status is non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
ARTIFACTS=${ARTIFACT_DIR:-$root/test-artifacts}
mkdir -p "$ARTIFACTS"

step() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------- installs (idempotent)
step "installing test dependencies"
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v node >/dev/null || need_apt+=(nodejs npm)
# promtool, for the alert rules and dashboard queries (deploy/check.sh).
command -v promtool >/dev/null || need_apt+=(prometheus)
if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
# Python tools for the deployment checks live in their own virtualenv.
venv=${CODRAFT_VENV:-$HOME/.cache/codraft-ci-venv}
if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q --disable-pip-version-check -r deploy/requirements-ci.txt
export PATH="$venv/bin:$PATH"
# Node packages of the web client (its unit tests and the browser test's playwright-core).
(cd web && ./build.sh >/dev/null)
git diff --quiet -- web/dist || {
  echo "web/dist is out of date with web/src: run web/build.sh and commit dist/" >&2
  exit 1
}
# Node packages of the Yjs tests (tests/yjs.rs drives the real npm y-websocket client).
tests/yjs/install.sh

# ---------------------------------------------------------------- services
step "checking PostgreSQL and Redis"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break
  sleep 0.2
done
pg_isready -h 127.0.0.1 -p 5432
redis-cli -h 127.0.0.1 ping
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

# ---------------------------------------------------------------- Rust
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo build --release (binaries for the process tests)"
cargo build --release --workspace
step "cargo test"
cargo test --workspace --release --no-fail-fast

# ---------------------------------------------------------------- web client
step "web client unit tests"
node --test web/tests/

step "browser tests (headless Chromium: two pages typing at once, OT and Yjs documents; history and restore; passwords, tokens, the page)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
jwt_port=$(free_port)
data=$(mktemp -d)
jwt_data=$(mktemp -d)
PORT=$port BIND=127.0.0.1 DATA_DIR="$data" target/release/codraft >"$ARTIFACTS/browser-server.log" 2>&1 &
server=$!
# A second server that requires tokens, for the reader scenarios.
PORT=$jwt_port BIND=127.0.0.1 DATA_DIR="$jwt_data" JWT_SECRET=browser-secret \
  target/release/codraft >"$ARTIFACTS/browser-jwt-server.log" 2>&1 &
jwt_server=$!
trap 'kill $server $jwt_server 2>/dev/null || true; rm -rf "$data" "$jwt_data"' EXIT
for p in "$port" "$jwt_port"; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
BASE_URL="http://127.0.0.1:$port" ARTIFACT_DIR="$ARTIFACTS" node web/tests/browser.mjs
BASE_URL="http://127.0.0.1:$port" ARTIFACT_DIR="$ARTIFACTS" node web/tests/history.browser.mjs
BASE_URL="http://127.0.0.1:$port" JWT_BASE_URL="http://127.0.0.1:$jwt_port" JWT_SECRET=browser-secret \
  ARTIFACT_DIR="$ARTIFACTS" node web/tests/yjs.browser.mjs
BASE_URL="http://127.0.0.1:$port" JWT_BASE_URL="http://127.0.0.1:$jwt_port" JWT_SECRET=browser-secret \
  ARTIFACT_DIR="$ARTIFACTS" node web/tests/access.browser.mjs
kill "$server" "$jwt_server"; wait "$server" "$jwt_server" || true
trap - EXIT
rm -rf "$data" "$jwt_data"

# ---------------------------------------------------------------- fuzzing (bounded)
step "fuzzing: protocol parser and OT algebra (FUZZ_SECONDS=${FUZZ_SECONDS:-15} per target)"
FUZZ_SECONDS=${FUZZ_SECONDS:-15} scripts/fuzz.sh

# ---------------------------------------------------------------- deployment files
if [[ -x deploy/check.sh ]]; then
  step "deployment checks (hadolint, docker-compose config, helm lint/template, kubernetes-validate)"
  deploy/check.sh
fi

step "all checks passed"
