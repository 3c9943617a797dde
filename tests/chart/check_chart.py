"""Checks of the Helm chart charts/weir, run by tests/tests/chart.rs with the real Helm library
(helm-python-sdk, Helm SDK v4 inside) and the Kubernetes OpenAPI schemas (kubernetes-validate).

Every check runs over every values case in charts/weir/ci/*-values.yaml. Usage:

    check_chart.py lint                      helm lint --strict, then kubernetes-validate --strict
    check_chart.py security BROKER_SET.yaml  Pod Security "restricted" for the operator and the brokers
    check_chart.py selectors BROKER_SET.yaml monitor / policy selectors match the pods they target
    check_chart.py rbac OPERATOR_RBAC.yaml   chart RBAC == what `weir-operator rbac` says it needs
    check_chart.py files                     CRDs, dashboards and alerts equal their sources

Exits non-zero with one line per problem.
"""

import glob
import json
import os
import sys

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "charts", "weir")
RELEASE, NAMESPACE = "weir", "weir-system"
# A current Kubernetes release (schemas bundled with kubernetes-validate), and the oldest the
# chart supports (Chart.yaml kubeVersion).
KUBE_VERSIONS = ["1.34.0", "1.30.0"]
# Kinds from CRDs: no OpenAPI schema in kubernetes-validate; checked by the other commands.
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule"}

problems = []


def problem(case, message):
    problems.append(f"[{case}] {message}")


def cases():
    """(name, values) of every values case."""
    for path in sorted(glob.glob(os.path.join(CHART, "ci", "*-values.yaml"))):
        name = os.path.basename(path)[: -len("-values.yaml")]
        with open(path) as f:
            yield name, yaml.safe_load(f) or {}


def render(values):
    """The rendered manifests (NOTES.txt excluded) as a list of objects."""
    chart = helm.Chart.load(CHART)
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for source, text in sorted(out.items()):
        if source.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def lint():
    for case, values in cases():
        result = helm.lint(CHART, values, strict=True, kube_version="v" + KUBE_VERSIONS[-1])
        for message in result.get("messages") or []:
            # Severity 1 is INFO ("icon is recommended"); --strict fails on WARNING (2) and above.
            if message.get("severity", 0) >= 2:
                problem(case, f"helm lint: {message.get('path')}: {message.get('error')}")
        for error in result.get("errors") or []:
            problem(case, f"helm lint: {error}")
        docs = render(values)
        if not docs:
            problem(case, "renders nothing")
        for doc in docs:
            what = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            if doc.get("kind") in CUSTOM_KINDS:
                continue
            for version in KUBE_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    problem(case, f"{what} is invalid for Kubernetes {version}: {e.message} at {list(e.path)}")
                except kubernetes_validate.SchemaNotFoundError:
                    problem(case, f"{what}: no schema for Kubernetes {version}")
        print(f"{case}: {len(docs)} objects rendered, linted and validated for Kubernetes {', '.join(KUBE_VERSIONS)}")


def pod_spec(doc):
    if doc.get("kind") in ("Deployment", "StatefulSet"):
        return doc["spec"]["template"]["spec"]
    return None


