#!/usr/bin/env python3
"""Offline checks of codraft's deployment files, one subcommand per check (deploy/check.sh
runs them and counts). Needs the packages in deploy/requirements-ci.txt: helm-python-sdk
(the real Helm engine, no helm binary), PyYAML and jsonschema.

    validate.py helm-lint VALUES_FILE|-              helm lint --strict
    validate.py helm-render VALUES_FILE|- OUT_DIR    helm template + invariants; writes
                                                     OUT_DIR/core/*.yaml (built-in kinds)
                                                     and OUT_DIR/crd/*.yaml (ServiceMonitor)
    validate.py helm-reject                          bad values are refused
    validate.py crds DIR                             ServiceMonitor, PrometheusRule, HTTPRoute
                                                     against subsets of their CRD schemas
    validate.py dashboard OUT_RULES                  the Grafana dashboard parses; writes each
                                                     PromQL expression of it into OUT_RULES (a
                                                     rules file for `promtool check rules`)
    validate.py metric-names                         every codraft series the alerts and the
                                                     dashboard use is documented
    validate.py compose                              docker-compose.yml <-> configs consistency
    validate.py otel                                 deploy/otel-collector.yaml structure
    validate.py nginx                                deploy/nginx.conf required directives

Each prints what it found wrong and exits 1, or exits 0.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

import jsonschema
import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
CHART = ROOT / "helm" / "codraft"
KUBE_VERSION = "v1.29.0"  # the chart's kubeVersion floor
RELEASE = "codraft"
NAMESPACE = "editors"

problems: list[str] = []


def problem(message: str) -> None:
    problems.append(message)


def expect(condition: bool, message: str) -> None:
    if not condition:
        problem(message)


def finish() -> int:
    for message in problems:
        print(f"  - {message}")
    return 1 if problems else 0


# ------------------------------------------------------------------------------ helm


def load_values(arg: str) -> dict[str, Any] | None:
    """`-` means the chart's defaults (no override)."""
    if arg == "-":
        return None
    import helm_python as helm

    return helm.values_from_yaml(Path(arg).read_text())


def helm_lint(values_arg: str) -> int:
    import helm_python as helm

    report = helm.lint(
        str(CHART), load_values(values_arg), strict=True, kube_version=KUBE_VERSION
    )
    for message in report.get("messages", []):
        severity = message.get("severity", 0)
        line = f"[{['UNKNOWN', 'INFO', 'WARNING', 'ERROR'][min(severity, 3)]}] {message['path']}: {message['error'].strip()}"
        print(f"  {line}")
        # --strict: warnings count as failures, as they do for `helm lint --strict`.
        if severity >= 2:
            problem(line)
    for error in report.get("errors", []):
        problem(error.strip())
    return finish()


def render(values: dict[str, Any] | None) -> dict[str, str]:
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def helm_render(values_arg: str, out_dir: str) -> int:
    values = load_values(values_arg)
    manifests = render(values)
    out = Path(out_dir)
    (out / "core").mkdir(parents=True, exist_ok=True)
    (out / "crd").mkdir(parents=True, exist_ok=True)

    objects: list[dict[str, Any]] = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            expect("codraft" in text, "NOTES.txt rendered empty")
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        for i, doc in enumerate(docs):
            kind = doc["kind"]
            name = doc["metadata"]["name"]
            # Custom resources (Prometheus Operator, Gateway API): kubernetes-validate has no
            # schema for them, so `crds` checks them against subsets of their CRDs.
            custom = ("monitoring.coreos.com/", "gateway.networking.k8s.io/")
            folder = "crd" if doc["apiVersion"].startswith(custom) else "core"
            path = out / folder / f"{kind.lower()}-{name}-{i}.yaml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            objects.append(doc)
    print(f"  rendered {len(objects)} objects: "
          + ", ".join(sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)))
    check_invariants(objects)
    return finish()


