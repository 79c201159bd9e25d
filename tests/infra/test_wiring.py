"""One test ties the compiled pipeline to images/ and infra/: the names on both sides must agree, or a
deployed run fails on the cluster (wrong image, missing Secret, no RBAC, unguarded verify pods)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from calgrpo.pipelines.submit import SERVICE_ACCOUNT
from calgrpo.train.trainjob import GROUP, PLURAL, TrainJobRequest

ROOT = Path(__file__).resolve().parents[2]


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _compiled(tmp_path: Path) -> tuple[dict, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALGRPO_IMAGE_")}
    code = ("from calgrpo.pipelines.compile import compile_pipelines; from calgrpo.pipelines.config import "
            f"PipelineConfig; compile_pipelines({str(tmp_path)!r}, PipelineConfig(rounds=1), 2)")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    spec, platform = _docs(tmp_path / "train.yaml")
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_pipeline_images_secret_account_and_labels_match_images_and_infra(tmp_path) -> None:
    spec, executors = _compiled(tmp_path)
    makefile = (ROOT / "Makefile").read_text()

    # Images: every image the pipeline names is one `make images` builds (same repository, kinds, tag).
    kinds = re.search(r"^IMAGE_KINDS := (.+)$", makefile, re.MULTILINE).group(1).split()
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    built = {f"calgrpo/{kind}:{version}" for kind in kinds}
    used = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    used.add(spec["root"]["inputDefinitions"]["parameters"]["trainer_image"]["defaultValue"])
    assert used <= built
    assert {image.split("/")[1].split(":")[0] for image in used} == {"cpu", "gpu", "sandbox"}  # each one is used
    for kind in kinds:
        assert (ROOT / "images" / kind / "Dockerfile").is_file()

    # The S3 Secret: the pipeline's default name, the template, and the launcher ConfigMaps.
    secret_name = spec["root"]["inputDefinitions"]["parameters"]["s3_secret"]["defaultValue"]
    (template,) = _docs(ROOT / "infra" / "secret-s3.example.yaml")
    assert template["metadata"]["name"] == secret_name
    referenced_keys = {e["secretKey"] for ex in executors.values() for s in ex.get("secretAsEnv", []) for e in s["keyToEnv"]}
    assert referenced_keys <= set(template["stringData"])
    for overlay in ("aws-s3", "in-cluster-s3"):
        (config_map,) = _docs(ROOT / "infra" / "overlays" / overlay / "kfp-launcher.yaml")
        assert f"secretName: {secret_name}" in config_map["data"]["providers"]

    # The service account runs submitted pipelines, and its Role covers what the TrainJob client does.
    (account,) = _docs(ROOT / "infra" / "base" / "serviceaccount.yaml")
    role, binding = _docs(ROOT / "infra" / "base" / "rbac.yaml")
    assert account["metadata"]["name"] == SERVICE_ACCOUNT == binding["subjects"][0]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}  # fmt: skip
    needed = {(GROUP, PLURAL, verb) for verb in ("create", "get", "delete")} | {("", "pods", "list"), ("", "pods/log", "get")}
    assert needed <= granted

    # Verify pods: the label the NetworkPolicy selects, the uid the sandbox image runs as, no Secret.
    (policy,) = _docs(ROOT / "infra" / "base" / "networkpolicy-verify.yaml")
    verify = executors["exec-verify"]
    assert verify["podMetadata"]["labels"] == policy["spec"]["podSelector"]["matchLabels"]
    sandbox_user = re.findall(r"^USER (\d+)", (ROOT / "images" / "sandbox" / "Dockerfile").read_text(), re.MULTILINE)[-1]
    assert verify["securityContext"]["runAsUser"] == sandbox_user and "secretAsEnv" not in verify

    # Training: the TrainJob runtime the launcher names is the one infra/trainer patches, with the PriorityClass.
    trainer = yaml.safe_load((ROOT / "infra" / "trainer" / "kustomization.yaml").read_text())
    (patch,) = trainer["patches"]
    (priority,) = _docs(ROOT / "infra" / "base" / "priorityclass.yaml")
    request = TrainJobRequest(name="x", namespace="n", image="i", command=["c"])
    assert patch["target"]["name"] == request.runtime
    assert yaml.safe_load(patch["patch"])[-1]["value"] == priority["metadata"]["name"]
    assert "exec-train-on-trainjob" in executors  # the multi-node variant compiled with train_nodes=2
