"""The calgrpo command: help, exit codes, JSON output (run as a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _calgrpo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "calgrpo.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "400"},  # keep tyro's error boxes on one line
    )


def test_cli_help_lists_subcommands() -> None:
    result = _calgrpo("--help")
    assert result.returncode == 0
    assert "check-estimator" in result.stdout


def test_cli_check_estimator_json_passes() -> None:
    result = _calgrpo("check-estimator", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True
    assert report["v_at_k"] == pytest.approx(0.755177, abs=5e-7)
    by_method = {row["method"]: row for row in report["methods"]}
    assert by_method["cal"]["relative_error"] < 1e-10
    assert by_method["naive"]["relative_error"] > 1.0


def test_cli_unknown_method_is_a_usage_error() -> None:
    result = _calgrpo("check-estimator", "--methods", "cal", "naiv")
    assert result.returncode == 2
    assert "Did you mean 'naive'" in result.stderr


def test_cli_out_of_range_option_is_a_usage_error() -> None:
    result = _calgrpo("check-estimator", "--group-size", "9")
    assert result.returncode == 2
    assert "--group-size must be in 2..4" in result.stderr + result.stdout


def test_cli_check_estimator_fails_when_tolerance_is_impossible() -> None:
    result = _calgrpo("check-estimator", "--methods", "cal", "--tolerance", "1e-30")
    assert result.returncode == 1
    assert "FAILED" in result.stdout


def test_python_dash_m_calgrpo_is_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "calgrpo", "check-estimator", "--json"], capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["passed"] is True
