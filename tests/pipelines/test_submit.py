"""Submission and scheduling: a contract test against a local stand-in of the KFP v2beta1 API.

This is a contract test: the server implements only what kfp.Client calls, and the assertions pin
the requests calgrpo makes (pipeline spec, typed parameters, cron, max concurrency, no catch-up).
"""

import pytest

from calgrpo.errors import CalgrpoError, ConfigError
from calgrpo.pipelines.config import PipelineConfig, read_pipeline_config
from calgrpo.pipelines.submit import schedule, submit, validate_cron
from calgrpo.train.config import TrainConfig
from tests.pipelines.fake_kfp import FakeKfp

CONFIG = PipelineConfig(dataset="s3://data/gsm8k.jsonl", dataset_format="gsm8k", rounds=1,
                        train=TrainConfig(learning_rate=2e-6, precision="bf16"))  # fmt: skip


def test_submit_creates_experiment_and_run_with_the_config_and_typed_parameters() -> None:
    with FakeKfp() as kfp_server:
        result = submit(kfp_server.host, "train", "nightly", ['gpu_node_selector={"pool": "h100"}', "gpu_count=2"],
                        run_name="try-1", config=CONFIG)  # fmt: skip
        assert result["run_id"] == "run-1" and result["url"].endswith("/#/runs/details/run-1")
        assert kfp_server.posted("/experiments")[0]["display_name"] == "nightly"
        run = kfp_server.posted("/runs")[0]
        assert run["display_name"] == "try-1" and run["experiment_id"] == "exp-1"
        assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "calgrpo-train"
        executors = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"][
            "executors"
        ]
        assert "tolerations" in executors["exec-rollout"]  # the Kubernetes settings travel with the run
        parameters = run["runtime_config"]["parameters"]
        # The whole config as one JSON parameter, read back by the components' own validation.
        assert read_pipeline_config(parameters["config"]) == CONFIG
        assert parameters["gpu_node_selector"] == {"pool": "h100"} and parameters["gpu_count"] == "2"
        assert run["service_account"] == "calgrpo-pipeline"  # infra/base's, allowed to create TrainJobs


def test_schedule_sends_cron_single_concurrency_and_no_catchup() -> None:
    with FakeKfp() as kfp_server:
        result = schedule(kfp_server.host, "train", "weekly", "0 0 2 * * SUN", "retrain", [], config=CONFIG)
        assert result["recurring_run_id"] == "rr-1"
        recurring = kfp_server.posted("/recurringruns")[0]
        assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 2 * * SUN"
        assert int(recurring["max_concurrency"]) == 1 and recurring["no_catchup"] is True
        assert recurring["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "calgrpo-train"
        assert recurring["service_account"] == "calgrpo-pipeline"
        assert read_pipeline_config(recurring["runtime_config"]["parameters"]["config"]) == CONFIG


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["gpu_tpye=x"], "unknown pipeline parameter 'gpu_tpye'.*Did you mean 'gpu_type'"),
        (["gpu_count"], "expected NAME=VALUE"),
        (["gpu_node_selector=[1]"], "expected a JSON object"),
        (["gpu_node_selector=pool"], "expected a JSON object"),
        (["config={}"], "not a --param: give it as --config FILE or as flags"),
    ],
)
def test_bad_parameters_fail_before_sending(params, message) -> None:
    with FakeKfp() as kfp_server:
        with pytest.raises(ConfigError, match=message):
            submit(kfp_server.host, "train", "x", params, run_name=None, config=CONFIG)
        assert kfp_server.requests == []


@pytest.mark.parametrize(
    "cron", ["0 0 2 * *", "0 0 25 * * *", "61 0 2 * * *", "0 0 2 * * FUNDAY", "0 0 2 * 13 *"]
)
def test_bad_cron_is_explained(cron) -> None:
    with pytest.raises(ConfigError, match="seconds first"):
        validate_cron(cron)


@pytest.mark.parametrize(
    "cron", ["0 0 2 * * *", "0 */15 * * * *", "30 0 9 ? * MON-FRI", "0 0 0 1,15 JAN-JUN ?"]
)
def test_good_cron_passes(cron) -> None:
    validate_cron(cron)


def test_unreachable_host_is_one_clear_line() -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(CalgrpoError, match=f"cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}"):
        submit(f"http://127.0.0.1:{port}", "train", "x", [], run_name=None, config=CONFIG)


def test_cli_schedule_and_bad_cron_exit_codes() -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "400"}
    with FakeKfp() as kfp_server:
        ok = subprocess.run([sys.executable, "-m", "calgrpo.cli", "pipeline", "schedule", "--host", kfp_server.host,
                             "--cron", "0 0 2 * * *", "--dataset", "s3://d/x.jsonl", "--rounds", "1"],
                            capture_output=True, text=True, timeout=300, check=False, env=env)  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["recurring_run_id"] == "rr-1"
        bad = subprocess.run([sys.executable, "-m", "calgrpo.cli", "pipeline", "schedule", "--host", kfp_server.host,
                              "--cron", "0 2 * * *"],
                             capture_output=True, text=True, timeout=300, check=False, env=env)  # fmt: skip
        assert bad.returncode == 2 and "seconds first" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def test_submit_with_a_bad_config_file_fails_at_the_terminal_naming_the_field(tmp_path) -> None:
    """Nothing is compiled or sent: the same dataclasses that the components use refuse it here."""
    import os
    import subprocess
    import sys

    with FakeKfp() as kfp_server:
        for text, field in (("train: {learning_rat: 1.0e-6}\n", "train.learning_rat"),
                            ("rollout: {group_size: 1}\n", "group-size"),
                            ("train: {learning_rate: -1}\n", "learning_rate")):  # fmt: skip
            (tmp_path / "bad.yaml").write_text(text)
            bad = subprocess.run([sys.executable, "-m", "calgrpo.cli", "pipeline", "submit", "--host", kfp_server.host,
                                  "--config", str(tmp_path / "bad.yaml")],
                                 capture_output=True, text=True, timeout=300, check=False,
                                 env={**os.environ, "COLUMNS": "400"})  # fmt: skip
            assert bad.returncode == 2 and field in bad.stderr, bad.stderr
            assert len(bad.stderr.strip().splitlines()) == 1
        assert kfp_server.requests == []