def check_invariants(objects: list[dict[str, Any]]) -> None:
    """What the chart promises beyond schema validity."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)

    def one(kind: str, component: str) -> dict[str, Any] | None:
        found = [
            o for o in by_kind.get(kind, [])
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]
        if len(found) != 1:
            problem(f"expected one {kind} for {component}, found {len(found)}")
            return None
        return found[0]

    deployment = one("Deployment", "gateway")
    statefulset = one("StatefulSet", "docnode")
    if deployment is None or statefulset is None:
        return
    workloads = [deployment, statefulset]

    # Security and probes on every pod.
    for w in workloads:
        name = f"{w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        expect(spec.get("securityContext", {}).get("runAsNonRoot") is True,
               f"{name}: pod securityContext.runAsNonRoot is not true")
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            expect(sc.get("readOnlyRootFilesystem") is True, f"{name}/{c['name']}: root filesystem is writable")
            expect(sc.get("allowPrivilegeEscalation") is False, f"{name}/{c['name']}: privilege escalation allowed")
            expect("ALL" in sc.get("capabilities", {}).get("drop", []), f"{name}/{c['name']}: capabilities not dropped")
            for probe in ("livenessProbe", "readinessProbe"):
                expect(probe in c, f"{name}/{c['name']}: no {probe}")
            expect(bool(c.get("resources", {}).get("requests")), f"{name}/{c['name']}: no resource requests")
        # Selector must pick the pod template.
        expect(matches(w["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"]),
               f"{name}: selector does not match its pod template")

    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in by_kind.get("ConfigMap", [])}

    # Docnodes: identity, address, grace period, readiness.
    sts_name = statefulset["metadata"]["name"]
    replicas = int(statefulset["spec"]["replicas"])
    dn = pod_spec(statefulset)["containers"][0]
    dn_env = env_of(dn)
    dn_config = {}
    for ref in dn.get("envFrom", []):
        dn_config.update(configmaps.get(ref.get("configMapRef", {}).get("name"), {}))
    node_id = dn_env.get("NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    expect(node_id == "metadata.name", f"docnode NODE_ID must come from the pod name, not {node_id!r}")
    ports = {p["name"]: p["containerPort"] for p in dn.get("ports", [])}
    expect({"grpc", "admin"} <= set(ports), f"docnode ports are {sorted(ports)}, want grpc and admin")
    expect(dn_config.get("DOCNODE_ADDR") == f"0.0.0.0:{ports.get('grpc')}",
           f"DOCNODE_ADDR {dn_config.get('DOCNODE_ADDR')!r} does not listen on the grpc port")
    expect(dn_config.get("ADMIN_ADDR") == f"0.0.0.0:{ports.get('admin')}",
           f"ADMIN_ADDR {dn_config.get('ADMIN_ADDR')!r} does not listen on the admin port")
    readiness = dn.get("readinessProbe", {}).get("httpGet", {})
    expect(readiness.get("path") == "/readyz" and readiness.get("port") == "admin",
           f"docnode readiness probe is {readiness}, want /readyz on the admin port")
    grace = int(pod_spec(statefulset).get("terminationGracePeriodSeconds", 30))
    shutdown = int(dn_config.get("SHUTDOWN_TIMEOUT_SECS", "10"))
    expect(grace > shutdown, f"docnode grace period {grace}s is not above SHUTDOWN_TIMEOUT_SECS {shutdown}s")
    expect("DATABASE_URL" in dn_env and "secretKeyRef" in dn_env["DATABASE_URL"].get("valueFrom", {}),
           "docnode DATABASE_URL does not come from a Secret")
    expect("REDIS_URL" in dn_env and "secretKeyRef" in dn_env["REDIS_URL"].get("valueFrom", {}),
           "docnode REDIS_URL does not come from a Secret")

    headless = [
        s for s in by_kind.get("Service", [])
        if s["metadata"]["name"] == statefulset["spec"]["serviceName"]
    ]
    expect(len(headless) == 1, f"no Service named after the StatefulSet's serviceName {statefulset['spec']['serviceName']!r}")
    domain = namespace = None
    if headless:
        svc = headless[0]
        expect(svc["spec"].get("clusterIP") == "None", "docnode Service is not headless")
        expect(matches(svc["spec"]["selector"], statefulset["spec"]["template"]["metadata"]["labels"]),
               "docnode Service does not select the docnode pods")
    advertise = dn_env.get("ADVERTISE_ADDR", {}).get("value", "")
    m = re.fullmatch(r"(https?)://\$\(POD_NAME\)\.([^.]+)\.\$\(POD_NAMESPACE\)\.svc\.(.+):(\d+)", advertise)
    expect(m is not None, f"ADVERTISE_ADDR {advertise!r} is not the pod's stable DNS name")
    scheme = "http"
    if m:
        scheme = m.group(1)
        expect(m.group(2) == statefulset["spec"]["serviceName"], "ADVERTISE_ADDR names another Service")
        expect(int(m.group(4)) == ports.get("grpc"), "ADVERTISE_ADDR port is not the grpc port")
        domain = m.group(3)
        namespace = NAMESPACE
    # gRPC mutual TLS: both sides have the key pair, and docnodes advertise https.
    grpc_tls = "GRPC_TLS_CERT_FILE" in dn_env
    expect(grpc_tls == (scheme == "https"),
           f"docnodes advertise {scheme}:// but GRPC_TLS_CERT_FILE is {'set' if grpc_tls else 'unset'}")

    # Membership: gateways and docnodes use the same source. Static: DOCNODES lists exactly
    # docnode-0..N-1 by the names the docnodes advertise. Redis: nobody has DOCNODES.
    gw = pod_spec(deployment)["containers"][0]
    gw_config = {}
    for ref in gw.get("envFrom", []):
        gw_config.update(configmaps.get(ref.get("configMapRef", {}).get("name"), {}))
    for key in ("REDIS_PREFIX", "MEMBERSHIP_TTL_MS"):
        expect(gw_config.get(key) == dn_config.get(key),
               f"{key} differs: gateway {gw_config.get(key)!r}, docnode {dn_config.get(key)!r}")
    expect(gw_config.get("DOCNODES") == dn_config.get("DOCNODES"),
           "gateways and docnodes have different DOCNODES: they would disagree on owners")
    if "DOCNODES" in gw_config:
        entries = [e for e in gw_config["DOCNODES"].split(",") if e]
        expect(len(entries) == replicas, f"DOCNODES has {len(entries)} entries for {replicas} docnodes")
        for i, entry in enumerate(entries):
            want_id = f"{sts_name}-{i}"
            want_url = f"{scheme}://{want_id}.{statefulset['spec']['serviceName']}.{namespace}.svc.{domain}:{ports.get('grpc')}"
            expect(entry == f"{want_id}={want_url}", f"DOCNODES entry {i} is {entry!r}, want {want_id}={want_url}")
        print(f"  membership: static, DOCNODES lists {len(entries)} docnodes")
    else:
        print("  membership: redis discovery (no DOCNODES)")
    expect("REDIS_URL" in env_of(gw), "gateway has no REDIS_URL")
    expect(("GRPC_TLS_CERT_FILE" in env_of(gw)) == grpc_tls,
           "gateways and docnodes disagree on gRPC mutual TLS (GRPC_TLS_CERT_FILE)")
    gw_ports = {p["name"]: p["containerPort"] for p in gw.get("ports", [])}
    expect(gw_config.get("PORT") == str(gw_ports.get("http")), "gateway PORT is not its http container port")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = gw.get(probe, {}).get("httpGet", {}).get("path")
        expect(got == path, f"gateway {probe} path is {got!r}, want {path}")
    checksum = deployment["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/config")
    expect(bool(checksum), "gateway pods carry no checksum/config: a new DOCNODES would not roll them")

    # Services, PDBs, HPA, Ingress point at the right pods.
    for svc in by_kind.get("Service", []):
        target = [w for w in workloads if matches(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        expect(len(target) == 1, f"Service/{svc['metadata']['name']} selects {len(target)} workloads")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        target = [w for w in workloads if matches(pdb["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])]
        expect(len(target) == 1, f"PodDisruptionBudget/{pdb['metadata']['name']} selects {len(target)} workloads")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        expect(ref["kind"] == "Deployment" and ref["name"] == deployment["metadata"]["name"],
               "HPA does not scale the gateway Deployment")
        expect("replicas" not in deployment["spec"], "gateway Deployment sets replicas while an HPA owns them")
    gateway_services = [s["metadata"]["name"] for s in by_kind.get("Service", [])
                        if matches(s["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])]
    for ingress in by_kind.get("Ingress", []):
        annotations = ingress["metadata"].get("annotations", {})
        expect(annotations.get("nginx.ingress.kubernetes.io/affinity") == "cookie",
               "Ingress has no cookie affinity annotation")
        timeout = int(annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "60"))
        ping = int(gw_config.get("PING_PERIOD_SECS", "54"))
        expect(timeout > ping, f"Ingress proxy-read-timeout {timeout}s is not above the ping period {ping}s")
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                expect(path["backend"]["service"]["name"] in gateway_services,
                       "Ingress backend is not the gateway Service")
    for monitor in by_kind.get("ServiceMonitor", []):
        selected = [s for s in by_kind.get("Service", []) if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        expect(len(selected) == 1, f"ServiceMonitor/{monitor['metadata']['name']} selects {len(selected)} Services")
        for s in selected:
            port_names = {p["name"] for p in s["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                expect(endpoint["port"] in port_names,
                       f"ServiceMonitor/{monitor['metadata']['name']} scrapes port {endpoint['port']!r} its Service lacks")

    check_admin_ports(by_kind, deployment, statefulset, gw, gw_config)
    check_identity(by_kind, workloads)
    check_network_policies(by_kind, deployment, statefulset)
    check_monitoring(by_kind)
    check_helm_test(by_kind)


def ports_of(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def check_admin_ports(by_kind: dict[str, list[dict[str, Any]]], deployment: dict[str, Any],
                      statefulset: dict[str, Any], gw: dict[str, Any], gw_config: dict[str, str]) -> None:
    """Health and metrics live on the admin ports; nothing public routes to them."""
    gw_ports = ports_of(gw)
    expect("admin" in gw_ports, f"gateway ports are {sorted(gw_ports)}, want http and admin")
    expect(gw_config.get("ADMIN_ADDR") == f"0.0.0.0:{gw_ports.get('admin')}",
           f"gateway ADMIN_ADDR {gw_config.get('ADMIN_ADDR')!r} does not listen on its admin port")
    expect(gw_ports.get("admin") != gw_ports.get("http"), "gateway admin port is its public port")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        port = gw.get(probe, {}).get("httpGet", {}).get("port")
        expect(port == "admin", f"gateway {probe} uses port {port!r}, want the admin port")
    gateway_labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    public = {name: {p["name"]: p for p in svc["spec"]["ports"]} for name, svc in services.items()
              if matches(svc["spec"]["selector"], gateway_labels)}
    for ingress in by_kind.get("Ingress", []):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                port = path["backend"]["service"].get("port", {})
                expect(port.get("name") == "http", f"Ingress routes to port {port}, want the http port only")
    for route in by_kind.get("HTTPRoute", []):
        expect(bool(route["spec"].get("parentRefs")), "HTTPRoute has no parentRefs")
        for rule in route["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                ports = public.get(ref["name"])
                expect(ports is not None, f"HTTPRoute backend {ref['name']!r} is not the gateway Service")
                if ports:
                    expect(ref.get("port") == ports.get("http", {}).get("port"),
                           f"HTTPRoute routes to port {ref.get('port')}, want the Service's http port")
    for name, ports in public.items():
        expect("admin" in ports, f"Service/{name} has no admin port for the ServiceMonitor")


def check_identity(by_kind: dict[str, list[dict[str, Any]]], workloads: list[dict[str, Any]]) -> None:
    """Pods run as the chart's ServiceAccount (or a named one) with no API token."""
    accounts = {a["metadata"]["name"] for a in by_kind.get("ServiceAccount", [])}
    for w in workloads:
        spec = pod_spec(w)
        name = f"{w['kind']}/{w['metadata']['name']}"
        expect(spec.get("automountServiceAccountToken") is False, f"{name} mounts an API token")
        account = spec.get("serviceAccountName")
        expect(bool(account), f"{name} names no ServiceAccount")
        if accounts:
            expect(account in accounts, f"{name} runs as {account!r}, which the chart does not create")
        container = spec["containers"][0]
        env = env_of(container)
        key_file = env.get("JWT_PUBLIC_KEY_FILE", {}).get("value")
        if key_file:
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            mounted = [m for m in container.get("volumeMounts", [])
                       if key_file.startswith(m["mountPath"].rstrip("/") + "/")]
            expect(len(mounted) == 1, f"{name}: JWT_PUBLIC_KEY_FILE {key_file} is not on a mounted volume")
            for m in mounted:
                expect("secret" in volumes.get(m["name"], {}), f"{name}: the JWT key volume is not a Secret")
                expect(m.get("readOnly") is True, f"{name}: the JWT key is mounted writable")
        if "JWT_SECRET" in env:
            expect("secretKeyRef" in env["JWT_SECRET"].get("valueFrom", {}), f"{name}: JWT_SECRET is not from a Secret")
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"] for v in spec.get("volumes", [])}
        expect(mounts <= volumes, f"{name} mounts volumes it does not declare: {sorted(mounts - volumes)}")


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    return matches(policy["spec"]["podSelector"].get("matchLabels", {}), labels)


