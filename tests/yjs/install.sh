#!/usr/bin/env bash
# Installs the npm packages of the Yjs tests (tests/yjs.rs runs these scripts with the real
# y-websocket client), exactly as package-lock.json pins them. Idempotent: runs `npm ci` only
# when node_modules is missing or was installed from another package.json/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.codraft-lock-hash
want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [[ ! -d node_modules || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
fi
