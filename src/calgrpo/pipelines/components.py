"""One lightweight KFP component per stage; each body only calls the library.

Top-level imports are stdlib and kfp only; everything heavy is imported inside the bodies, which run
in the project's images (``install_kfp_package=False``: the images carry kfp already). Artifacts are
folders or files at ``<artifact>.path``; the library's own formats (problems.parquet,
attempts.parquet, verdicts, model folders with manifests) live inside them.
"""

# No `from __future__ import annotations` here: KFP reads the real annotation objects.
from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from calgrpo.pipelines.images import CPU_IMAGE, GPU_IMAGE, SANDBOX_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fetch_model(model_uri: str, model: Output[Model]):
    """Materialise a policy (hub id with optional @revision, s3:// prefix, local folder, or tiny:llama)
    as a Model artifact."""
    from calgrpo.models.loading import load_policy

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


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def prepare_problems(config: str, rounds: int, problems: Output[Dataset], report: Output[Markdown]):
    """The run's problems: its dataset ingested (normalised, validated with Great Expectations; bad
    data fails the run) into train and eval splits, or a synthetic task's fixed evaluation set.
    ``rounds``: the rounds compiled into the pipeline, which the config must match."""
    from pathlib import Path

    from calgrpo.pipelines.config import read_pipeline_config
    from calgrpo.pipelines.steps import prepare_problems_step

    text = prepare_problems_step(read_pipeline_config(config), rounds, problems.path)
    Path(report.path).write_text(text)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def resolve_run_model(config: str, which: str) -> str:
    """The concrete URI of the run's ``model`` or ``baseline`` (a registry pointer resolved to its
    version; an empty baseline: the registry's current model, "" when none). Never cached: a
    pointer's target changes while its URI does not."""
    from calgrpo.pipelines.config import read_pipeline_config
    from calgrpo.pipelines.steps import resolve_model_step

    return resolve_model_step(read_pipeline_config(config), which)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def initial_model(config: str, model_uri: str, problems: Input[Dataset], model: Output[Model]):
    """The run's starting policy as a Model artifact (tiny:* built exactly as ``calgrpo learn`` does)."""
    from calgrpo.pipelines.config import read_pipeline_config
    from calgrpo.pipelines.steps import fetch_model_step

    fetch_model_step(read_pipeline_config(config), model_uri, problems.path, model.path)
    model.metadata["source"] = model_uri
    model.metadata["policy_version"] = 0


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def rollout(
    config: str,
    round_index: int,
    problems: Input[Dataset],
    model: Input[Model],
    attempts: Output[Dataset],
    shard_index: int = 0,
    gpu_type: str = "",
    gpu_count: str = "",
):
    """Multi-attempt rollout with verifier feedback of round ``round_index``'s problems (shard
    ``shard_index`` of the config's ``rollout_shards``); writes attempts.parquet, the round's
    problems and shard.json (``merge_attempts`` joins the shards). ``gpu_type``/``gpu_count`` only
    label the artifact; passing them also routes them into a ParallelFor, where the accelerator
    request reads them."""
    from calgrpo.pipelines.config import read_pipeline_config
    from calgrpo.pipelines.steps import rollout_step

    # policy_version: the training step of the model (0 before any training), as in `calgrpo learn`.
    version = int(model.metadata.get("policy_version", 0))
    result = rollout_step(read_pipeline_config(config), round_index, int(shard_index), problems.path,
                          model.path, version, attempts.path)  # fmt: skip
    attempts.metadata.update({"shard": f"{int(shard_index)}", "accelerator": f"{gpu_count} x {gpu_type}",
                              "attempts": result["attempts"]})  # fmt: skip


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_shards(config: str) -> list[int]:
    """[0, 1, ..., rollout_shards - 1]: the items of the rollout fan-out."""
    from calgrpo.pipelines.config import read_pipeline_config

    return list(range(read_pipeline_config(config).rollout_shards))


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_attempts(shards: Input[list[Dataset]], attempts: Output[Dataset]):
    """The rollout shards of one round as one attempts.parquet (and problems.parquet), in shard order
    (whatever order the fan-out collected them in); a missing or repeated shard fails the task."""
    from calgrpo.pipelines.steps import merge_step

    attempts.metadata["attempts"] = merge_step([shard.path for shard in shards], attempts.path)