def check_network_policies(by_kind: dict[str, list[dict[str, Any]]], deployment: dict[str, Any],
                           statefulset: dict[str, Any]) -> None:
    """Gateways reach docnodes; nothing but gateways reaches the docnodes' gRPC port."""
    policies = by_kind.get("NetworkPolicy", [])
    if not policies:
        return
    gateway_labels = deployment["spec"]["template"]["metadata"]["labels"]
    docnode_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    for labels, component in ((gateway_labels, "gateway"), (docnode_labels, "docnode")):
        own = [p for p in policies if selects(p, labels)]
        expect(len(own) == 1, f"{len(own)} NetworkPolicies select the {component}s, want 1")
        for p in own:
            expect(set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"},
                   f"NetworkPolicy/{p['metadata']['name']} does not restrict both directions")
    for p in policies:
        if not selects(p, docnode_labels):
            continue
        for rule in p["spec"].get("ingress", []):
            ports = {port.get("port") for port in rule.get("ports", [])}
            expect(bool(ports), f"NetworkPolicy/{p['metadata']['name']}: an ingress rule opens every port")
            if "grpc" in ports:
                peers = rule.get("from", [])
                expect(len(peers) > 0 and all(
                    set(peer) == {"podSelector"} and matches(peer["podSelector"]["matchLabels"], gateway_labels)
                    for peer in peers), "docnode gRPC is reachable from more than the gateways")
            expect(ports <= {"grpc", "admin"}, f"docnodes accept traffic on {sorted(ports)}")
    gw_egress = [r for p in policies if selects(p, gateway_labels) for r in p["spec"].get("egress", [])]
    grpc = statefulset["spec"]["template"]["spec"]["containers"][0]
    grpc_port = ports_of(grpc).get("grpc")
    expect(any(any(port.get("port") == grpc_port for port in r.get("ports", []))
               and any(matches(peer.get("podSelector", {}).get("matchLabels", {}), docnode_labels)
                       for peer in r.get("to", []))
               for r in gw_egress), "gateways may not reach the docnodes' gRPC port")


