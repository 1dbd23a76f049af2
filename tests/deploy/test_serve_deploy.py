"""deploy/k8s/serve (lola serve's Deployment and Service) and the image's serve package, checked as files."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "deploy" / "k8s" / "serve"


def docs() -> list[dict]:
    out = []
    for path in sorted(SERVE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def of_kind(kind: str) -> dict:
    (doc,) = [d for d in docs() if d["kind"] == kind]
    return doc


def test_kustomization_lists_every_manifest():
    kustom = yaml.safe_load((SERVE / "kustomization.yaml").read_text())
    assert set(kustom["resources"]) == {p.name for p in SERVE.glob("*.yaml")} - {"kustomization.yaml"}


def test_serve_runs_lola_serve_non_root_with_probes_and_secret_keys():
    dep = of_kind("Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["serve"] and c["image"].split(":")[-1] not in ("", "latest")
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    ports = {p["name"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert all(c[p]["httpGet"]["port"] in ports for p in ("livenessProbe", "readinessProbe", "startupProbe"))
    env = {e["name"]: e for e in c["env"]}
    for name in ("LOLA_SERVE_API_KEYS", "KAFKA_SASL_PASSWORD"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"]
    svc = of_kind("Service")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] in ports


def test_env_names_are_settings_and_the_images_ship_the_serve_package():
    from lola.config_reference import env_names

    (c,) = of_kind("Deployment")["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in c["env"]} <= env_names()
    for name in ("Dockerfile", "Dockerfile.cuda"):
        assert "COPY serve ./serve" in (ROOT / "deploy" / name).read_text()
        assert "!serve/**" in (ROOT / "deploy" / f"{name}.dockerignore").read_text()
