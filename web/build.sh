#!/usr/bin/env bash
# Rebuilds web/dist/ (index.html, app.js, app.css) from web/src/. The output is committed and
# embedded in the gateway at compile time, so running the server needs no Node; run this
# after changing anything under web/src/ and commit dist/ with the change.
#
# Idempotent: installs node_modules with `npm ci` only when it is missing or was installed
# from a different package.json / package-lock.json, then bundles with esbuild.
set -euo pipefail
cd "$(dirname "$0")"

stamp=node_modules/.codraft-lock-hash
want=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [[ ! -d node_modules || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
fi

mkdir -p dist
rm -f dist/app.js dist/app.css dist/index.html
# Importing app.css from main.js makes esbuild write dist/app.css beside dist/app.js.
node_modules/.bin/esbuild src/main.js \
  --bundle --minify --format=esm --target=es2020 \
  --legal-comments=none --log-level=warning \
  --outfile=dist/app.js
cp src/index.html dist/index.html

for f in index.html app.js app.css; do
  test -s "dist/$f" || { echo "build.sh: dist/$f was not produced" >&2; exit 1; }
done
extra=$(find dist -type f ! -name index.html ! -name app.js ! -name app.css)
if [[ -n $extra ]]; then
  echo "build.sh: unexpected files in dist/: $extra" >&2
  exit 1
fi
ls -l dist