@dsl.component(base_image=SANDBOX_IMAGE, install_kfp_package=False)
def verify(
    problems: Input[Dataset], attempts: Input[Dataset], verdicts: Output[Dataset], summary: Output[Metrics]
):
    """Authoritative verdicts (code in the sandbox); pass rates as KFP metrics. ``problems``: a folder
    with problems.parquet (ingest's output, or a round's attempts folder). ``attempts`` is the
    rollout's folder (attempts.parquet) or any table file, or a folder holding one, with the columns
    problem_id, sample, attempt, completion (parquet or JSONL)."""
    from pathlib import Path

    from calgrpo.pipelines.steps import attempts_table
    from calgrpo.verify import VerifyStageConfig, verify_stage

    Path(verdicts.path).mkdir(parents=True, exist_ok=True)
    result = verify_stage(VerifyStageConfig(problems=problems.path, attempts=attempts_table(attempts.path),
                                            output=Path(verdicts.path, "verdicts.parquet")))  # fmt: skip
    for task, numbers in result["per_task"].items():
        summary.log_metric(f"verify/{task}/pass_rate", numbers["pass_rate"])


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(
    config: str,
    round_index: int,
    attempts: Input[Dataset],
    verdicts: Input[Dataset],
    model: Input[Model],
    initial: Input[Model],
    new_model: Output[Model],
    train_state: Output[Artifact],
    metrics: Output[Metrics],
    state: Input[Artifact] = None,
):
    """CAL-GRPO on one rollout batch with authoritative rewards (every setting of the config's
    ``train``); writes the updated model and the training state (optimizer, scheduler, step) that
    the next round's ``state`` continues. ``initial``: the KL anchor when ``train.kl_coef`` > 0. With
    several GPUs in the pod the step runs under torchrun on all of them; the update is the same."""
    import torch

    from calgrpo.pipelines.config import read_pipeline_config
    from calgrpo.pipelines.steps import finish_round, train_round_config
    from calgrpo.train.launch import run_train

    previous = state.path if state is not None else None
    run = read_pipeline_config(config)
    stage = train_round_config(run, round_index, attempts=attempts.path, verdicts=verdicts.path,
                               model=model.path, output=train_state.path, state=previous,
                               reference=initial.path)  # fmt: skip
    result = run_train(stage, processes=torch.cuda.device_count())
    finish_round(result, train_state.path, new_model, metrics, run, round_index)


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
    config: str,
    round_index: int,
    attempts: Input[Dataset],
    verdicts: Input[Dataset],
    model: Input[Model],
    initial: Input[Model],
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

    from calgrpo.pipelines.config import read_pipeline_config
    from calgrpo.pipelines.steps import finish_round, train_round_config
    from calgrpo.storage.core import join
    from calgrpo.train.launch import request_from_task_config
    from calgrpo.train.trainjob import KubernetesTrainJobs, train_on_cluster

    name = f"calgrpo-train-r{round_index}-{uuid.uuid4().hex[:8]}"
    request = request_from_task_config(task_config, name=name, image=trainer_image, num_nodes=num_nodes,
                                       procs_per_node=int(procs_per_node))  # fmt: skip
    previous = state.path if state is not None else None
    run = read_pipeline_config(config)
    stage = train_round_config(run, round_index, attempts=attempts.path, verdicts=verdicts.path,
                               model=model.path, output=train_state.path, state=previous,
                               reference=initial.path)  # fmt: skip
    result = train_on_cluster(stage, staging=join(staging, name), request=request, jobs=KubernetesTrainJobs())
    finish_round(result, train_state.path, new_model, metrics, run, round_index)


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate_run(
    config: str,
    problems: Input[Dataset],
    model: Input[Model],
    initial: Input[Model],
    baseline_uri: str,
    results: Output[Dataset],
    report: Output[Markdown],
    page: Output[HTML],
    metrics: Output[Metrics],
    train_state: Input[Artifact] = None,
):
    """V@1..V@K of the trained model on the run's evaluation split with bootstrap intervals, paired
    with ``baseline_uri`` (empty: the initial model); the report (HTML, with the run's training
    curves when ``train_state``, the last round's train output, is given), its headline (Markdown),
    per-problem rows, transcripts."""
    from calgrpo.pipelines.config import read_pipeline_config
    from calgrpo.pipelines.steps import evaluate_step, log_evaluation

    history = train_state.path if train_state is not None else None
    outcome = evaluate_step(read_pipeline_config(config), problems.path, model.path, baseline_uri,
                            initial.path, results.path, history)  # fmt: skip
    log_evaluation(outcome, results.path, report, metrics, page)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def round_table(config: str, train_state: Input[Artifact], table: Output[Markdown]):
    """Every round's metrics (rollout V@K, loss, KL, entropy, clip fraction, tokens/s) in one table."""
    from calgrpo.pipelines.config import read_pipeline_config
    from calgrpo.pipelines.steps import round_table_step

    round_table_step(read_pipeline_config(config), train_state.path, table)


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
    page: Output[HTML],
    metrics: Output[Metrics],
):
    """V@1..V@K with bootstrap intervals, against a baseline when given; the report (HTML), its
    headline (Markdown), per-problem rows, transcripts."""
    from calgrpo.evaluation.stage import EvaluateConfig, evaluate
    from calgrpo.pipelines.steps import log_evaluation
    from calgrpo.rollout.config import RolloutConfig, SamplingParams

    episodes = RolloutConfig(num_attempts=num_attempts, group_size=samples,
                             sampling=SamplingParams(max_new_tokens=max_new_tokens or None))  # fmt: skip
    outcome = evaluate(EvaluateConfig(problems=f"{problems.path}#{split}" if split else problems.path,
                                      model=model.path, baseline=baseline_uri or None, output=results.path,
                                      rollout=episodes, seed=seed))  # fmt: skip
    log_evaluation(outcome, results.path, report, metrics, page)


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
def promote(config: str, model: Input[Model], results: Input[Dataset]) -> bool:
    """Register the model as a version in the config's registry; move the current pointer if the
    evaluation clears the margin (no registry configured: nothing to do, False)."""
    from calgrpo.pipelines.config import read_pipeline_config
    from calgrpo.pipelines.steps import promote_step

    return promote_step(read_pipeline_config(config), model.path, results.path)


ALL = {
    "fetch_model": fetch_model,
    "ingest": ingest,
    "prepare_problems": prepare_problems,
    "resolve_run_model": resolve_run_model,
    "initial_model": initial_model,
    "plan_shards": plan_shards,
    "rollout": rollout,
    "merge_attempts": merge_attempts,
    "verify": verify,
    "train": train,
    "train_on_trainjob": train_on_trainjob,
    "evaluate_run": evaluate_run,
    "round_table": round_table,
    "evaluate": evaluate,
    "resolve_model": resolve_model,
    "promote": promote,
}
