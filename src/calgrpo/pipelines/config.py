"""The train pipeline's one config parameter: a run's settings (the ones ``calgrpo learn`` takes) plus
how the result is evaluated, promoted and fanned out.

It travels as a JSON string (a KFP struct would turn every integer into a float) and every
component reads it back through :func:`read_pipeline_config`, which validates it with the same
dataclasses the command line uses: a bad value fails in the first task, and ``pipeline
compile|submit|schedule|run-local`` validate it before anything is compiled or sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from calgrpo.errors import check_ranges
from calgrpo.rollout.config import VLLMSettings
from calgrpo.run_config import RunConfig


@dataclass(frozen=True)
class PipelineConfig(RunConfig):
    """A training run as a Kubeflow pipeline: the run's settings, its evaluation and promotion."""

    baseline: str = ""
    """Model the trained one is compared with: a model URI (a registry pointer
    ``.../models/NAME/current.json`` resolves to its version), or empty: the registry's current
    model, or the initial model when nothing was promoted yet (V@K before and after training)."""
    registry: str = "s3://calgrpo/registry"
    """Model registry for the promotion step (empty: no promotion)."""
    model_name: str = "policy"
    """The model's name in the registry."""
    margin: float = 0.0
    """Promote only when the lower 95% bound of the V@K difference to the baseline exceeds this."""
    rollout_shards: int = 1
    """Rollout tasks per round (each its own GPU pod); with 1, the round samples exactly as learn."""
    rollout_engine: Literal["transformers", "vllm"] = "transformers"
    """``transformers`` (CPU or GPU) or ``vllm`` (GPU image; prefix caching, continuous batching)."""
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    """Settings of the vLLM engine."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges("pipeline", self, {"rollout_shards": (self.rollout_shards >= 1, ">= 1")})


def pipeline_config_json(config: PipelineConfig) -> str:
    """The value of the pipeline's ``config`` parameter."""
    import json

    from calgrpo.configs import to_json

    return json.dumps(to_json(config), sort_keys=True)


def read_pipeline_config(text: str, where: str = "the pipeline's config parameter") -> PipelineConfig:
    """The ``config`` parameter back as a validated PipelineConfig (ConfigError naming a bad field)."""
    from calgrpo.configs import read_config

    return read_config(PipelineConfig, text, where)