def check_monitoring(by_kind: dict[str, list[dict[str, Any]]]) -> None:
    """The PrometheusRule and the dashboard ConfigMap carry the repository's files unchanged."""
    for monitor in by_kind.get("ServiceMonitor", []):
        for endpoint in monitor["spec"]["endpoints"]:
            expect(endpoint.get("port") == "admin", f"ServiceMonitor/{monitor['metadata']['name']} scrapes {endpoint.get('port')!r}, not the admin port")
    rules_file = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    for rule in by_kind.get("PrometheusRule", []):
        expect(rule["spec"] == rules_file, "the PrometheusRule differs from files/prometheus-rules.yaml")
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    for cm in by_kind.get("ConfigMap", []):
        data = cm.get("data", {})
        if "grafana-dashboard.json" in data:
            expect(json.loads(data["grafana-dashboard.json"]) == dashboard,
                   "the dashboard ConfigMap differs from files/grafana-dashboard.json")
            expect(cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1",
                   "the dashboard ConfigMap lacks the sidecar's grafana_dashboard label")


def check_helm_test(by_kind: dict[str, list[dict[str, Any]]]) -> None:
    """`helm test` opens a document through the gateway Service."""
    tests = [p for p in by_kind.get("Pod", [])
             if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    expect(len(tests) == 1, f"{len(tests)} helm test pods, want 1")
    for pod in tests:
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        gateway_services = [s for s in by_kind.get("Service", [])
                            if s["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway"]
        hosts = {f"{s['metadata']['name']}.{NAMESPACE}.svc." for s in gateway_services}
        expect(any(str(env.get("HOST", "")).startswith(h) for h in hosts),
               f"the test pod dials {env.get('HOST')!r}, not the gateway Service")
        ports = {str(p["port"]) for s in gateway_services for p in s["spec"]["ports"] if p["name"] == "http"}
        expect(env.get("PORT") in ports, f"the test pod dials port {env.get('PORT')!r}, not the Service's http port")
        expect("/api/socket/" in " ".join(container.get("args", [])), "the test pod does not open a document socket")
        expect(container.get("securityContext", {}).get("readOnlyRootFilesystem") is True,
               "the test pod's root filesystem is writable")


def helm_reject() -> int:
    """Values the chart must refuse, and how."""
    import helm_python as helm

    cases: list[tuple[str, dict[str, Any]]] = [
        ("docnode.replicaCount as a string", {"docnode": {"replicaCount": "three"}}),
        ("zero docnodes", {"docnode": {"replicaCount": 0}}),
        ("an unknown log format", {"log": {"format": "xml"}}),
        ("a typo in a key", {"gateway": {"replicas": 3}}),
        ("a DATABASE_URL that is not postgres://", {"database": {"url": "mysql://x@y/z"}}),
        ("a grace period not above SHUTDOWN_TIMEOUT_SECS",
         {"docnode": {"shutdownTimeoutSecs": 30, "terminationGracePeriodSeconds": 30}}),
        ("JWT on without a Secret holding the key", {"auth": {"jwt": {"enabled": True}}}),
        ("an unknown JWT algorithm", {"auth": {"jwt": {"algorithm": "none"}}}),
        ("an HTTPRoute attached to no Gateway", {"gateway": {"httpRoute": {"enabled": True}}}),
        ("a NetworkPolicy egress port of 0", {"networkPolicy": {"enabled": True, "postgres": {"port": 0}}}),
        ("a priorityClassName that is not a name", {"docnode": {"priorityClassName": "Not A Name"}}),
    ]
    for label, values in cases:
        try:
            render(values)
        except helm.HelmError as error:
            first = str(error).strip().splitlines()[-1]
            print(f"  refused {label}: {first}")
        else:
            problem(f"the chart accepted {label}: {values}")
    return finish()


# ------------------------------------------------------------------------------ ServiceMonitor

# The part of the Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com/v1) that the
# chart uses, closed with additionalProperties: false so that a misspelt field fails here as it
# would against the real CRD. kubernetes-validate ships no CRD schemas.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "matchExpressions": {"type": "array"},
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


DURATION = "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
OBJECT_META: dict[str, Any] = SERVICE_MONITOR_SCHEMA["properties"]["metadata"]

# The part of the Prometheus Operator's PrometheusRule CRD the chart uses.
PROMETHEUS_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": OBJECT_META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": {"type": "string", "pattern": DURATION},
                                        "keep_firing_for": {"type": "string", "pattern": DURATION},
                                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

# The part of the Gateway API's HTTPRoute (gateway.networking.k8s.io/v1) the chart uses.
HTTP_ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": OBJECT_META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "group": {"type": "string"},
                            "kind": {"type": "string"},
                            "namespace": {"type": "string"},
                            "name": {"type": "string", "minLength": 1, "maxLength": 253},
                            "sectionName": {"type": "string"},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        },
                    },
                },
                "hostnames": {"type": "array", "maxItems": 16, "items": {"type": "string", "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}},
                "rules": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matches": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "path": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                                                "value": {"type": "string", "pattern": "^/"},
                                            },
                                        },
                                    },
                                },
                            },
                            "backendRefs": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["name", "port"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "name": {"type": "string", "minLength": 1},
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                        "weight": {"type": "integer", "minimum": 0},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": SERVICE_MONITOR_SCHEMA,
    "PrometheusRule": PROMETHEUS_RULE_SCHEMA,
    "HTTPRoute": HTTP_ROUTE_SCHEMA,
}


