"""report.html in a real browser (issue 18, item 4): headless Chromium (Debian's chromium and
chromium-driver, installed by `make system-deps`) loads it without console errors, every figure
decodes and is visible, and every number in its tables equals metrics.json at the path the cell
names."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from calgrpo.evaluation.report import lookup
from calgrpo.evaluation.stage import EvaluateConfig, evaluate
from calgrpo.learn import LearnConfig, run_learn
from calgrpo.models.config import TinyModelConfig
from calgrpo.rollout.config import RolloutConfig, SamplingParams


def chromium_driver(width: int = 1200, height: int = 900):
    """A headless Chromium under Selenium, with the browser's console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "headless Chromium is needed: install Debian's chromium and chromium-driver (make system-deps)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    if os.geteuid() == 0:  # Chromium refuses to run as root inside its own sandbox
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> Path:
    """A 2-round learn run evaluated against its initial model, with its training history."""
    root = tmp_path_factory.mktemp("report")
    episodes = RolloutConfig(num_attempts=3, group_size=2, sampling=SamplingParams(max_new_tokens=2))
    run = LearnConfig(output=root / "run", rounds=2, prompts_per_round=2, task_options={"num_values": 8},
                      eval_problems=6, rollout=episodes, tiny=TinyModelConfig(hidden_size=32, intermediate_size=64),
                      threads=1, show_progress=False, report_to=("none",))  # fmt: skip
    run_learn(run)
    evaluate(EvaluateConfig(problems=str(root / "run" / "problems" / "eval.parquet"), model=str(root / "run" / "model"),
                            baseline=str(root / "run" / "initial_model"), output=str(root / "eval"), rollout=episodes,
                            training_history=str(root / "run" / "metrics.jsonl"), resamples=200, margin=-0.5,
                            report_to=("none",)))  # fmt: skip
    return root / "eval"


def test_report_loads_cleanly_with_visible_figures_and_the_numbers_of_metrics_json(evaluation) -> None:
    metrics = json.loads((evaluation / "metrics.json").read_text())
    browser = chromium_driver()
    try:
        browser.get((evaluation / "report.html").as_uri())
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        images = browser.execute_script("""return [...document.images].map(img => {
            const box = img.getBoundingClientRect(), style = getComputedStyle(img);
            return {alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
                    shown: box.width > 100 && box.height > 100 && style.visibility === 'visible'
                           && style.display !== 'none'};
        });""")
        cells = browser.execute_script(
            "return [...document.querySelectorAll('td[data-source]')].map(td => [td.dataset.source, td.innerText]);"
        )
        title = browser.title
        heading = browser.find_element("id", "significance").text
    finally:
        browser.quit()
    assert {image["alt"] for image in images} == {"V@k curves", "V@k against tokens", "training curves"}
    for image in images:  # decoded (a broken data: URI has no natural size) and laid out on the page
        assert image["complete"] and image["width"] > 200 and image["height"] > 200 and image["shown"], image
    k = metrics["num_attempts"]
    expected_sources = {
        f"{side}.mean.{i}" for side in ("candidate.v@k", "baseline.v@k", "difference") for i in range(k)
    }
    assert expected_sources <= {source for source, _ in cells}
    for source, text in cells:
        shown = text.split()[0]
        decimals = len(shown.split(".")[1]) if "." in shown else 0  # the rounding the cell shows
        assert float(shown) == pytest.approx(lookup(metrics, source), abs=0.5 * 10**-decimals + 1e-9), (
            source,
            text,
        )
    assert (
        title == f"Evaluation of run/model (content {metrics['candidate_fingerprint'][:12]})"
    )  # not a temp path
    assert f"At k = {k}" in heading and "margin -0.500" in heading


def screenshot(report: Path, image: Path, width: int = 1100) -> None:
    """The whole page of ``report`` as a PNG (docs/evaluation.md's picture of a `make run` report)."""
    browser = chromium_driver(width=width)
    try:
        browser.get(report.resolve().as_uri())
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, min(height, 4000))
        browser.save_screenshot(str(image))
    finally:
        browser.quit()


if __name__ == "__main__":  # python -m tests.evaluation.test_report_browser REPORT.html OUT.png
    import sys

    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
