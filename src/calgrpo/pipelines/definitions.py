"""The `train` and `evaluate` pipelines, with their Kubernetes settings (kfp-kubernetes).

Rounds are unrolled when the pipeline is built (``build_train_pipeline(config)``); everything else
that changes the numbers travels in the one ``config`` parameter, and the other parameters only
place tasks. GPU stages (rollout, train, evaluate) get the accelerator type/limit, a GPU toleration
and a memory-backed /dev/shm; stages that touch S3 get the credentials Secret as environment
variables; flaky stages retry with backoff; every stage has a timeout; ingest is cached, training
is not; verify runs as a non-root user.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signatures' real annotations.
from kfp import dsl, kubernetes
from kfp.dsl import Dataset

from calgrpo.pipelines.components import ALL
from calgrpo.pipelines.images import GPU_IMAGE

S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
VERIFY_LABEL = ("calgrpo.dev/stage", "verify")


def _s3(task, secret: str):
    kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env={key: key for key in S3_KEYS})
    return task


def _gpu(task, gpu: tuple, timeout_s: int):
    """``gpu``: the (type, count, node selector) pipeline parameters."""
    gpu_type, gpu_count, node_selector = gpu
    task.set_accelerator_type(gpu_type)
    task.set_accelerator_limit(gpu_count)
    kubernetes.add_node_selector_json(task, node_selector)
    task.set_cpu_request("4")
    task.set_memory_request("32G")
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")  # vLLM, NCCL
    kubernetes.set_timeout(task, timeout_s)
    return task


def _cpu(task, cpu: str, memory: str, timeout_s: int):
    task.set_cpu_request(cpu)
    task.set_memory_request(memory)
    kubernetes.set_timeout(task, timeout_s)
    return task


def _retry(task):
    task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0)
    return task


def _resolved(uri, registry, name, s3_secret):
    """A ``resolve_model`` task (uncached: a registry pointer moves while its URI stays)."""
    task = ALL["resolve_model"](uri=uri, registry=registry, name=name)
    _retry(_s3(_cpu(task, "1", "1G", 600), s3_secret)).set_caching_options(False)
    return task.output


def _run_resolved(config, which, s3_secret):
    """A ``resolve_run_model`` task for the run's ``model`` or ``baseline`` (uncached, as above)."""
    task = ALL["resolve_run_model"](config=config, which=which)
    _retry(_s3(_cpu(task, "1", "1G", 600), s3_secret)).set_caching_options(False)
    return task.output


def _dataset_and_model(dataset_format, dataset_uri, eval_fraction, model_uri, s3_secret):
    """The evaluate pipeline's start: ingest the dataset, resolve and fetch the model (both cached)."""
    data = ALL["ingest"](format=dataset_format, source=dataset_uri, eval_fraction=eval_fraction, limit=0)
    _retry(_s3(_cpu(data, "2", "8G", 3600), s3_secret)).set_caching_options(True)
    model = ALL["fetch_model"](model_uri=_resolved(model_uri, "", "", s3_secret))
    _retry(_s3(_cpu(model, "2", "16G", 3600), s3_secret)).set_caching_options(True)
    return data, model