def check_restricted(case, what, spec):
    """Pod Security Standards, level "restricted" (v1.30+ rules), plus resources on every container."""
    pod_ctx = spec.get("securityContext") or {}
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        problem(case, f"{what}: uses host namespaces")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            problem(case, f"{what}: hostPath volume {volume['name']}")
    for container in (spec.get("initContainers") or []) + spec["containers"]:
        name = f"{what} container {container['name']}"
        ctx = container.get("securityContext") or {}

        def setting(key):
            return ctx.get(key, pod_ctx.get(key))

        if setting("runAsNonRoot") is not True:
            problem(case, f"{name}: runAsNonRoot is not true")
        if setting("runAsUser") == 0:
            problem(case, f"{name}: runs as uid 0")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problem(case, f"{name}: allowPrivilegeEscalation is not false")
        if ctx.get("privileged"):
            problem(case, f"{name}: privileged")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problem(case, f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problem(case, f"{name}: adds capabilities {caps.get('add')}")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(case, f"{name}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problem(case, f"{name}: root filesystem is writable")
        resources = container.get("resources") or {}
        if not (resources.get("requests") or {}).get("cpu") or not (resources.get("requests") or {}).get("memory"):
            problem(case, f"{name}: no cpu and memory requests")
        if not (resources.get("limits") or {}).get("memory"):
            problem(case, f"{name}: no memory limit")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problem(case, f"{name}: hostPort {port['hostPort']}")


def security(*broker_set_paths):
    for path in broker_set_paths:
        (broker_set,) = load_yaml_docs(path)
        check_restricted("operator-built", f"broker StatefulSet {os.path.basename(path)}", pod_spec(broker_set))
    for case, values in cases():
        workloads = [d for d in render(values) if pod_spec(d)]
        if not workloads:
            problem(case, "no workload rendered")
        for doc in workloads:
            check_restricted(case, f"{doc['kind']} {doc['metadata']['name']}", pod_spec(doc))
        print(f"{case}: {len(workloads)} workloads meet Pod Security 'restricted'")


def matches(selector, labels):
    """Whether a LabelSelector (matchLabels only, as the chart uses) selects `labels`."""
    if selector.get("matchExpressions"):
        raise ValueError("matchExpressions are not used by the chart")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def selectors(broker_set_path):
    (broker_set,) = load_yaml_docs(broker_set_path)
    broker_labels = broker_set["spec"]["template"]["metadata"]["labels"]
    broker_ports = {p["name"] for c in pod_spec(broker_set)["containers"] for p in c.get("ports") or []}
    for case, values in cases():
        docs = render(values)
        (operator,) = [d for d in docs if d["kind"] == "Deployment"]
        operator_labels = operator["spec"]["template"]["metadata"]["labels"]
        operator_ports = {p["name"] for c in pod_spec(operator)["containers"] for p in c.get("ports") or []}
        if not matches(operator["spec"]["selector"], operator_labels):
            problem(case, "the operator Deployment's selector does not match its pods")
        checked = 0
        for doc in docs:
            kind, name = doc["kind"], doc["metadata"]["name"]
            if kind == "PodMonitor":
                component = doc["metadata"]["labels"].get("app.kubernetes.io/component")
                labels, ports = (broker_labels, broker_ports) if component == "broker" else (operator_labels, operator_ports)
                if not matches(doc["spec"]["selector"], labels):
                    problem(case, f"PodMonitor {name} selects no {component} pod")
                for endpoint in doc["spec"]["podMetricsEndpoints"]:
                    if endpoint["port"] not in ports:
                        problem(case, f"PodMonitor {name}: port {endpoint['port']} is not a {component} port {sorted(ports)}")
                if component == "operator" and doc["metadata"]["namespace"] != NAMESPACE:
                    problem(case, f"PodMonitor {name} is not in the operator's namespace")
                checked += 1
            elif kind == "Service":
                if not matches({"matchLabels": doc["spec"]["selector"]}, operator_labels):
                    problem(case, f"Service {name} selects no operator pod")
                for port in doc["spec"]["ports"]:
                    if port["targetPort"] not in operator_ports:
                        problem(case, f"Service {name}: targetPort {port['targetPort']} is not an operator port")
                checked += 1
            elif kind in ("NetworkPolicy", "PodDisruptionBudget"):
                component = doc["metadata"]["labels"].get("app.kubernetes.io/component")
                labels = broker_labels if component == "broker" else operator_labels
                selector = doc["spec"]["podSelector"] if kind == "NetworkPolicy" else doc["spec"]["selector"]
                if not matches(selector, labels):
                    problem(case, f"{kind} {name} selects no {component} pod")
                checked += 1
        if values.get("monitoring", {}).get("podMonitor", {}).get("enabled"):
            monitors = [d for d in docs if d["kind"] == "PodMonitor"]
            if len(monitors) != 2:
                problem(case, f"expected PodMonitors for the operator and the brokers, found {len(monitors)}")
        checked += broker_tls(case, values, docs, operator)
        print(f"{case}: {checked} selectors match their pods")


def broker_tls(case, values, docs, operator):
    """With broker.tls: every file the operator's TLS flags name lies in the mounted operator
    Secret, and the broker PodMonitor scrapes over HTTPS checking the `weir-broker` name against
    that Secret's CA. Without it, no TLS flag and no HTTPS scrape. Returns the checks made."""
    tls = values.get("broker", {}).get("tls", {})
    (container,) = pod_spec(operator)["containers"]
    flags = dict(a[2:].split("=", 1) for a in container.get("args") or [] if a.startswith("--broker-tls-"))
    client_auth = "--broker-client-auth" in (container.get("args") or [])
    monitors = [d for d in docs if d["kind"] == "PodMonitor" and d["metadata"]["name"] == "weir-broker"]
    schemes = [e.get("scheme", "http") for m in monitors for e in m["spec"]["podMetricsEndpoints"]]
    if not tls.get("enabled"):
        if flags or client_auth or "https" in schemes:
            problem(case, f"TLS is off but the operator has {sorted(flags)} / the PodMonitor scrapes {schemes}")
        return 0
    secret = tls.get("operatorSecret", "weir-operator-tls")
    volumes = {v["name"]: v for v in pod_spec(operator).get("volumes") or []}
    mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container.get("volumeMounts") or []}
    wanted = {"broker-tls-ca"} | ({"broker-tls-cert", "broker-tls-key"} if tls.get("clientAuth") else set())
    if set(flags) != wanted or client_auth != bool(tls.get("clientAuth")):
        problem(case, f"operator TLS flags {sorted(flags)} (client auth {client_auth}), expected {sorted(wanted)}")
    for flag, path in flags.items():
        directory, _, key = path.rpartition("/")
        source = mounts.get(directory, {}).get("secret", {})
        if source.get("secretName") != secret:
            problem(case, f"--{flag}={path} is not in a mount of the Secret {secret}")
        if key not in ("ca.crt", "tls.crt", "tls.key"):
            problem(case, f"--{flag}={path}: {key} is not a key of a kubernetes.io/tls Secret")
    for monitor in monitors:
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            config = endpoint.get("tlsConfig") or {}
            ca = (config.get("ca") or {}).get("secret") or {}
            if endpoint.get("scheme") != "https" or config.get("serverName") != "weir-broker" or ca != {"name": secret, "key": "ca.crt"}:
                problem(case, f"PodMonitor weir-broker does not scrape over HTTPS trusting {secret}/ca.crt: {endpoint}")
    return 1 + broker_acl(case, values, container)


def broker_acl(case, values, container):
    """With broker.acl: the operator names the ACL Secret and takes its credentials from the
    credentials Secret through the environment (never the command line). Returns the checks made."""
    acl = values.get("broker", {}).get("acl", {})
    args = [a for a in container.get("args") or [] if a.startswith("--broker-acl-secret=")]
    env = {e["name"]: (e.get("valueFrom") or {}).get("secretKeyRef") for e in container.get("env") or []}
    if not acl.get("enabled"):
        if args or "WEIR_BROKER_SECRET_KEY" in env:
            problem(case, "access control is off but the operator is configured for it")
        return 0
    if args != [f"--broker-acl-secret={acl.get('secretName', 'weir-acl')}"]:
        problem(case, f"operator ACL flag {args}")
    credentials = acl.get("operatorCredentialsSecret", "weir-operator-credentials")
    for name, key in (("WEIR_BROKER_ACCESS_KEY", "accessKey"), ("WEIR_BROKER_SECRET_KEY", "secretKey")):
        if env.get(name) != {"name": credentials, "key": key}:
            problem(case, f"{name} does not come from Secret {credentials} key {key}: {env.get(name)}")
    if any("secret-key" in a for a in container.get("args") or []):
        problem(case, "the operator's secret key is on its command line")
    return 1


def triples(rules):
    """(apiGroup, resource, verb, resourceNames) of every rule."""
    out = set()
    for rule in rules or []:
        names = tuple(sorted(rule.get("resourceNames") or []))
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    out.add((group, resource, verb, names))
    return out


def rbac(operator_rbac_path):
    """The chart grants exactly what operator/src/rbac.rs says the code calls (printed by
    `weir-operator rbac`): all of it (else the operator fails) and nothing more (least privilege)."""
    wanted = {d["metadata"]["name"]: triples(d["rules"]) for d in load_yaml_docs(operator_rbac_path)}
    for case, values in cases():
        docs = render(values)
        by_name = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d for d in docs}
        watch = values.get("watchNamespaces") or []
        sa = ("ServiceAccount", "weir-operator", NAMESPACE)
        if sa not in by_name:
            problem(case, "no operator ServiceAccount")

        def granted(namespace):
            """What the operator's ServiceAccount may do in `namespace` (None: cluster scope)."""
            rules = set()
            for d in docs:
                if d["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
                    continue
                if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] != namespace:
                    continue
                if not any(s["kind"] == "ServiceAccount" and s["name"] == sa[1] and s["namespace"] == sa[2] for s in d["subjects"]):
                    continue
                ref = d["roleRef"]
                role_ns = None if ref["kind"] == "ClusterRole" else d["metadata"]["namespace"]
                role = by_name.get((ref["kind"], ref["name"], role_ns))
                if role is None:
                    problem(case, f"{d['kind']} {d['metadata']['name']} refers to missing {ref['kind']} {ref['name']}")
                    continue
                rules |= triples(role["rules"])
            return rules

        broker_role = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "weir-broker"]
        if not broker_role or triples(broker_role[0]["rules"]) != wanted["weir-broker"]:
            problem(case, f"broker ClusterRole differs from `weir-operator rbac`: {broker_role and broker_role[0]['rules']}")
        namespaced = {t for t in wanted["weir-operator"] if t[1] != "namespaces"}
        cluster_scoped = {t for t in wanted["weir-operator"] if t[1] == "namespaces"}
        # Where the operator works: every watched namespace, or (cluster-wide) any namespace.
        for namespace in watch or ["any-namespace"]:
            have = granted(namespace) | granted(None) if watch else granted(None)
            have_ns = {t for t in have if t[1] != "namespaces"}
            if have_ns != namespaced:
                problem(case, f"in {namespace}: missing {sorted(namespaced - have_ns)}, extra {sorted(have_ns - namespaced)}")
        if watch:
            # Nothing on workloads cluster-wide; namespaces only by name.
            cluster = {t for t in granted(None) if t[1] != "namespaces"}
            if cluster:
                problem(case, f"namespaced RBAC grants cluster-wide: {sorted(cluster)}")
            allowed = {(g, r, v, tuple(sorted(watch))) for (g, r, v, _) in cluster_scoped}
            if {t for t in granted(None) if t[1] == "namespaces"} != allowed:
                problem(case, f"namespace access is not limited to {watch}")
            if granted("unwatched-namespace") - granted(None):
                problem(case, "grants rights in a namespace it does not watch")
        else:
            have = {(g, r, v) for (g, r, v, _) in granted(None) if r == "namespaces"}
            if have != {(g, r, v) for (g, r, v, _) in cluster_scoped}:
                problem(case, "cluster-wide RBAC lacks namespaces get")
        lease = granted(NAMESPACE) - granted(None)
        lease_rules = {t for t in lease if t[0] == "coordination.k8s.io"}
        if lease_rules != wanted["weir-operator-leader-election"]:
            problem(case, f"Lease rules {sorted(lease_rules)} differ from {sorted(wanted['weir-operator-leader-election'])}")
        deployment = [d for d in docs if d["kind"] == "Deployment"][0]
        args = pod_spec(deployment)["containers"][0]["args"]
        if "--broker-cluster-role=weir-broker" not in args:
            problem(case, f"the operator is not told which ClusterRole to bind: {args}")
        if watch and f"--namespace={','.join(watch)}" not in args:
            problem(case, f"the operator is not told to watch {watch}: {args}")
        for d in docs:
            for rule in d.get("rules") or []:
                if "*" in (rule.get("verbs") or []) + (rule.get("resources") or []) + (rule.get("apiGroups") or []):
                    problem(case, f"{d['kind']} {d['metadata']['name']} has a wildcard rule")
                if "secrets" in (rule.get("resources") or []):
                    problem(case, f"{d['kind']} {d['metadata']['name']} grants access to Secrets")
        print(f"{case}: RBAC equals the operator's needs ({'namespaced: ' + ', '.join(watch) if watch else 'cluster-wide'})")