def crds(directory: str) -> int:
    files = sorted(Path(directory).glob("*.yaml"))
    kinds: dict[str, int] = {}
    for path in files:
        doc = yaml.safe_load(path.read_text())
        schema = CRD_SCHEMAS.get(doc.get("kind"))
        if schema is None:
            problem(f"{path.name}: no schema for kind {doc.get('kind')!r}")
            continue
        kinds[doc["kind"]] = kinds.get(doc["kind"], 0) + 1
        for error in jsonschema.Draft7Validator(schema).iter_errors(doc):
            where = ".".join(str(p) for p in error.absolute_path)
            problem(f"{path.name}: {where}: {error.message}")
    print("  checked " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    return finish()


# ------------------------------------------------------------------------------ dashboards, rules

DASHBOARD = CHART / "files" / "grafana-dashboard.json"
RULES = CHART / "files" / "prometheus-rules.yaml"
# Grafana's own variables, replaced by what they stand for so promtool can parse the query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, rows' nested panels included."""
    queries = []
    panels = list(board.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            queries.append((panel.get("title", "?"), target.get("expr", "")))
    return queries


def dashboard(out_rules: str) -> int:
    board = json.loads(DASHBOARD.read_text())
    expect(bool(board.get("uid")) and bool(board.get("title")), "the dashboard has no uid or title")
    ids: list[int] = []
    panels = list(board.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))
        ids.append(panel.get("id"))
        if panel.get("type") != "row":
            expect(bool(panel.get("targets")), f"panel {panel.get('title')!r} has no query")
            expect(panel.get("datasource", {}).get("uid") == "${datasource}",
                   f"panel {panel.get('title')!r} does not use the datasource variable")
    expect(len(ids) == len(set(ids)), "panel ids repeat")
    rules = []
    for i, (title, expr) in enumerate(dashboard_queries(board)):
        expect(bool(expr.strip()), f"panel {title!r} has an empty query")
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        expect("$" not in expr, f"panel {title!r} uses a variable promtool cannot stand in for: {expr}")
        rules.append({"record": f"codraft:dashboard_query:{i}", "expr": expr})
    Path(out_rules).write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False))
    print(f"  {len(ids)} panels, {len(rules)} queries written to {out_rules} for promtool")
    return finish()