def build_train_pipeline(config=None, train_nodes: int = 1):
    """prepare problems -> initial model -> ``config.rounds`` x (rollout fan-out -> merge -> verify ->
    train) -> evaluate -> promote.

    Every setting that changes the numbers is in the one ``config`` parameter (a PipelineConfig as
    JSON, ``config``'s value its default); its rounds are unrolled here, so a run's config must keep
    them. The other parameters say where tasks run (GPUs, the S3 Secret, the TrainJob's staging and
    image). The trained model is evaluated against the config's baseline (by default the registry's
    current model, or the initial one when nothing was promoted) and promoted when it beats it by
    the margin. With ``train_nodes`` > 1 each round's training runs as a Kubeflow Trainer TrainJob of
    that many nodes x ``gpu_count`` GPUs (``train_on_trainjob``), its inputs staged under ``staging``.
    """
    from calgrpo.pipelines.config import PipelineConfig, pipeline_config_json

    config = config if config is not None else PipelineConfig()
    if train_nodes < 1:
        raise ValueError(f"train_nodes must be >= 1, got {train_nodes}")
    rounds = config.rounds

    @dsl.pipeline(
        name="calgrpo-train", description=f"CAL-GRPO training, {rounds} rounds, then evaluate and promote"
    )
    def train_pipeline(
        config: str = pipeline_config_json(config),
        gpu_type: str = "nvidia.com/gpu",
        gpu_count: str = "1",
        gpu_node_selector: dict = {},  # noqa: B006 (a KFP parameter default; the body runs once, at compile time)
        s3_secret: str = "calgrpo-s3",
        staging: str = "s3://calgrpo/staging",
        trainer_image: str = GPU_IMAGE,
    ) -> Dataset:
        gpu = (gpu_type, gpu_count, gpu_node_selector)
        data = ALL["prepare_problems"](config=config, rounds=rounds)
        _retry(_s3(_cpu(data, "2", "8G", 3600), s3_secret)).set_caching_options(True)
        problems = data.outputs["problems"]
        base = ALL["initial_model"](config=config, model_uri=_run_resolved(config, "model", s3_secret),
                                    problems=problems)  # fmt: skip
        _retry(_s3(_cpu(base, "2", "16G", 3600), s3_secret)).set_caching_options(True)
        initial = model = base.outputs["model"]
        shards = ALL["plan_shards"](config=config)
        _cpu(shards, "100m", "256M", 300).set_caching_options(True)
        state = None  # the previous round's training state (AdamW moments, scheduler, step)
        for round_index in range(rounds):
            # Fan-out: each shard of the round's problems on its own GPU task, merged in shard order.
            with dsl.ParallelFor(shards.output, name=f"rollout-round-{round_index + 1}") as shard:
                part = ALL["rollout"](config=config, round_index=round_index, problems=problems, model=model,
                                      shard_index=shard, gpu_type=gpu_type, gpu_count=gpu_count)  # fmt: skip
                _retry(_gpu(part, gpu, 4 * 3600)).set_caching_options(False)
            attempts = ALL["merge_attempts"](shards=dsl.Collected(part.outputs["attempts"]))
            _cpu(attempts, "1", "4G", 1800).set_caching_options(False)
            # The merged attempts folder holds the round's problems too: verify reads both from it.
            merged = attempts.outputs["attempts"]
            verdicts = ALL["verify"](problems=merged, attempts=merged)
            _cpu(verdicts, "2", "8G", 3600).set_caching_options(False)
            kubernetes.set_security_context(
                verdicts, run_as_user=65534, run_as_group=65534, run_as_non_root=True
            )
            # infra/base/networkpolicy-verify.yaml selects these pods by this label.
            kubernetes.add_pod_label(verdicts, VERIFY_LABEL[0], VERIFY_LABEL[1])
            step = dict(config=config, round_index=round_index, attempts=attempts.outputs["attempts"],
                        verdicts=verdicts.outputs["verdicts"], model=model, initial=initial)  # fmt: skip
            if state is not None:
                step["state"] = state
            if train_nodes > 1:  # more GPUs than a pod holds: the step runs as a Kubeflow Trainer TrainJob
                trained = ALL["train_on_trainjob"](**step, num_nodes=train_nodes, procs_per_node=gpu_count,
                                                   staging=staging, trainer_image=trainer_image)  # fmt: skip
                _s3(trained, s3_secret)
            else:
                trained = ALL["train"](**step)
            _gpu(trained, gpu, 8 * 3600).set_caching_options(False)
            model, state = trained.outputs["new_model"], trained.outputs["train_state"]
        table = ALL["round_table"](config=config, train_state=state)
        _cpu(table, "100m", "256M", 300).set_caching_options(False)
        scored = ALL["evaluate_run"](config=config, problems=problems, model=model, initial=initial,
                                     train_state=state,
                                     baseline_uri=_run_resolved(config, "baseline", s3_secret))  # fmt: skip
        _retry(_s3(_gpu(scored, gpu, 4 * 3600), s3_secret)).set_caching_options(False)
        decision = ALL["promote"](config=config, model=model, results=scored.outputs["results"])
        _retry(_s3(_cpu(decision, "1", "4G", 1800), s3_secret)).set_caching_options(False)
        return scored.outputs["results"]

    return train_pipeline


@dsl.pipeline(name="calgrpo-evaluate", description="Verification@K of a model, with intervals and a baseline")
def evaluate_pipeline(
    dataset_uri: str,
    model_uri: str,
    dataset_format: str = "gsm8k",
    baseline_uri: str = "",
    split: str = "",
    num_attempts: int = 5,
    samples: int = 4,
    max_new_tokens: int = 0,
    seed: int = 0,
    gpu_type: str = "nvidia.com/gpu",
    gpu_count: str = "1",
    gpu_node_selector: dict = {},  # noqa: B006 (a KFP parameter default)
    s3_secret: str = "calgrpo-s3",
) -> Dataset:
    gpu = (gpu_type, gpu_count, gpu_node_selector)
    data, model = _dataset_and_model(dataset_format, dataset_uri, 0.0, model_uri, s3_secret)
    scored = ALL["evaluate"](
        problems=data.outputs["problems"], model=model.outputs["model"],
        baseline_uri=_resolved(baseline_uri, "", "", s3_secret),
        split=split, num_attempts=num_attempts, samples=samples, max_new_tokens=max_new_tokens, seed=seed,
    )  # fmt: skip
    _retry(_s3(_gpu(scored, gpu, 4 * 3600), s3_secret)).set_caching_options(False)
    return scored.outputs["results"]
