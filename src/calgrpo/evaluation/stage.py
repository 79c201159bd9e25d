"""``calgrpo evaluate``: roll out a model (and a baseline) on problems, measure V@k with CIs, report.

Candidate and baseline see the same problems with the same sampling seed. Next to V@k (K attempts
with feedback) each model's pass@k from independent first attempts is measured on the same
problems, with their paired difference: does feedback beat resampling? Outputs, published as one
folder (manifest last): metrics.json, report.md, report.html (self-contained), headline.md (the main
table and the significance sentence), curves.png, with a training history training.png and
training.md, per_problem.parquet, transcripts.parquet (every attempt's text, verdict and feedback),
and the trackers' files (tensorboard/ by default).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calgrpo.errors import check_ranges
from calgrpo.rollout.config import RolloutConfig
from calgrpo.trackers import DEFAULT_REPORT_TO, check_report_to


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluate a model's Verification@k on a problems file."""

    problems: str
    """A problems.parquet or an ingest output folder, local or s3:// (``runs/data#eval`` for its
    eval split)."""
    model: str
    """Candidate policy: hub id (ID@REVISION pins one), local folder, s3:// prefix or tiny:llama."""
    output: str
    """Output folder (local or s3://), published with a manifest."""
    baseline: str | None = None
    """Baseline policy for the paired comparison (the current production model)."""
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(group_size=4))
    """The episodes, named as everywhere: ``--rollout.num-attempts`` is the attempt budget K,
    ``--rollout.group-size`` the independent episodes per problem (n, default 4), ``--rollout.sampling.*``
    the temperature, greedy decoding and the attempt length (default: the task's own budget)."""
    independent_samples: int | None = None
    """Independent first attempts per problem behind pass@k, the no-feedback comparison (default
    max(K, n)); the episodes' first attempts count among them and more are sampled when needed. 0:
    no comparison."""
    seed: int = 0
    """Seed of sampling and of the bootstrap."""
    resamples: int = 2000
    """Bootstrap resamples."""
    threads: int | None = None
    """CPU threads for torch."""
    report_to: tuple[str, ...] = DEFAULT_REPORT_TO
    """Trackers of the results (``tensorboard`` event files in OUTPUT/tensorboard, ``mlflow``,
    ``wandb``, or ``none``; calgrpo.trackers), named ``eval/v@k`` and so on as in ``learn``."""
    step: int = 0
    """The trackers' x-axis value of this evaluation (the train pipeline passes its round count)."""
    name: str | None = None
    """The candidate's name in the report's title (default: from --model, never a whole path)."""
    margin: float = 0.0
    """The promotion margin the report's significance sentence is stated against (promotion's rule:
    the lower 95% bound of the V@K difference above it)."""
    training_history: str | None = None
    """A training run's per-round metrics (learn's metrics.jsonl, the train stage's history.jsonl;
    local or s3://): the report adds training curves and a per-round table."""
    base_model: str | None = None
    """The model training started from (the report's lineage)."""
    cost_per_attempt: tuple[float, ...] = (0.02, 0.05, 0.1)
    """Per-attempt cost levels at which the cost-aware score J@k = V@k - cost x attempts@k - token
    cost x tokens@k is reported (empty: none)."""
    cost_per_token: float = 0.0
    """Per-token cost added at every level of --cost-per-attempt."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "report_to", check_report_to(self.report_to))
        independent = self.independent_samples
        enough = independent in (None, 0) or independent >= self.k
        rules = {"resamples": (self.resamples >= 100, ">= 100")}
        costs = (*self.cost_per_attempt, self.cost_per_token)
        rules["cost_per_attempt"] = (
            all(math.isfinite(c) and c >= 0 for c in costs),
            "finite and >= 0 (both cost flags)",
        )
        rules["independent_samples"] = (enough, f"0 or >= K ({self.k})")
        check_ranges("evaluate", self, rules)

    @property
    def independent(self) -> int:
        """Independent first attempts per problem (0: none)."""
        if self.independent_samples is None:
            return max(self.k, self.rollout.group_size)
        return self.independent_samples

    @property
    def k(self) -> int:
        """The attempt budget K."""
        return self.rollout.num_attempts


def _episodes(config: EvaluateConfig, model_uri: str, problems) -> tuple[Any, list, float]:
    """(episode table, the episodes' attempt records, seconds) of one model: n episodes of up to K
    attempts per problem, and the independent first attempts behind pass@k."""
    import dataclasses

    import torch

    from calgrpo.evaluation.summary import episode_table
    from calgrpo.models.loading import inference_placement, load_policy
    from calgrpo.rollout.chat import ChatLayout
    from calgrpo.rollout.hf_engine import TransformersEngine
    from calgrpo.rollout.loop import rollout  # the attempt length defaults to the task's budget there
    from calgrpo.seeding import derive_seed

    started = time.perf_counter()  # loading the policy is part of rolling it out
    device, dtype = inference_placement()
    policy = load_policy(model_uri, device=device, dtype=dtype)
    policy.model.eval()
    layout = ChatLayout(policy.tokenizer)
    engine = TransformersEngine(policy.model, policy.tokenizer.pad_token_id, layout.stop_token_ids)
    # Progress on stderr: a bar on a terminal, a JSON line per attempt round in a pipe or a pod's log.
    records = rollout(problems, engine, layout, config.rollout, torch.Generator().manual_seed(config.seed),
                      show_progress=True)  # fmt: skip
    table = episode_table(problems, records, config.rollout.group_size)
    if config.independent:
        # Each episode's first attempt is an independent sample of the prompt: they count first.
        reused = min(config.independent, config.rollout.group_size)
        correct = (table.first[:, :reused] == 1).sum(axis=1)
        extra = config.independent - reused
        if extra:
            single = dataclasses.replace(config.rollout, num_attempts=1, group_size=extra)
            generator = torch.Generator().manual_seed(derive_seed(config.seed, "independent"))
            more = rollout(problems, engine, layout, single, generator, show_progress=True)
            correct = correct + (episode_table(problems, more, extra).first == 1).sum(axis=1)
        table = dataclasses.replace(table, independent_correct=correct,
                                    independent_samples=config.independent)  # fmt: skip
    return table, records, time.perf_counter() - started


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Run the evaluation and publish its outputs; returns metrics.json's content."""
    import pandas as pd

    from calgrpo.configs import to_json
    from calgrpo.evaluation.summary import compare, cost_aware_scores, per_problem_rows, summarize
    from calgrpo.evaluation.transcripts import TRANSCRIPT_COLUMNS, example_episodes, transcript_rows
    from calgrpo.io import load_problems
    from calgrpo.storage import publish_folder
    from calgrpo.storage.folders import content_fingerprint
    from calgrpo.trackers import open_trackers

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="calgrpo-eval-") as folder:
        out = Path(folder)
        problems = load_problems(config.problems)  # an s3:// one through its manifest, verified
        candidate, records, rollout_s = _episodes(config, config.model, problems)
        transcripts = transcript_rows(records, "candidate")
        metrics: dict[str, Any] = {
            "candidate_model": config.model, "baseline_model": config.baseline, "num_attempts": config.k,
            # What was evaluated, by content: promotion checks it against what it promotes.
            "candidate_fingerprint": content_fingerprint(config.model),
            "baseline_fingerprint": content_fingerprint(config.baseline) if config.baseline else None,
            "seed": config.seed, "candidate": summarize(problems, candidate, config.k, seed=config.seed,
                                                        resamples=config.resamples),
        }  # fmt: skip
        rows = per_problem_rows(problems, candidate, config.k, "candidate")
        if config.baseline:
            baseline, baseline_records, baseline_s = _episodes(config, config.baseline, problems)
            transcripts += transcript_rows(baseline_records, "baseline")
            rollout_s += baseline_s
            metrics["baseline"] = summarize(
                problems, baseline, config.k, seed=config.seed, resamples=config.resamples
            )
            metrics["difference"] = compare(
                candidate, baseline, config.k, seed=config.seed, resamples=config.resamples
            )
            rows += per_problem_rows(problems, baseline, config.k, "baseline")
        (out / "problems.parquet").unlink(missing_ok=True)
        pd.DataFrame(rows).to_parquet(out / "per_problem.parquet", index=False)
        frame = pd.DataFrame(transcripts, columns=TRANSCRIPT_COLUMNS)
        frame.to_parquet(out / "transcripts.parquet", index=False)
        for side in ("candidate", "baseline"):
            if metrics.get(side) and "spend" in metrics[side]:
                metrics[side]["cost_aware"] = cost_aware_scores(metrics[side], config.cost_per_attempt,
                                                                config.cost_per_token)  # fmt: skip
        metrics.update(_identity(config, problems))
        metrics["config"] = to_json(config)  # the resolved config, next to what it produced
        history = _history(config.training_history)
        metrics["training_rounds"] = sum(1 for row in history if "train/loss" in row)
        write_reports(metrics, out, example_episodes(problems, transcripts), history)
        total = time.perf_counter() - started
        overhead = 1 - rollout_s / total if total > 0 else 0.0
        metrics["timing"] = {"rollout_and_verify_s": round(rollout_s, 3), "total_s": round(total, 3)}
        metrics["timing"]["overhead_share"] = round(overhead, 4)  # reading problems, statistics, reports
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        with open_trackers(config.report_to, out, Path(config.output).name, metrics["config"]) as trackers:
            trackers.log(tracked_scalars(metrics), step=config.step)
        publish_folder(out, config.output)
    return metrics


