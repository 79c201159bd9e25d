"""The Dockerfiles, offline: lint, structure, and that each image declares every package the
components running in it import."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("cpu", "gpu", "sandbox")
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _dockerfile(kind: str) -> str:
    return (ROOT / "images" / kind / "Dockerfile").read_text()


def _final_stage(text: str) -> str:
    return text.split("\nFROM ")[-1]


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), *(str(ROOT / "images" / k / "Dockerfile") for k in KINDS)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kind", KINDS, ids=[f"{kind}-image" for kind in KINDS])
def test_images_are_multi_stage_pinnable_and_non_root(kind) -> None:
    text = _dockerfile(kind)
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) == 2  # a build stage and a runtime stage
    for line in re.findall(r"^FROM (\S+)", text, re.MULTILINE):
        assert line.startswith("${"), f"{kind}: base {line} should come from an ARG (pin it by digest)"
    assert re.search(r"^ARG \w+_IMAGE=\S+$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)", _final_stage(text), re.MULTILINE)
    assert users and users[-1] not in ("0", "root"), f"{kind} image must not run as root"
    assert not re.search(r"AWS_|SECRET|TOKEN|PASSWORD", text.replace("AWS_ENDPOINT", "")), "no credentials"
    assert "--no-cache-dir" in text or "PIP_NO_CACHE_DIR=1" in text


def test_dockerignore_sends_only_the_package() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*" and {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)


def _installed_extras(kind: str) -> set[str]:
    """The extras an image installs: calgrpo[...] in its pip line, or the sandbox extra's list."""
    text = _final_stage(_dockerfile(kind))
    if kind == "sandbox":
        assert "--no-deps" in text and "requirements.txt" in text  # only the sandbox extra's packages
        return {"sandbox"}
    (extras,) = re.findall(r'"calgrpo\[([a-z,]+)\]', text)
    return set(extras.split(","))


def test_images_install_extras_that_exist() -> None:
    for kind in KINDS:
        assert _installed_extras(kind) <= set(EXTRAS), kind
    assert "vllm" in " ".join(EXTRAS["gpu"]) and "kubernetes" in " ".join(EXTRAS["pipelines"])


def _component_imports() -> dict[str, set[str]]:
    """Modules each component body imports (top-level names; calgrpo modules in full)."""
    from calgrpo.pipelines.components import ALL

    modules = {}
    for name, component in ALL.items():
        source = inspect.getsource(component.python_func)
        tree = ast.parse(source.replace("\n    ", "\n") if source.startswith(" ") else source)
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        modules[name] = found
    return modules


def _image_of(component: str) -> str:
    spec = yaml.safe_load((ROOT / "components" / component / "component.yaml").read_text())
    (executor,) = spec["deploymentSpec"]["executors"].values()
    return executor["container"]["image"].split("/")[-1].split(":")[0]


def test_every_component_runs_in_an_image_that_has_what_it_imports() -> None:
    """Import each component's modules in a fresh interpreter, map the loaded modules to the
    distributions that provide them, and check those are required by the image's extras."""
    imports = _component_imports()
    script = """
import importlib, importlib.metadata as md, json, sys
for module in sys.argv[1:]:
    importlib.import_module(module)
dists = md.packages_distributions()
# _distutils_hack is setuptools' interpreter start-up hook in virtualenvs, not an import of ours.
names = {m.split('.')[0] for m in sys.modules} - {'_distutils_hack'}
print(json.dumps(sorted({d for m in names for d in dists.get(m, [])})))
"""
    for component, modules in imports.items():
        kind = _image_of(component)
        allowed = _closure(_requirements(_installed_extras(kind), with_core=kind != "sandbox"))
        result = subprocess.run([sys.executable, "-c", script, *sorted(modules)], capture_output=True, text=True,
                                check=True, timeout=300)  # fmt: skip
        used = set(json.loads(result.stdout)) - {"calgrpo"}
        missing = {d for d in used if _normal(d) not in allowed}
        assert not missing, f"{component} runs in the {kind} image but imports {sorted(missing)} it does not install"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(extras: set[str], with_core: bool) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) if with_core else []
    for extra in extras:
        specs += EXTRAS[extra]
    return {_normal(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in specs}


def _closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (as installed here), transitively."""
    import importlib.metadata as md

    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for spec in requires:
            if "extra ==" not in spec:
                todo.append(_normal(re.split(r"[<>=!~\[; (]", spec, maxsplit=1)[0]))
    return seen


def test_the_sandbox_image_has_what_a_real_verification_loads(tmp_path) -> None:
    """Module imports miss lazy ones (parquet, the math verifier's workers): run the verify stage's
    work on a math and a GSM8K problem in a fresh interpreter and check what it actually loaded."""
    script = f"""
import importlib.metadata as md, json, sys
from pathlib import Path
from calgrpo.io import read_problems, write_problems
from calgrpo.rollout.records import AttemptRecord, read_attempts, write_attempts
from calgrpo.tasks import Problem, build_tasks
from calgrpo.verify import run_verify, write_verdicts
import math_verify  # the math task's worker processes import it; they are not in sys.modules here
folder = Path({str(tmp_path)!r})
write_problems([Problem(id="g", task="gsm8k", prompt="1+1?", answer="2"),
                Problem(id="m", task="math", prompt="x?", answer="\\\\frac{{1}}{{2}}")], folder / "p.parquet")
write_attempts([AttemptRecord(problem_id=i, sample=0, attempt=1, context_token_ids=[1], completion_token_ids=[2],
                              completion_logprobs=[-1.0], completion=c, reward=0.0, verdict="", feedback="",
                              finish_reason="stop", policy_version=0)
                for i, c in (("g", "#### 2"), ("m", "\\\\boxed{{0.5}}"))], folder / "a.parquet")
problems = read_problems(folder / "p.parquet")
tasks = build_tasks({{p.task for p in problems}})
rows, result = run_verify(problems, read_attempts(folder / "a.parquet"), tasks)
for task in tasks.values():
    task.close()
write_verdicts(rows, folder / "v.parquet")
assert result["per_task"]["gsm8k"]["pass_rate"] == 1.0, result
dists = md.packages_distributions()
names = {{m.split('.')[0] for m in sys.modules}} - {{'_distutils_hack'}}
print(json.dumps(sorted({{d for m in names for d in dists.get(m, [])}})))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    # pyarrow imports cloudpickle when it is installed (the dev extra brings it, through mlflow) and
    # falls back to the standard pickle otherwise: an opportunistic import, not a requirement.
    used = set(json.loads(result.stdout.strip().splitlines()[-1])) - {"calgrpo", "cloudpickle"}
    allowed = _closure(_requirements({"sandbox"}, with_core=False))
    missing = {d for d in used if _normal(d) not in allowed}
    assert not missing, f"verification loads {sorted(missing)}, which the sandbox image does not install"
    assert "torch" not in used  # the sandbox image stays small
