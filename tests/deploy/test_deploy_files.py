"""The deploy files, checked as files: no Docker engine or cluster runs here.

Compose and the Kubernetes manifests are parsed with pyyaml, the Dockerfiles
line by line. Every ``LOLA_*``/``KAFKA_*`` variable handed to *our* containers
must be a name the settings object reads (the Kafka broker container's own
``KAFKA_*`` broker settings are not ours and are excluded).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OUR_PREFIXES = ("LOLA_", "KAFKA_")
# LOLA_ names read outside the settings object, each with the module that reads it.
READ_ELSEWHERE = {"LOLA_SHARED_DATA": ROOT / "lola" / "paths.py"}
# Our image, as compose and the manifests name it.
OUR_IMAGE = "lola-stream"


# ---------------------------------------------------------------- helpers


def image_is_pinned(ref: str) -> bool:
    """True when an image reference names an explicit tag (not latest) or a digest."""
    if "@sha256:" in ref:
        return True
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


def dockerfile_stages(path: Path) -> list[dict]:
    """Parse a Dockerfile into stages: base image (ARG defaults resolved), USER, HEALTHCHECK, ENV names."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    args: dict[str, str] = {}
    stages: list[dict] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not stages:
            name, _, default = rest.strip().partition("=")
            args[name] = default
        elif word == "FROM":
            parts = rest.split()
            ref = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), parts[0])
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"from": ref, "as": alias, "user": None, "healthcheck": None, "env": set(), "run": []})
        elif stages and word == "USER":
            stages[-1]["user"] = rest.strip()
        elif stages and word == "HEALTHCHECK":
            stages[-1]["healthcheck"] = rest.strip()
        elif stages and word == "RUN":
            stages[-1]["run"].append(rest)
        elif stages and word == "ENV":
            stages[-1]["env"].update(re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", rest))
    return stages


def load_compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def our_compose_services(compose: dict) -> dict[str, dict]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).split(":")[0] == OUR_IMAGE
    }


def load_manifests() -> list[dict]:
    docs: list[dict] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def is_non_root_user(user: str | None) -> bool:
    if not user:
        return False
    name = str(user).split(":")[0]
    return name not in ("0", "root")


def used_env_names() -> dict[str, str]:
    """Every LOLA_/KAFKA_ name given to our containers, mapped to where it is used."""
    used: dict[str, str] = {}
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        for name in dockerfile_stages(DEPLOY / dockerfile)[-1]["env"]:
            used.setdefault(name, f"deploy/{dockerfile}")
    for svc_name, svc in our_compose_services(load_compose()).items():
        env = svc.get("environment") or {}
        names = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        for name in names:
            used.setdefault(name, f"compose service {svc_name}")
    docs = load_manifests()
    for cm in by_kind(docs, "ConfigMap"):
        for name in cm.get("data", {}):
            used.setdefault(name, f"ConfigMap {cm['metadata']['name']}")
    for dep in by_kind(docs, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                used.setdefault(e["name"], f"Deployment {dep['metadata']['name']}")
    return {k: v for k, v in used.items() if k.startswith(OUR_PREFIXES)}


# ---------------------------------------------------------------- the helpers themselves


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        ("python:3.11.13-slim-bookworm", True),
        ("apache/kafka:3.9.1", True),
        ("localhost:5000/lola-stream:0.1.0", True),
        ("busybox@sha256:" + "a" * 64, True),
        ("python", False),
        ("python:latest", False),
        ("localhost:5000/lola-stream", False),
        ("python:${TAG}", False),
    ],
)
def test_image_is_pinned_helper(ref, pinned):
    assert image_is_pinned(ref) is pinned