def tracked_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """An evaluation's numbers under the trackers' names: ``eval/v@k``, ``eval/pass@k``,
    ``eval/feedback_gain@k``, ``eval/baseline/v@k``, ``eval/difference@k`` (k = 1..K) and the
    candidate's details (``eval/first_attempt_accuracy``, ...)."""
    out: dict[str, float] = {}
    candidate = metrics["candidate"]
    curves = {"v@": candidate["v@k"], "pass@": candidate.get("pass@k"),
              "feedback_gain@": candidate.get("feedback_gain"), "difference@": metrics.get("difference"),
              "baseline/v@": (metrics.get("baseline") or {}).get("v@k")}  # fmt: skip
    for prefix, curve in curves.items():
        for k, value in enumerate((curve or {}).get("mean", []), start=1):
            out[f"eval/{prefix}{k}"] = value
    for key in ("first_attempt_accuracy", "success_after_failed_first", "attempts_mean",
                "tokens_per_solved_problem"):  # fmt: skip
        if key in candidate:
            out[f"eval/{key}"] = candidate[key]
    return out


def _identity(config: EvaluateConfig, problems) -> dict[str, Any]:
    """What the report names: the candidate's title, the data by content, the code's version."""
    import dataclasses
    import hashlib

    from calgrpo import __version__
    from calgrpo.evaluation.report import model_title

    canonical = json.dumps([dataclasses.asdict(p) for p in problems], sort_keys=True, default=str)
    return {
        "candidate_name": config.name or model_title(config.model),
        "margin": config.margin,
        "problems_source": config.problems,
        "problems_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "base_model": config.base_model,
        "code_version": __version__,
    }