def metric_names() -> int:
    """Every codraft series the alerts and the dashboard name is in docs/operations.md, so a
    renamed series cannot silently break an alert or a panel."""
    docs = (ROOT / "docs" / "operations.md").read_text()
    rules = yaml.safe_load(RULES.read_text())
    exprs = [str(r["expr"]) for g in rules["groups"] for r in g["rules"]]
    exprs += [e for _, e in dashboard_queries(json.loads(DASHBOARD.read_text()))]
    used: set[str] = set()
    for expr in exprs:
        for name in re.findall(r"\b((?:codraft|process)_[a-z0-9_]+)", expr):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    for name in sorted(used):
        expect(f"`{name}`" in docs, f"{name} is used by an alert or panel but not documented in docs/operations.md")
    print(f"  {len(used)} series used by alerts and dashboard, all documented")
    return finish()


# ------------------------------------------------------------------------------ compose, otel, nginx


def duration_seconds(text: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text)):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def compose() -> int:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services: dict[str, Any] = doc["services"]
    docnodes = {n: s for n, s in services.items() if s.get("build", {}).get("target") == "docnode"}
    gateways = {n: s for n, s in services.items() if s.get("build", {}).get("target") == "gateway"}
    expect(len(docnodes) >= 3, f"{len(docnodes)} docnodes, want at least 3")
    expect(len(gateways) >= 2, f"{len(gateways)} gateways, want at least 2")
    for wanted in ("postgres", "redis", "jaeger", "otel-collector", "lb"):
        expect(wanted in services, f"no {wanted} service")

    advertised = {}
    docnodes_env: dict[str, str | None] = {}
    for name, svc in docnodes.items():
        env = svc.get("environment", {})
        node_id, advertise = env.get("NODE_ID"), env.get("ADVERTISE_ADDR")
        expect(node_id == name, f"{name}: NODE_ID {node_id!r} is not the service name")
        expect(advertise == f"http://{name}:{env.get('DOCNODE_ADDR', '').rsplit(':', 1)[-1]}",
               f"{name}: ADVERTISE_ADDR {advertise!r} does not name the service and its DOCNODE_ADDR port")
        expect(env.get("DOCNODE_ADDR", "").startswith("0.0.0.0:"), f"{name}: DOCNODE_ADDR does not listen on all interfaces")
        expect(env.get("ADMIN_ADDR", "").startswith("0.0.0.0:"), f"{name}: ADMIN_ADDR does not listen on all interfaces")
        for key in ("DATABASE_URL", "REDIS_URL"):
            expect(bool(env.get(key)), f"{name}: no {key}")
        docnodes_env[name] = env.get("DOCNODES")
        grace = duration_seconds(svc.get("stop_grace_period", "10s"))
        shutdown = float(env.get("SHUTDOWN_TIMEOUT_SECS", 10))
        expect(grace > shutdown, f"{name}: stop_grace_period {grace}s is not above SHUTDOWN_TIMEOUT_SECS {shutdown}s")
        expect("healthcheck" in svc, f"{name}: no healthcheck")
        advertised[node_id] = advertise

    for name, value in docnodes_env.items():
        gateway_list = next(iter(gateways.values()), {}).get("environment", {}).get("DOCNODES")
        expect(value == gateway_list,
               f"{name}: DOCNODES {value!r} differs from the gateways' {gateway_list!r}: they would disagree on owners")
    for name, svc in gateways.items():
        env = svc.get("environment", {})
        entries = dict(e.split("=", 1) for e in env.get("DOCNODES", "").split(",") if "=" in e)
        expect(entries == advertised,
               f"{name}: DOCNODES {entries} is not the docnodes' NODE_ID=ADVERTISE_ADDR {advertised}")
        expect(bool(env.get("REDIS_URL")), f"{name}: no REDIS_URL")
        expect("healthcheck" in svc, f"{name}: no healthcheck")
        deps = svc.get("depends_on", {})
        for dn in docnodes:
            expect(isinstance(deps, dict) and deps.get(dn, {}).get("condition") == "service_healthy",
                   f"{name}: does not wait for {dn} to be healthy")

    nginx = (DEPLOY / "nginx.conf").read_text()
    upstream = set(re.findall(r"^\s*server\s+([\w.-]+):(\d+)", nginx, re.M))
    want = {(n, str(s.get("environment", {}).get("PORT", "3030"))) for n, s in gateways.items()}
    expect(upstream == want, f"nginx upstream servers {sorted(upstream)} are not the gateways {sorted(want)}")
    lb = services.get("lb", {})
    for gw in gateways:
        expect(lb.get("depends_on", {}).get(gw, {}).get("condition") == "service_healthy",
               f"lb does not wait for {gw} to be healthy")

    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                expect((ROOT / source).exists(), f"{name}: mounts {source}, which does not exist")
        build = svc.get("build")
        if build:
            expect((ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).exists(),
                   f"{name}: Dockerfile {build.get('dockerfile')} does not exist")
    # Metrics: every gateway and docnode serves its admin port, and Prometheus scrapes
    # exactly those, with the chart's rules file; Grafana gets the chart's dashboard.
    for wanted in ("prometheus", "grafana"):
        expect(wanted in services, f"no {wanted} service")
    for name, svc in gateways.items():
        admin = svc.get("environment", {}).get("ADMIN_ADDR", "")
        expect(admin.startswith("0.0.0.0:"), f"{name}: ADMIN_ADDR {admin!r} does not listen on all interfaces")
    admin_targets = {f"{n}:{s.get('environment', {}).get('ADMIN_ADDR', '').rsplit(':', 1)[-1]}"
                     for n, s in {**gateways, **docnodes}.items()}
    prometheus_config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped = {t for job in prometheus_config.get("scrape_configs", []) if job.get("job_name", "").startswith("codraft")
               for sc in job.get("static_configs", []) for t in sc.get("targets", [])}
    expect(scraped == admin_targets, f"Prometheus scrapes {sorted(scraped)}, want the admin ports {sorted(admin_targets)}")
    mounts = " ".join(str(v) for v in services.get("prometheus", {}).get("volumes", []))
    expect("helm/codraft/files/prometheus-rules.yaml" in mounts, "Prometheus does not load the chart's rules file")
    for rule_file in prometheus_config.get("rule_files", []):
        expect(rule_file in mounts, f"Prometheus loads {rule_file}, which is not mounted")
    mounts = " ".join(str(v) for v in services.get("grafana", {}).get("volumes", []))
    expect("helm/codraft/files/grafana-dashboard.json" in mounts, "Grafana does not load the chart's dashboard")
    print(f"  {len(docnodes)} docnodes, {len(gateways)} gateways, DOCNODES and nginx upstreams agree;"
          f" Prometheus scrapes {len(scraped)} admin ports")
    return finish()


