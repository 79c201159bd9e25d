"""One lightweight KFP component per stage; each body only calls the library.

Top-level imports are stdlib and kfp only; everything heavy is imported inside the bodies, which run
in the project's images (``install_kfp_package=False``: the images carry kfp already). Artifacts are
folders or files at ``<artifact>.path``; the library's own formats (problems.parquet,
attempts.parquet, verdicts, model folders with manifests) live inside them.
"""

# No `from __future__ import annotations` here: KFP reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from calgrpo.pipelines.images import CPU_IMAGE, GPU_IMAGE, SANDBOX_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fetch_model(model_uri: str, model: Output[Model]):
    """Materialise a policy (hub id, s3:// prefix, local folder, or tiny:llama) as a Model artifact."""
    from calgrpo.models.loading import load_policy
    from calgrpo.models.tiny import save_tiny_from_uri

    if model_uri.startswith("tiny:"):
        save_tiny_from_uri(model_uri, model.path)
    else:
        policy = load_policy(model_uri)
        policy.model.save_pretrained(model.path)
        policy.tokenizer.save_pretrained(model.path)
    model.metadata["source"] = model_uri


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest(
    format: str,
    source: str,
    eval_fraction: float,
    limit: int,
    problems: Output[Dataset],
    report: Output[Markdown],
):
    """Normalise and validate a dataset (Great Expectations); fails the run on bad data."""
    from pathlib import Path

    from calgrpo.ingest.pipeline import IngestConfig, ingest

    card = ingest(IngestConfig(format=format, input=source, output=problems.path, eval_fraction=eval_fraction,
                               limit=limit or None))  # fmt: skip
    Path(report.path).write_text(Path(problems.path, "validation.txt").read_text())
    problems.metadata.update({k: card[k] for k in ("published", "quarantined", "content_hash")})


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def rollout(
    problems: Input[Dataset],
    model: Input[Model],
    split: str,
    problems_per_round: int,
    num_attempts: int,
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    round_index: int,
    attempts: Output[Dataset],
    shard_index: int = 0,
    num_shards: int = 1,
    gpu_type: str = "",
    gpu_count: str = "",
    engine: str = "transformers",
):
    """Multi-attempt rollout with verifier feedback of shard ``shard_index`` of ``num_shards`` of the
    round's problems; writes attempts.parquet and shard.json (``merge_attempts`` joins the shards).

    ``problems_per_round`` 0: the whole split, else a seeded draw per round; ``max_new_tokens`` 0: the task's.
    ``engine``: ``transformers`` or ``vllm`` (GPU image; prefix caching, continuous batching).
    ``gpu_type``/``gpu_count`` only label the artifact (throughput is per accelerator); passing them
    also makes the KFP compiler route them into a ParallelFor, where the accelerator request reads them.
    """
    from pathlib import Path

    import pandas as pd
    import torch

    from calgrpo.io import read_problems
    from calgrpo.rollout.config import RolloutConfig, SamplingParams
    from calgrpo.rollout.engine import open_engine
    from calgrpo.rollout.loop import problems_for_round, rollout, shard_of
    from calgrpo.rollout.records import write_attempt_shard
    from calgrpo.seeding import derive_seed
    from calgrpo.storage.folders import content_fingerprint
    from calgrpo.tasks import TASKS

    chosen = read_problems(Path(problems.path, f"{split}.parquet" if split else "problems.parquet"))
    chosen = problems_for_round(chosen, problems_per_round, seed, round_index)
    chosen = shard_of(chosen, int(shard_index), num_shards)  # ParallelFor items may arrive as floats
    _, layout, engine = open_engine(engine, model.path)
    budget = max_new_tokens or max(TASKS.get(p.task).default_max_new_tokens for p in chosen)
    sampling = SamplingParams(temperature=temperature, max_new_tokens=budget)
    config = RolloutConfig(num_attempts=num_attempts, group_size=group_size, sampling=sampling)
    stream = derive_seed(seed, "rollout", round_index, int(shard_index), num_shards)
    generator = torch.Generator().manual_seed(stream)
    # policy_version: the training step of the model (0 before any training), as in `calgrpo learn`.
    version = int(model.metadata.get("policy_version", 0))
    records = rollout(chosen, engine, layout, config, generator, policy_version=version,
                      policy=content_fingerprint(model.path) or "")  # fmt: skip
    write_attempt_shard(records, attempts.path, int(shard_index), num_shards)
    attempts.metadata["shard"] = f"{int(shard_index)}/{num_shards}"
    attempts.metadata["accelerator"] = f"{gpu_count} x {gpu_type}"
    attempts.metadata["attempts"] = len(records)
    attempts.metadata["v@k"] = float(
        pd.Series([r.reward for r in records]).sum() / max(len(chosen) * group_size, 1)
    )


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_shards(num_shards: int) -> list[int]:
    """[0, 1, ..., num_shards - 1]: the items of the rollout fan-out."""
    if num_shards < 1:
        raise ValueError(f"rollout_shards must be >= 1, got {num_shards}")
    return list(range(num_shards))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_attempts(shards: Input[list[Dataset]], attempts: Output[Dataset]):
    """The rollout shards of one round as one attempts.parquet, in shard order (whatever order the
    fan-out collected them in); a missing or repeated shard fails the task."""
    from pathlib import Path

    from calgrpo.rollout.records import merge_attempt_shards, write_attempts

    records = merge_attempt_shards([shard.path for shard in shards])
    Path(attempts.path).mkdir(parents=True, exist_ok=True)
    write_attempts(records, Path(attempts.path, "attempts.parquet"))
    attempts.metadata["attempts"] = len(records)


