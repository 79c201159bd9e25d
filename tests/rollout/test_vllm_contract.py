"""The vLLM engine against the vLLM release the GPU image pins, read from the wheel's own source.

The tests marked ``slow`` need the wheel (about 340 MB, fetched once into the wheel cache by
``make test`` or the fixture; skipped with the reason only when it cannot be obtained). The others
check the checker on a small fake vLLM and run everywhere.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from calgrpo.errors import InvalidInputError
from calgrpo.rollout import vllm_engine
from calgrpo.rollout.config import VLLMSettings
from calgrpo.rollout.vllm_contract import FINISH_REASONS_AT, Use, check_contract, uses_of_engine
from calgrpo.rollout.vllm_source import PackageSource, class_api, constructor, find_definition, literal_values
from calgrpo.rollout.vllm_wheel import read_pin, required_pin, wheel_requirements
from tests.rollout.conftest import GPU_DOCKERFILE, REPO, vllm_pin
from tests.rollout.vllm_fakes import DECLARED, FINISH_REASONS

ENGINE_SOURCE = Path(vllm_engine.__file__).read_text()


def _engine_with(old: str, new: str) -> str:
    assert ENGINE_SOURCE.count(old) == 1, old
    return ENGINE_SOURCE.replace(old, new)


# --- the pinned release ------------------------------------------------------------------------


@pytest.mark.slow
def test_vllm_engine_matches_the_pinned_release(vllm_source) -> None:
    uses = uses_of_engine(ENGINE_SOURCE)
    assert check_contract(uses, vllm_source) == [], f"the engine against vLLM {vllm_pin()}"
    used = {(u.kind, u.owner, u.method, u.name) for u in uses}
    for name in ("model", "enable_prefix_caching", "gpu_memory_utilization", "tensor_parallel_size",
                 "max_model_len", "dtype", "seed", "logprobs_mode"):  # fmt: skip
        assert ("argument", "vllm.LLM", "__init__", name) in used
    for name in (
        "n",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "logprobs",
        "stop_token_ids",
        "detokenize",
    ):
        assert ("argument", "vllm.SamplingParams", "__init__", name) in used
    assert {("argument", "vllm.LLM", "generate", "use_tqdm"), ("key", "vllm.TokensPrompt", None, "prompt_token_ids"),
            ("attribute", "vllm.RequestOutput", None, "outputs"), ("attribute", "vllm.logprobs.Logprob", None, "logprob"),
            ("attribute", "vllm.CompletionOutput", None, "finish_reason")} <= used  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("enable_prefix_caching=True", "enable_prefix_cachin=True",
         "argument 'enable_prefix_cachin' of vllm.LLM.__init__(): vLLM accepts no such argument (did you mean 'enable_prefix_caching'?)"),
        ('logprobs_mode="processed_logprobs"', 'logprobs_mode="processed_logprob"',
         "'processed_logprob' is not one of ['processed_logits', 'processed_logprobs', 'raw_logits', 'raw_logprobs']"),
        ("detokenize=False", "detokenise=False", "argument 'detokenise' of vllm.SamplingParams.__init__()"),
        ("use_tqdm=False", "progress=False", "argument 'progress' of vllm.LLM.generate()"),
        ('{"prompt_token_ids": list(row)}', '{"prompt_ids": list(row)}', "TokensPrompt has no such key"),
        ("chosen.logprob", "chosen.log_prob", "Logprob has no such attribute (did you mean 'logprob'?)"),
        ("reason = completion.finish_reason", "reason = completion.finished_reason", "attribute 'finished_reason'"),
        ("list(output.outputs)", "list(output.completions)", "RequestOutput has no such attribute"),
        ('"repetition": None,', '"repeated": None,', "'repeated' of vllm: not a vLLM finish reason"),
    ],
)  # fmt: skip
def test_vllm_contract_reports_a_misspelled_name(vllm_source, old, new, expected) -> None:
    problems = check_contract(uses_of_engine(_engine_with(old, new)), vllm_source)
    assert any(expected in problem for problem in problems), problems


@pytest.mark.slow
def test_vllm_pinned_torch_is_the_one_vllm_requires(vllm_wheel) -> None:
    required = required_pin(wheel_requirements(vllm_wheel), "torch")
    assert required is not None, "the vLLM wheel no longer pins torch exactly"
    assert read_pin(GPU_DOCKERFILE.read_text(), "torch") == required, "images/gpu/Dockerfile's TORCH_SPEC"
    assert vllm_wheel.name.startswith(f"vllm-{vllm_pin()}-")


@pytest.mark.slow
def test_vllm_fakes_declare_what_the_wheel_declares(vllm_source) -> None:
    for owner, names in DECLARED.items():
        module, _, name = owner.rpartition(".")
        api = class_api(vllm_source, module, name)
        declared = set(api.fields) if api.kind != "class" else api.attributes
        assert tuple(sorted(n for n in declared if not n.startswith("_"))) == names, owner
    definition = find_definition(vllm_source, *FINISH_REASONS_AT)[1]
    assert tuple(item.value for item in definition.value.elts) == FINISH_REASONS


@pytest.mark.slow
def test_vllm_settings_dtypes_are_vllms(vllm_source) -> None:
    llm = constructor(vllm_source, class_api(vllm_source, "vllm", "LLM"))
    allowed = literal_values(vllm_source, *llm.keywords["dtype"])
    assert {VLLMSettings().dtype, "float32"} <= allowed, allowed


# --- one pin ---------------------------------------------------------------------------------------


def test_vllm_pin_is_the_same_in_the_image_and_the_gpu_extra() -> None:
    pin = vllm_pin()
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [r for r in extras["gpu"] if r.startswith("vllm")] == [f"vllm=={pin}"]


def test_vllm_read_pin_wants_exactly_one_line() -> None:
    assert read_pin("FROM x\nARG VLLM_SPEC=vllm==0.33.0\nARG TORCH_SPEC=torch==2.14.0\n", "vllm") == "0.33.0"
    with pytest.raises(InvalidInputError, match="found 0"):
        read_pin("ARG VLLM_SPEC=vllm>=0.33\n", "vllm")
    with pytest.raises(InvalidInputError, match="found 2"):
        read_pin("ARG A_SPEC=vllm==1\nARG B_SPEC=vllm==2\n", "vllm")


def test_vllm_required_pin_reads_exact_pins_only() -> None:
    assert required_pin(["numpy", "torch==2.14.0", "torchaudio==2.11.0"], "torch") == "2.14.0"
    assert required_pin(["torch>=2.4"], "torch") is None


# --- the checker on a fake vLLM (offline) ------------------------------------------------------------

FAKE_VLLM = {
    "vllm/__init__.py": 'MODULE_ATTRS = {"LLM": ".llm:LLM", "Out": ".out:Out"}\n',
    "vllm/llm.py": (
        "from vllm.args import EngineArgs\n"
        "class LLM:\n"
        "    def __init__(self, model: str, *, seed: int = 0, **kwargs):\n"
        "        self.engine = EngineArgs(model=model, **kwargs)\n"
        "    def generate(self, prompts, sampling_params=None, *, use_tqdm=True): ...\n"
    ),
    "vllm/args.py": (
        "from dataclasses import dataclass\nfrom typing import Literal\n"
        'Mode = Literal["raw", "processed"]\n'
        "@dataclass\nclass EngineArgs:\n    model: str\n    mode: Mode | None = None\n    cache: bool = False\n"
    ),
    "vllm/out.py": "from dataclasses import dataclass\n@dataclass\nclass Out:\n    token_ids: list\n",
    "vllm/v1/engine/__init__.py": 'FINISH_REASON_STRINGS = ("stop", "length")\n',
}
FAKE_ENGINE = """
import vllm
from vllm import Out
VLLM_FINISH_REASONS = {"stop": "stop", "length": "length"}
def arguments(path):
    return dict(model=path, seed=1, cache=True, mode="processed")