def otel() -> int:
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    protocols = config.get("receivers", {}).get("otlp", {}).get("protocols", {})
    expect("grpc" in protocols and "http" in protocols, "the otlp receiver needs both grpc and http")
    expect(protocols.get("grpc", {}).get("endpoint", "").endswith(":4317"), "OTLP gRPC is not on 4317")
    expect(protocols.get("http", {}).get("endpoint", "").endswith(":4318"), "OTLP HTTP is not on 4318")
    expect("batch" in config.get("processors", {}), "no batch processor")
    exporters = config.get("exporters", {})
    jaeger = [n for n, c in exporters.items() if n.split("/")[0] == "otlp" and "jaeger" in str((c or {}).get("endpoint", ""))]
    expect(len(jaeger) == 1, "no OTLP exporter to jaeger")
    service = config.get("service", {})
    for ext in service.get("extensions", []):
        expect(ext in config.get("extensions", {}), f"extension {ext} is used but not configured")
    pipelines = service.get("pipelines", {})
    expect("traces" in pipelines, "no traces pipeline")
    for pname, pipeline in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                expect(component in config.get(section, {}),
                       f"pipeline {pname} uses {section[:-1]} {component}, which is not configured")
        expect("batch" in pipeline.get("processors", []), f"pipeline {pname} does not batch")
        processors = pipeline.get("processors", [])
        if "memory_limiter" in processors:
            expect(processors[0] == "memory_limiter", f"pipeline {pname}: memory_limiter must come first")
        for j in jaeger:
            expect(j in pipeline.get("exporters", []), f"pipeline {pname} does not export to {j}")
    # Every service that sends traces points at this collector's OTLP gRPC port.
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name, svc in services.items():
        endpoint = (svc.get("environment") or {}).get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if endpoint:
            expect(endpoint == "http://otel-collector:4317", f"{name}: OTLP endpoint {endpoint!r} is not the collector")
    print(f"  pipelines: {', '.join(f'{n}: ' + ' -> '.join('+'.join(p.get(s, [])) for s in ('receivers', 'processors', 'exporters')) for n, p in pipelines.items())}")
    return finish()