@dsl.component(base_image=SANDBOX_IMAGE, install_kfp_package=False)
def verify(
    problems: Input[Dataset], attempts: Input[Dataset], verdicts: Output[Dataset], summary: Output[Metrics]
):
    """Authoritative verdicts (code in the sandbox); pass rates as KFP metrics. ``attempts`` is the
    rollout's folder (attempts.parquet) or any table file, or a folder holding one, with the columns
    problem_id, sample, attempt, completion (parquet or JSONL)."""
    from pathlib import Path

    from calgrpo.pipelines.training import attempts_table
    from calgrpo.verify import VerifyStageConfig, verify_stage

    Path(verdicts.path).mkdir(parents=True, exist_ok=True)
    result = verify_stage(VerifyStageConfig(problems=Path(problems.path, "problems.parquet"),
                                            attempts=attempts_table(attempts.path),
                                            output=Path(verdicts.path, "verdicts.parquet")))  # fmt: skip
    for task, numbers in result["per_task"].items():
        summary.log_metric(f"verify/{task}/pass_rate", numbers["pass_rate"])


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(
    attempts: Input[Dataset],
    verdicts: Input[Dataset],
    model: Input[Model],
    method: str,
    learning_rate: float,
    ppo_epochs: int,
    minibatches: int,
    temperature: float,
    precision: str,
    seed: int,
    round_index: int,
    new_model: Output[Model],
    train_state: Output[Artifact],
    metrics: Output[Metrics],
    state: Input[Artifact] = None,
):
    """CAL-GRPO on one rollout batch with authoritative rewards; writes the updated model and the
    training state (optimizer, scheduler, step) that the next round's ``state`` continues.

    ``temperature`` must be the rollout's: tokens are scored at the temperature they were sampled at.
    ``precision``: ``bf16`` (autocast, fp32 master weights; for GPUs) or ``fp32``. With several GPUs
    in the pod the step runs under torchrun (FSDP) on all of them; the update is the same.
    """
    import torch

    from calgrpo.pipelines.training import finish_round, round_config
    from calgrpo.train.launch import run_train

    config = round_config(attempts=attempts.path, verdicts=verdicts.path, model=model.path,
                          output=train_state.path, state=state.path if state is not None else None,
                          method=method, learning_rate=learning_rate, ppo_epochs=ppo_epochs,
                          minibatches=minibatches, temperature=temperature, precision=precision, seed=seed,
                          round_index=round_index)  # fmt: skip
    result = run_train(config, processes=torch.cuda.device_count())
    finish_round(result, train_state.path, new_model, metrics)