def build(path):
    return vllm.LLM(**arguments(path))
def tokens(out: Out):
    return out.token_ids
"""


def test_vllm_contract_follows_kwargs_into_the_forwarded_class() -> None:
    source = PackageSource.from_files(FAKE_VLLM)
    assert check_contract(uses_of_engine(FAKE_ENGINE), source) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("cache=True", "cach=True", "argument 'cach' of vllm.LLM.__init__(): vLLM accepts no such argument (did you mean 'cache'?)"),
        ('mode="processed"', 'mode="logits"', "'logits' is not one of ['processed', 'raw']"),
        ("out.token_ids", "out.tokens", "Out has no such attribute"),
        ("vllm.LLM(**arguments(path))", "vllm.Engine(**arguments(path))", "export 'Engine' of vllm: vllm does not export it"),
        ("vllm.LLM(**arguments(path))", "vllm.LLM(**options)", "unreadable '**options'"),
        ('"length": "length"}', '"length": "length", "abort": None}', "'abort' of vllm: not a vLLM finish reason"),
        ('{"stop": "stop", "length": "length"}', '{"stop": "stop"}', "does not map vLLM's finish reasons ['length']"),
        ("VLLM_FINISH_REASONS", "FINISH", "VLLM_FINISH_REASONS (no module-level dict of that name)"),
    ],
)  # fmt: skip
def test_vllm_contract_reports_each_kind_of_drift(old, new, expected) -> None:
    assert FAKE_ENGINE.count(old) == 1, old
    problems = check_contract(
        uses_of_engine(FAKE_ENGINE.replace(old, new)), PackageSource.from_files(FAKE_VLLM)
    )
    assert any(expected in problem for problem in problems), problems


def test_vllm_contract_checks_positional_arguments() -> None:
    use = Use("positional", "vllm.LLM", "3", line=9, method="generate")
    (problem,) = check_contract([use], PackageSource.from_files(FAKE_VLLM))
    assert problem.endswith("at most 2 positional arguments")
