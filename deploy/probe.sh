#!/bin/bash
# codraft-probe: the container health check of the codraft images.
#
#   codraft-probe gateway|docnode|standalone [PATH]
#
# Asks the process in this container for PATH (default /readyz) over plain HTTP on
# 127.0.0.1 and exits 0 only on a 200 answer. It needs nothing but bash (its /dev/tcp), so
# the runtime image carries no curl or wget. The port comes from the same variables the
# binaries read: the port of ADMIN_ADDR when set (the gateway and standalone serve their
# health there, and only there, when it is), else PORT for the gateway and standalone
# (default 3030); a docnode always has ADMIN_ADDR (default 9090). Kubernetes does not use
# this: the chart declares httpGet probes on the same endpoints.
set -euo pipefail

role=${1:?usage: codraft-probe gateway|docnode|standalone [PATH]}
path=${2:-/readyz}
case $role in
  gateway | standalone)
    if [[ -n ${ADMIN_ADDR:-} ]]; then
      port=${ADMIN_ADDR##*:}
    else
      port=${PORT:-3030}
    fi
    ;;
  docnode)
    admin=${ADMIN_ADDR:-127.0.0.1:9090}
    port=${admin##*:}
    ;;
  *)
    echo "codraft-probe: unknown role '$role' (gateway, docnode or standalone)" >&2
    exit 2
    ;;
esac

exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3<&-
case $status in
  "HTTP/1."?" 200"*) exit 0 ;;
  *)
    echo "codraft-probe: $path on port $port answered '${status%$'\r'}'" >&2
    exit 1
    ;;
esac