def nginx() -> int:
    text = (DEPLOY / "nginx.conf").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    expect(code.count("{") == code.count("}"), "unbalanced braces")
    required: dict[str, str] = {
        "consistent hashing on a cookie": r"\bhash\s+\$\w*cookie\w*\s+consistent\s*;|\bhash\s+\$codraft_lb_key\s+consistent\s*;",
        "a cookie-derived affinity key": r"map\s+\$cookie_\w+\s+\$codraft_lb_key",
        "HTTP/1.1 to the upstream": r"proxy_http_version\s+1\.1\s*;",
        "the Upgrade header passed on": r"proxy_set_header\s+Upgrade\s+\$http_upgrade\s*;",
        "the Connection header passed on": r"proxy_set_header\s+Connection\s+\$connection_upgrade\s*;",
        "a WebSocket location": r"location\s+/api/socket/\s*\{",
    }
    for label, pattern in required.items():
        expect(re.search(pattern, code) is not None, f"missing {label} ({pattern})")
    socket_block = re.search(r"location\s+/api/socket/\s*\{([^}]*)\}", code)
    if socket_block:
        m = re.search(r"proxy_read_timeout\s+(\d+)s?\s*;", socket_block.group(1))
        expect(m is not None and int(m.group(1)) > 60,
               "the WebSocket location needs proxy_read_timeout above the gateways' PING_PERIOD_SECS")
    print("  sticky hash, WebSocket upgrade headers and long socket timeouts present")
    return finish()


COMMANDS: dict[str, Callable[..., int]] = {
    "helm-lint": helm_lint,
    "helm-render": helm_render,
    "helm-reject": helm_reject,
    "crds": crds,
    "dashboard": dashboard,
    "metric-names": metric_names,
    "compose": compose,
    "otel": otel,
    "nginx": nginx,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))