def test_dockerfile_parser_resolves_arg_defaults(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("ARG BASE=debian:12.7-slim\nFROM ${BASE} AS a\nENV LOLA_X=1 \\\n  KAFKA_Y=2\nUSER 10001\n")
    (stage,) = dockerfile_stages(path)
    assert stage["from"] == "debian:12.7-slim" and stage["user"] == "10001"
    assert stage["env"] == {"LOLA_X", "KAFKA_Y"}


# ---------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_is_multistage_pinned_non_root_with_healthcheck(name):
    stages = dockerfile_stages(DEPLOY / name)
    assert len(stages) >= 2, "multi-stage build expected"
    for stage in stages:
        assert image_is_pinned(stage["from"]) or stage["from"] in {s["as"] for s in stages}, stage["from"]
    final = stages[-1]
    assert is_non_root_user(final["user"]), f"final stage runs as {final['user']!r}"
    assert final["healthcheck"] and "/healthz" in final["healthcheck"]
    assert (DEPLOY / f"{name}.dockerignore").is_file()
    # glibc's malloc instead of CPython's arenas: an archive wave's memory goes back to the
    # system (docs/operations/limits.md; lola bench lifecycle measures both)
    assert "PYTHONMALLOC" in final["env"]


def test_cuda_image_is_cuda13_cudnn9_with_pinned_onnxruntime_gpu():
    stages = dockerfile_stages(DEPLOY / "Dockerfile.cuda")
    final = stages[-1]["from"]
    assert final.startswith("nvidia/cuda:13.") and "cudnn" in final and "runtime" in final
    text = (DEPLOY / "Dockerfile.cuda").read_text()
    assert re.search(r"ORT_GPU_VERSION=\d+\.\d+\.\d+", text)
    assert "onnxruntime-gpu==" in text


def test_cpu_image_installs_no_training_stack():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "[serve]" in text
    assert "train" not in re.findall(r"pip install[^\n]*", text)[-1]


# ---------------------------------------------------------------- compose


def test_compose_images_pinned_and_healthchecked_with_limits():
    compose = load_compose()
    for name, svc in compose["services"].items():
        assert image_is_pinned(str(svc.get("image", ""))), f"{name}: image {svc.get('image')!r} not pinned"
        limits = svc.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("cpus") and limits.get("memory"), f"{name}: no cpu/memory limits"
        if name != "loadgen":  # a batch job; the worker's health gates it
            assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"


def test_compose_kafka_is_single_node_kraft():
    kafka = load_compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert "ZOOKEEPER" not in " ".join(env)
    assert len(env["CLUSTER_ID"]) == 22  # base64 of a 16-byte UUID


def test_compose_our_services_are_non_root_and_read_only():
    services = our_compose_services(load_compose())
    assert {"worker", "loadgen"} <= set(services)
    for name, svc in services.items():
        assert is_non_root_user(svc.get("user")), name
        assert svc.get("read_only") is True, name
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"


def test_compose_mounts_model_read_only_and_prometheus_is_optional():
    compose = load_compose()
    worker = compose["services"]["worker"]
    model_mounts = [v for v in worker["volumes"] if isinstance(v, dict) and v["target"].startswith("/models")]
    assert model_mounts and all(v.get("read_only") for v in model_mounts)
    assert worker["environment"]["LOLA_MODEL_DIR"].startswith(model_mounts[0]["target"])
    assert compose["services"]["prometheus"]["profiles"] == ["monitoring"]
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_worker_metrics_port():
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    worker = load_compose()["services"]["worker"]
    port = int(worker["environment"]["LOLA_METRICS_PORT"])
    targets = prom["scrape_configs"][0]["dns_sd_configs"][0]
    assert targets["names"] == ["worker"] and targets["port"] == port
    assert str(port) in worker["expose"]


# ---------------------------------------------------------------- Kubernetes


def test_kustomization_lists_every_manifest():
    kustom = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustom["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_k8s_images_pinned():
    for doc in load_manifests():
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            assert image_is_pinned(c["image"]), c["image"]


def _worker(docs):
    (dep,) = by_kind(docs, "Deployment")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, container


def test_k8s_worker_non_root_probes_resources():
    dep, c = _worker(load_manifests())
    pod_sc = dep["spec"]["template"]["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    port_names = {p["name"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in port_names
    for kind in ("requests", "limits"):
        assert c["resources"][kind]["cpu"] and c["resources"][kind]["memory"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert "/tmp" in mounts and mounts["/models"]["readOnly"] is True


def test_k8s_sasl_credentials_come_from_secret_references():
    docs = load_manifests()
    _, c = _worker(docs)
    env = {e["name"]: e for e in c["env"]}
    for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"]
    assert not by_kind(docs, "Secret"), "no Secret objects (with values) belong in the repository"
    for cm in by_kind(docs, "ConfigMap"):
        assert not any(k.endswith(("PASSWORD", "USERNAME")) for k in cm["data"])


def test_k8s_selectors_match_pod_labels():
    docs = load_manifests()
    dep, c = _worker(docs)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for sel in [dep["spec"]["selector"]["matchLabels"], by_kind(docs, "PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"], by_kind(docs, "Service")[0]["spec"]["selector"]]:
        assert sel.items() <= pod_labels.items()
    (svc,) = by_kind(docs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] in {p["name"] for p in c["ports"]}
    (cm,) = by_kind(docs, "ConfigMap")
    assert c["envFrom"][0]["configMapRef"]["name"] == cm["metadata"]["name"]


def test_keda_scales_the_worker_on_its_consumer_group_lag():
    docs = load_manifests()
    dep, _ = _worker(docs)
    (scaled,) = by_kind(docs, "ScaledObject")
    (auth,) = by_kind(docs, "TriggerAuthentication")
    (cm,) = by_kind(docs, "ConfigMap")
    assert scaled["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == cm["data"]["LOLA_GROUP_ID"]
    assert trigger["metadata"]["bootstrapServers"] == cm["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]


def test_pdb_allows_at_most_one_disruption():
    (pdb,) = by_kind(load_manifests(), "PodDisruptionBudget")
    assert pdb["spec"].get("maxUnavailable") == 1


# ---------------------------------------------------------------- env names vs the settings object


def unknown_env_names(used: dict[str, str], known: set[str]) -> dict[str, str]:
    """Names in ``used`` that neither the settings object nor a documented module reads."""
    unknown = {}
    for name, where in used.items():
        if name in known:
            continue
        module = READ_ELSEWHERE.get(name)
        if module is not None and name in module.read_text(encoding="utf-8"):
            continue
        unknown[name] = where
    return unknown


def test_env_name_check_flags_a_name_no_setting_reads():
    from lola.config_reference import env_names

    known = env_names()
    assert unknown_env_names({"LOLA_GROUP_ID": "x", "LOLA_SHARED_DATA": "y", "LOLA_NO_SUCH_SETTING": "z"}, known) == {
        "LOLA_NO_SUCH_SETTING": "z"}


def test_every_env_name_in_deploy_files_is_a_setting():
    from lola.config_reference import env_names

    used = used_env_names()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "LOLA_MODEL_DIR", "KAFKA_SASL_PASSWORD", "LOLA_METRICS_PORT"} <= set(used)
    unknown = unknown_env_names(used, env_names())
    assert not unknown, f"not read by the settings object: {unknown}"


def test_env_names_used_by_compose_commands_exist_in_settings():
    """Topic and group names in the KEDA trigger match the settings' defaults or the ConfigMap."""
    from lola.config_reference import env_fields

    fields = {f.env: f for f in env_fields()}
    docs = load_manifests()
    (scaled,) = by_kind(docs, "ScaledObject")
    topic = scaled["spec"]["triggers"][0]["metadata"]["topic"]
    defaults = " ".join(f.default for f in fields.values())
    assert topic in defaults, f"KEDA watches topic {topic!r}, which is no default topic of the settings"


# ---------------------------------------------------------------- images build what the package needs


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_copies_every_package_folder_and_uses_real_extras(name):
    text = (DEPLOY / name).read_text()
    copied = {src for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.M) for src in line.split()[:-1]}
    project = _pyproject()
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    assert folders <= copied, f"{name} misses package folders {folders - copied}"
    assert {"pyproject.toml", "README.md"} <= copied  # the build backend reads both
    extras = set(re.findall(r"\.\[(\w+)\]", text))
    assert extras and extras <= set(project["project"]["optional-dependencies"]), extras
    ignore = (DEPLOY / f"{name}.dockerignore").read_text()
    for folder in folders:
        assert f"!{folder}/**" in ignore, f"{folder} is excluded from the build context"


def test_images_and_compose_run_the_real_cli_commands(lola_commands):
    """Commands given to the containers exist in the `lola` CLI."""
    commands = lola_commands
    compose = load_compose()
    for svc in our_compose_services(compose).values():
        words = [w for w in svc["command"] if not w.startswith("-")]
        assert " ".join(words[:2]) in commands or words[0] in commands, svc["command"]
    _, c = _worker(load_manifests())
    assert c["args"][0] in commands


def test_container_command_flags_are_real_options():
    import typer

    from lola.cli import app

    root = typer.main.get_command(app)
    for name, svc in our_compose_services(load_compose()).items():
        words = list(svc["command"])
        cmd = root
        while words and not words[0].startswith("-") and hasattr(cmd, "commands") and words[0] in cmd.commands:
            cmd = cmd.commands[words.pop(0)]
        options = {opt for param in cmd.params for opt in getattr(param, "opts", [])}
        flags = {w.split("=", 1)[0] for w in words if w.startswith("--")}
        assert flags <= options, f"{name}: {flags - options} are not options of {svc['command']}"


def test_metrics_port_agrees_everywhere():
    docs = load_manifests()
    dep, c = _worker(docs)
    (cm,) = by_kind(docs, "ConfigMap")
    (svc,) = by_kind(docs, "Service")
    port = int(cm["data"]["LOLA_METRICS_PORT"])
    assert {p["containerPort"] for p in c["ports"] if p["name"] == "metrics"} == {port}
    assert int(dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]) == port
    assert svc["spec"]["ports"][0]["port"] == port
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (DEPLOY / name).read_text()
        assert f"EXPOSE {port}" in text and f"LOLA_METRICS_PORT={port}" in text