@dsl.component(
    base_image=CPU_IMAGE,
    install_kfp_package=False,
    # The GPUs, tolerations and node selector set on this task go to the TrainJob's nodes, not to this
    # launcher pod, which only stages files and waits; the env (S3 credentials) goes to both.
    task_config_passthroughs=[
        dsl.TaskConfigField.RESOURCES,
        dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
        dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
        dsl.TaskConfigPassthrough(field=dsl.TaskConfigField.ENV, apply_to_task=True),
    ],
)
def train_on_trainjob(
    attempts: Input[Dataset],
    verdicts: Input[Dataset],
    model: Input[Model],
    method: str,
    learning_rate: float,
    ppo_epochs: int,
    minibatches: int,
    temperature: float,
    precision: str,
    seed: int,
    round_index: int,
    num_nodes: int,
    procs_per_node: str,
    staging: str,
    trainer_image: str,
    task_config: dsl.TaskConfig,
    new_model: Output[Model],
    train_state: Output[Artifact],
    metrics: Output[Metrics],
    state: Input[Artifact] = None,
):
    """The ``train`` step on ``num_nodes`` x ``procs_per_node`` GPUs as a Kubeflow Trainer TrainJob
    (runtime torch-distributed): inputs staged under ``staging`` (s3://), the job followed to the end,
    its failure reason reported, the job deleted either way."""
    import uuid

    from calgrpo.pipelines.training import finish_round, round_config
    from calgrpo.storage.core import join
    from calgrpo.train.launch import request_from_task_config
    from calgrpo.train.trainjob import KubernetesTrainJobs, train_on_cluster

    name = f"calgrpo-train-r{round_index}-{uuid.uuid4().hex[:8]}"
    request = request_from_task_config(task_config, name=name, image=trainer_image, num_nodes=num_nodes,
                                       procs_per_node=int(procs_per_node))  # fmt: skip
    config = round_config(attempts=attempts.path, verdicts=verdicts.path, model=model.path,
                          output=train_state.path, state=state.path if state is not None else None,
                          method=method, learning_rate=learning_rate, ppo_epochs=ppo_epochs,
                          minibatches=minibatches, temperature=temperature, precision=precision, seed=seed,
                          round_index=round_index)  # fmt: skip
    jobs = KubernetesTrainJobs()
    result = train_on_cluster(config, staging=join(staging, name), request=request, jobs=jobs)
    finish_round(result, train_state.path, new_model, metrics)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate(
    problems: Input[Dataset],
    model: Input[Model],
    baseline_uri: str,
    split: str,
    num_attempts: int,
    samples: int,
    max_new_tokens: int,
    seed: int,
    results: Output[Dataset],
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """V@1..V@K with bootstrap intervals, against a baseline when given; reports, per-problem rows."""
    from pathlib import Path

    from calgrpo.evaluation.stage import EvaluateConfig, evaluate

    chosen = Path(problems.path, f"{split}.parquet" if split else "problems.parquet")
    outcome = evaluate(EvaluateConfig(
        problems=str(chosen), model=model.path, baseline=baseline_uri or None, output=results.path,
        k=num_attempts, samples=samples, max_new_tokens=max_new_tokens or None, seed=seed,
    ))  # fmt: skip
    Path(report.path).write_text(Path(results.path, "report.md").read_text())
    for k, value in enumerate(outcome["candidate"]["v@k"]["mean"], start=1):
        metrics.log_metric(f"eval/v_at_{k}", value)
    if "difference" in outcome:
        metrics.log_metric("eval/difference_low", outcome["difference"]["low"][-1])


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def resolve_model(uri: str, registry: str, name: str) -> str:
    """The concrete model URI: ``uri`` itself, the model a registry pointer (``.../current.json``) names,
    or for an empty ``uri`` the registry's current model ("" when nothing was promoted yet).

    Never cached: a pointer's target changes while its URI does not; the cached ``fetch_model`` after
    it is keyed on the immutable version URI this returns.
    """
    from calgrpo.evaluation.promotion import current_version, resolve_pointer

    if uri:
        return resolve_pointer(uri)
    current = current_version(registry, name) if registry else None
    return current["model"] if current else ""


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def promote(
    model: Input[Model], results: Input[Dataset], registry: str, name: str, margin: float, first: bool
) -> bool:
    """Register the model as a version; move the current pointer if the evaluation clears the margin."""
    from calgrpo.evaluation.promotion import PromoteConfig, promote

    decision = promote(PromoteConfig(model=model.path, evaluation=results.path, registry=registry, name=name,
                                     margin=margin, first=first))  # fmt: skip
    return bool(decision["promoted"])


ALL = {
    "fetch_model": fetch_model,
    "ingest": ingest,
    "plan_shards": plan_shards,
    "rollout": rollout,
    "merge_attempts": merge_attempts,
    "verify": verify,
    "train": train,
    "train_on_trainjob": train_on_trainjob,
    "evaluate": evaluate,
    "resolve_model": resolve_model,
    "promote": promote,
}
