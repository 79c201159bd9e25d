"""infra/, offline: every manifest validates strictly against the Kubernetes schemas, every
kustomization refers to what exists (upstream manifests pinned by version), and the overlays render
(kubectl kustomize, where kubectl is installed) into valid objects."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
KUBERNETES_VERSIONS = ("1.30.0", "1.34.0")  # the oldest and a recent release we expect clusters on
OVERLAYS = ("overlays/aws-s3", "overlays/in-cluster-s3")


def _manifests() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*.yaml") if p.name != "kustomization.yaml")


def _documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize("path", _manifests(), ids=lambda p: str(p.relative_to(INFRA)))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifest_validates_strictly(path, version) -> None:
    documents = _documents(path.read_text())
    assert documents, f"{path} is empty"
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def _kustomizations() -> list[Path]:
    return sorted(INFRA.rglob("kustomization.yaml"))


@pytest.mark.parametrize("path", _kustomizations(), ids=lambda p: str(p.parent.relative_to(INFRA)))
def test_kustomization_refers_to_what_exists(path) -> None:
    spec = yaml.safe_load(path.read_text())
    assert spec["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and spec["kind"] == "Kustomization"
    for resource in spec.get("resources", []):
        if "://" in resource:  # an upstream manifest: referenced by a released version, never a branch
            assert "?ref=v" in resource, f"{resource} must be pinned to a release tag"
        else:
            assert (path.parent / resource).exists(), f"{path}: {resource} does not exist"
    for patch in spec.get("patches", []):
        operations = yaml.safe_load(patch["patch"])
        assert all(op["op"] in ("add", "replace", "remove", "test") for op in operations)
        assert patch["target"]["kind"] and patch["target"]["name"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed; rendering is checked where it is")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_render_into_valid_objects(overlay) -> None:
    rendered = subprocess.run(["kubectl", "kustomize", str(INFRA / overlay)], capture_output=True, text=True,
                              check=True, timeout=120).stdout  # fmt: skip
    documents = _documents(rendered)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("ServiceAccount", "calgrpo-pipeline"), ("Role", "calgrpo-trainjobs"), ("RoleBinding", "calgrpo-trainjobs"),
            ("NetworkPolicy", "calgrpo-verify-egress"), ("PriorityClass", "calgrpo-training"),
            ("ConfigMap", "kfp-launcher")} <= kinds  # fmt: skip
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)
        if document["kind"] != "PriorityClass":  # cluster-scoped
            assert document["metadata"]["namespace"] == "kubeflow"
    policy = next(d for d in documents if d["kind"] == "NetworkPolicy")
    public_https = [rule for rule in policy["spec"]["egress"] if any("ipBlock" in peer for peer in rule.get("to", []))]
    assert bool(public_https) == (overlay == "overlays/aws-s3")  # only AWS S3 needs the internet


def test_launcher_configmaps_point_at_s3_with_the_credentials_secret() -> None:
    for overlay in OVERLAYS:
        (config_map,) = _documents((INFRA / overlay / "kfp-launcher.yaml").read_text())
        assert config_map["data"]["defaultPipelineRoot"].startswith("s3://")
        providers = yaml.safe_load(config_map["data"]["providers"])["s3"]["default"]
        assert providers["credentials"]["secretRef"] == {
            "secretName": "calgrpo-s3", "accessKeyKey": "AWS_ACCESS_KEY_ID", "secretKeyKey": "AWS_SECRET_ACCESS_KEY"}  # fmt: skip
        assert providers["disableSSL"] is (overlay == "overlays/in-cluster-s3")