def files():
    for source in sorted(glob.glob(os.path.join(ROOT, "crds", "*.yaml"))):
        copy = os.path.join(CHART, "crds", os.path.basename(source))
        if not os.path.exists(copy) or open(source, "rb").read() != open(copy, "rb").read():
            problem("crds", f"charts/weir/crds/{os.path.basename(source)} differs from crds/ (copy it)")
    extra = {os.path.basename(p) for p in glob.glob(os.path.join(CHART, "crds", "*"))} - {
        os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "crds", "*.yaml"))
    }
    if extra:
        problem("crds", f"charts/weir/crds has files crds/ does not: {sorted(extra)}")
    dashboards = sorted(glob.glob(os.path.join(CHART, "dashboards", "*.json")))
    with open(os.path.join(CHART, "files", "alerts.yaml")) as f:
        alerts = yaml.safe_load(f)
    for case, values in cases():
        docs = render(values)
        maps = {k: v for d in docs if d["kind"] == "ConfigMap" for k, v in d["data"].items()}
        for path in dashboards:
            name = os.path.basename(path)
            if values.get("dashboards", {}).get("enabled", True):
                if name not in maps:
                    problem(case, f"no ConfigMap carries {name}")
                elif json.loads(maps[name]) != json.load(open(path)):
                    problem(case, f"the ConfigMap of {name} differs from the file")
        for d in docs:
            if d["kind"] == "ConfigMap":
                if d["metadata"]["labels"].get("grafana_dashboard") != "1":
                    problem(case, f"ConfigMap {d['metadata']['name']} lacks the Grafana sidecar label")
            if d["kind"] == "PrometheusRule" and d["spec"] != alerts:
                problem(case, "the PrometheusRule differs from files/alerts.yaml")
    print(f"CRDs equal crds/; {len(dashboards)} dashboards and the alerts are carried verbatim")


def main():
    command, *args = sys.argv[1:]
    {"lint": lint, "security": security, "selectors": selectors, "rbac": rbac, "files": files}[command](*args)
    for p in problems:
        print(p)
    if problems:
        sys.exit(f"{len(problems)} problems")


if __name__ == "__main__":
    main()