def _history(uri: str | None) -> list[dict[str, Any]]:
    """A training run's per-round rows (none when no history was given)."""
    if uri is None:
        return []
    from calgrpo.storage.folders import local_copy
    from calgrpo.train.stage import read_history

    with tempfile.TemporaryDirectory(prefix="calgrpo-history-") as scratch:
        return read_history(local_copy(uri, scratch))


def write_reports(metrics: dict[str, Any], out: Path, examples: list[dict[str, Any]],
                  history: list[dict[str, Any]]) -> None:  # fmt: skip
    """curves.png, pareto.png, training.png (with a history), report.md, report.html and headline.md."""
    from calgrpo.evaluation.plots import write_curves, write_pareto, write_training_curves
    from calgrpo.evaluation.report import headline_markdown, training_markdown, write_markdown
    from calgrpo.evaluation.report_html import write_html

    write_curves(metrics, out / "curves.png")
    pareto = out / "pareto.png" if write_pareto(metrics, out / "pareto.png") else None
    training_plot = out / "training.png"
    if not write_training_curves(history, metrics["num_attempts"], training_plot):
        training_plot = None
    else:
        (out / "training.md").write_text(training_markdown(history, metrics["num_attempts"]))
    write_markdown(metrics, out / "report.md", examples, history)
    write_html(metrics, out / "report.html", out / "curves.png", examples, history, training_plot, pareto)
    (out / "headline.md").write_text(headline_markdown(metrics))
