"""The deployment as rendered: what every environment must guarantee, checked offline.

The services, ports and peers come from the table in docs/architecture.md, so a service added
there (or in services/) without its Dockerfile, base, skaffold artifact or allow-list fails here.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "deploy/k8s/overlays").iterdir() if p.is_dir())
SERVING = ("local", "prod")  # the overlays that run the services (prod-migrations runs Jobs)

Manifest = dict[str, Any]


def _architecture_table() -> dict[str, dict[str, Any]]:
    """service -> {port, prefix, package, peers} from docs/architecture.md."""
    text = (ROOT / "docs/architecture.md").read_text()
    rows = re.findall(
        r"^\| ([a-z-]+) \| [\d.]+:(\d+) \| `(\w+_)` \| ([^|]*) \| [^|]* \|$", text, re.M
    )
    table = {
        name: {
            "package": "concord_" + name.replace("-", "_"),
            "port": int(port),
            "prefix": prefix,
            "peers_text": peers,
        }
        for name, port, prefix, peers in rows
    }
    for row in table.values():
        row["peers"] = sorted(
            p for p in table if re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", row["peers_text"])
        )
    return table


SERVICES = _architecture_table()
CALLERS = {s: sorted(c for c, row in SERVICES.items() if s in row["peers"]) for s in SERVICES}
# Callers that spread their calls over every replica of these peers (a balanced channel over a
# headless Service's name), so one replica dying costs none of them.
BALANCED = {
    "gateway": ("linker", "reconciler"),
    "linker": ("crm-connector",),
    "mapping": ("crm-connector",),
    "reconciler": ("crm-connector", "linker", "mail-connector", "mapping"),
}


def _kubectl() -> str:
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render the overlays (set KUBECTL)")
    return kubectl


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    out = tmp_path_factory.mktemp("render")
    env = {**os.environ, "RENDER_DIR": str(out), "KUBECTL": _kubectl()}
    result = subprocess.run(
        ["bash", "scripts/render.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {
        overlay: [d for d in yaml.safe_load_all((out / f"{overlay}.yaml").read_text()) if d]
        for overlay in OVERLAYS
    }


def _of_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_specs(docs: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]


def _validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_validate", ROOT / "deploy/validate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- registrations: services/, the architecture table, Dockerfiles, bases, skaffold ---------


@pytest.mark.unit
def test_the_architecture_table_lists_the_six_services() -> None:
    assert sorted(SERVICES) == sorted(
        ["gateway", "reconciler", "mail-connector", "crm-connector", "mapping", "linker"]
    )
    assert CALLERS["crm-connector"] == ["linker", "mapping", "reconciler"]


@pytest.mark.unit
def test_every_service_directory_is_in_the_architecture_table() -> None:
    directories = {p.name for p in (ROOT / "services").iterdir() if p.is_dir()}
    assert directories == set(SERVICES)


def _normalised_dockerfile(service: str) -> str:
    row = SERVICES[service]
    text = (ROOT / "services" / service / "Dockerfile").read_text()
    for value, placeholder in (
        (row["package"], "<package>"),
        (row["prefix"], "<PREFIX>"),
        (str(row["port"]), "<port>"),
        (service, "<service>"),
    ):
        text = text.replace(value, placeholder)
    return text


@pytest.mark.unit
def test_dockerfiles_differ_only_in_service_name_package_and_port() -> None:
    reference = _normalised_dockerfile("gateway")
    for service in SERVICES:
        assert _normalised_dockerfile(service) == reference, service


@pytest.mark.unit
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dockerfile_builds_only_its_service_and_runs_it_unprivileged(service: str) -> None:
    row = SERVICES[service]
    text = (ROOT / "services" / service / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert [stage for _, stage in stages] == ["builder", ""], "a builder, then the final image"
    final = text.split("\nFROM ")[-1]
    assert f"uv sync --frozen --no-dev --no-editable --package concord-{service}\n" in text
    assert re.findall(r"^COPY (.*)$", final, re.M) == ["--from=builder /app/.venv /app/.venv"]
    assert "uv" not in re.sub(r"\.venv", "", final.split("ENTRYPOINT")[0]).split()
    assert "USER 10001:10001" in final
    assert "PYTHONDONTWRITEBYTECODE=1" in final
    assert "PYTHONUNBUFFERED=1" in final
    assert f"EXPOSE {row['port']}\n" in final
    assert f"{row['prefix']}PORT={row['port']}" in final
    assert final.rstrip().endswith(f'ENTRYPOINT ["python", "-m", "{row["package"]}"]')


@pytest.mark.unit
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_has_a_complete_base(service: str) -> None:
    base = ROOT / "deploy/k8s/base"
    listed = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    assert service in listed
    own = yaml.safe_load((base / service / "kustomization.yaml").read_text())
    for part in ("serviceaccount.yaml", "deployment.yaml", "service.yaml", "pdb.yaml"):
        assert part in own["resources"]
    assert [g["name"] for g in own["configMapGenerator"]] == [f"{service}-config"]


@pytest.mark.unit
def test_skaffold_builds_every_service_from_the_repository_root() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"] == "skaffold/v4beta14"
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    assert set(artifacts) == {f"concord-{s}" for s in SERVICES}
    for service in SERVICES:
        artifact = artifacts[f"concord-{service}"]
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == f"services/{service}/Dockerfile"
    profiles = {p["name"]: p["manifests"]["kustomize"]["paths"] for p in config["profiles"]}
    assert profiles["local"] == ["deploy/k8s/overlays/local"]
    assert profiles["prod"] == ["deploy/k8s/overlays/prod"]
    assert profiles["prod-migrate"] == ["deploy/k8s/overlays/prod-migrations"]


# --- the rendered manifests ----------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_hardened_and_bounded(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    specs = list(_pod_specs(rendered[overlay]))
    assert specs
    for name, spec in specs:
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), where


@pytest.mark.integration
@pytest.mark.parametrize("overlay", SERVING)
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_deployment_probes_grpc_and_outlasts_its_drain(
    rendered: dict[str, list[Manifest]], overlay: str, service: str
) -> None:
    row = SERVICES[service]
    docs = rendered[overlay]
    deployment = _of_kind(docs, "Deployment")[service]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == f"concord-{service}"
    grpc_port = {"name": "grpc", "containerPort": row["port"], "protocol": "TCP"}
    # The mail-connector also receives Graph's change notifications over HTTP.
    webhook = [{"name": "graph-webhook", "containerPort": 50080, "protocol": "TCP"}]
    extra = webhook if service == "mail-connector" else []
    assert container["ports"] == [grpc_port, *extra]
    assert container["readinessProbe"]["grpc"] == {"port": row["port"]}
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["grpc"] == {"port": row["port"], "service": "liveness"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", "/app/var"} <= mounts

    (config_ref,) = container["envFrom"]
    config = _of_kind(docs, "ConfigMap")[config_ref["configMapRef"]["name"]]["data"]
    drain = float(config[f"{row['prefix']}DRAIN_SECONDS"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] > drain + pre_stop

    assert config[f"{row['prefix']}HOST"] == "0.0.0.0"
    assert config[f"{row['prefix']}PORT"] == str(row["port"])
    assert config["NATS_URL"] == "nats://nats:4222"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
    assert config["OTEL_SERVICE_NAME"] == service
    peers = {k: v for k, v in config.items() if k.endswith("_ADDR")}
    assert peers == {
        f"{SERVICES[p]['prefix']}ADDR": (
            f"dns:///{p}-headless:{SERVICES[p]['port']}"
            if p in BALANCED.get(service, ())
            else f"{p}:{SERVICES[p]['port']}"
        )
        for p in row["peers"]
    }

    services = _of_kind(docs, "Service")
    assert services[service]["spec"]["ports"][0]["name"] == "grpc"
    assert services[service]["spec"]["ports"][0]["port"] == row["port"]
    if service in {p for peers in BALANCED.values() for p in peers}:
        # Every ready pod in DNS, the same pods as the Service's, on the same gRPC port.
        headless = services[f"{service}-headless"]["spec"]
        assert headless["clusterIP"] == "None"
        assert headless["selector"] == services[service]["spec"]["selector"]
        assert headless["ports"] == services[service]["spec"]["ports"][:1]
        assert not headless.get("publishNotReadyAddresses", False)
    assert service in _of_kind(docs, "PodDisruptionBudget")
    assert _of_kind(docs, "ServiceAccount")[service]["automountServiceAccountToken"] is False


@pytest.mark.integration
@pytest.mark.parametrize("overlay", SERVING)
def test_network_is_denied_by_default_and_allowed_per_caller(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    policies = _of_kind(rendered[overlay], "NetworkPolicy")
    deny = policies["default-deny-all"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for service, row in SERVICES.items():
        spec = policies[service]["spec"]
        assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": service}}
        rule, *others = spec["ingress"]
        assert rule["ports"] == [{"port": row["port"], "protocol": "TCP"}]
        # Graph's notifications reach the mail-connector's webhook from outside, on its port.
        webhook = [{"ports": [{"port": 50080, "protocol": "TCP"}]}]
        assert others == (webhook if service == "mail-connector" else [])
        if service == "gateway":
            assert {"podSelector": {}} in rule["from"]
            continue
        callers = sorted(
            f["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for f in rule["from"]
        )
        assert callers == CALLERS[service], service
        reached = {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for egress in spec["egress"]
            for peer in egress.get("to", [])
        }
        assert set(row["peers"]) | {"nats", "otel-collector"} == reached, service
    for connector in ("mail-connector", "crm-connector"):
        outside = [e for e in policies[connector]["spec"]["egress"] if "to" not in e]
        assert any({"port": 443, "protocol": "TCP"} in e["ports"] for e in outside)
    for service in set(SERVICES) - {"mail-connector", "crm-connector"}:
        ports = [p["port"] for e in policies[service]["spec"]["egress"] for p in e["ports"]]
        assert 443 not in ports, f"{service} must not reach the outside on 443"


@pytest.mark.integration
def test_local_runs_one_replica_and_the_demo_dependencies(
    rendered: dict[str, list[Manifest]],
) -> None:
    docs = rendered["local"]
    deployments = _of_kind(docs, "Deployment")
    for service in SERVICES:
        assert deployments[service]["spec"]["replicas"] == 1
    assert (
        deployments["salesforce-emulator"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "concord-salesforce-emulator"
    )
    assert (
        deployments["exchange-emulator"]["spec"]["template"]["spec"]["containers"][0]["image"]
        == "concord-exchange-emulator"
    )
    statefulsets = _of_kind(docs, "StatefulSet")
    assert statefulsets["nats"]["spec"]["replicas"] == 1
    assert "postgres" in statefulsets


@pytest.mark.integration
def test_prod_is_replicated_spread_and_scaled_on_the_sessions_backlog(
    rendered: dict[str, list[Manifest]],
) -> None:
    docs = rendered["prod"]
    for name, deployment in _of_kind(docs, "Deployment").items():
        assert deployment["spec"]["replicas"] >= 2, name
        affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        (term,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        assert selector["app.kubernetes.io/name"] == name
    nats = _of_kind(docs, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    conf = next(
        c["data"]["nats.conf"]
        for c in _of_kind(docs, "ConfigMap").values()
        if "nats.conf" in c["data"]
    )
    assert all(f"nats-{i}.nats-headless:6222" in conf for i in range(3))
    # The services creating the streams and the lease bucket keep 3 copies on the 3 nodes.
    for service in ("reconciler", "crm-connector"):
        (config,) = [c for n, c in _of_kind(docs, "ConfigMap").items() if n.startswith(service)]
        assert config["data"]["NATS_JETSTREAM_REPLICAS"] == "3", service

    (scaled,) = _of_kind(docs, "ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "reconciler"
    assert scaled["spec"]["minReplicaCount"] >= 2
    jetstream = next(t for t in scaled["spec"]["triggers"] if t["type"] == "nats-jetstream")
    assert jetstream["metadata"]["stream"] == "SESSIONS"
    assert jetstream["metadata"]["consumer"] == "reconciler"


@pytest.mark.integration
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_workload_is_scaled_by_both_an_hpa_and_keda(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    docs = rendered[overlay]
    hpa = {
        d["spec"]["scaleTargetRef"]["name"]
        for d in _of_kind(docs, "HorizontalPodAutoscaler").values()
    }
    keda = {d["spec"]["scaleTargetRef"]["name"] for d in _of_kind(docs, "ScaledObject").values()}
    assert not hpa & keda


_CREDENTIAL = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEYS?|DATABASE_URL)$")


@pytest.mark.integration
@pytest.mark.parametrize("overlay", ["prod", "prod-migrations"])
def test_prod_takes_every_credential_from_secrets_it_does_not_contain(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    docs = rendered[overlay]
    assert _of_kind(docs, "Secret") == {}
    for config in _of_kind(docs, "ConfigMap").values():
        assert not [k for k in config.get("data", {}) if _CREDENTIAL.search(k)]
    for name, spec in _pod_specs(docs):
        env = {e["name"]: e for c in spec["containers"] for e in c.get("env", [])}
        for key, entry in env.items():
            if _CREDENTIAL.search(key):
                assert "value" not in entry, (name, key)
                assert "secretKeyRef" in entry["valueFrom"], (name, key)
        service = name.split("/")[1].removesuffix("-migrate")
        if service in SERVICES:
            assert f"{SERVICES[service]['prefix']}DATABASE_URL" in env, name
        if service in ("mail-connector", "crm-connector") and overlay == "prod":
            assert f"{SERVICES[service]['prefix']}ENCRYPTION_KEY" in env, name
        if service == "gateway" and overlay == "prod":
            # Every replica verifies bearer tokens with the same keys (a per-pod key file
            # would accept a token on one replica only).
            assert "GATEWAY_AUTH_HS256_KEYS" in env, name


@pytest.mark.integration
@pytest.mark.parametrize("overlay", SERVING)
def test_every_internal_service_verifies_with_the_secret_the_gateway_signs_with(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    # Each pod has its own var dir, so the embedded key file would differ between them and
    # every internal service would refuse every call the gateway (or a peer) makes.
    specs = dict(_pod_specs(rendered[overlay]))

    def secret_of(deployment: str, variable: str) -> str:
        (container,) = specs[f"Deployment/{deployment}"]["containers"]
        (entry,) = [e for e in container.get("env", []) if e["name"] == variable]
        return str(entry["valueFrom"]["secretKeyRef"]["name"])

    signing = secret_of("gateway", "GATEWAY_INTERNAL_IDENTITY_KEY")
    for service in ("reconciler", "mail-connector", "crm-connector", "mapping", "linker"):
        variable = f"{SERVICES[service]['prefix']}INTERNAL_IDENTITY_KEYS"
        assert secret_of(service, variable) == signing, service
    if overlay == "local":
        (secret,) = [
            d
            for d in _of_kind(rendered[overlay], "Secret").values()
            if d["metadata"]["name"].startswith(signing)
        ]
        assert secret["data"]["key"] == secret["data"]["verify-keys"]


@pytest.mark.integration
def test_prod_migrations_run_each_service_migrate_command(
    rendered: dict[str, list[Manifest]],
) -> None:
    jobs = _of_kind(rendered["prod-migrations"], "Job")
    assert set(jobs) == {f"{s}-migrate" for s in SERVICES}
    for service in SERVICES:
        (container,) = jobs[f"{service}-migrate"]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"concord-{service}"
        assert container["args"] == ["migrate"]
        assert "command" not in container, "the image's ENTRYPOINT is python -m <package>"


# --- the validation itself can fail ---------------------------------------------------------


@pytest.mark.integration
def test_validation_rejects_broken_manifests_and_unknown_kinds(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    validate = _validator()
    docs = rendered["prod"]
    deployment = copy.deepcopy(_of_kind(docs, "Deployment")["reconciler"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    scaled = copy.deepcopy(next(iter(_of_kind(docs, "ScaledObject").values())))
    scaled["spec"]["triggers"][0]["metadata"]["lagTreshold"] = "5"
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([deployment, scaled, unknown]))
    problems = validate.check_manifests([bad], ["1.30.0"])
    assert len(problems) == 3, problems
    assert "readinesProbe" in problems[0]
    assert "lagTreshold" in problems[1]
    assert "no schema for example.com/v1 Widget" in problems[2]
    assert validate.main(["--kubernetes-version", "1.30.0", str(bad)]) == 1


@pytest.mark.unit
def test_skaffold_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    validate = _validator()
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert validate.check_skaffold(ROOT / "skaffold.yaml") == []
    config["build"]["artifacts"][0]["dockerFile"] = "Dockerfile"
    broken = tmp_path / "skaffold.yaml"
    broken.write_text(yaml.safe_dump(config))
    assert validate.check_skaffold(broken)
