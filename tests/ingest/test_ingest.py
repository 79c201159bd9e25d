"""`calgrpo ingest`: real GSM8K from disk and from the embedded S3, and every malformed input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from calgrpo.errors import InvalidInputError
from calgrpo.ingest.pipeline import IngestConfig, ValidationFailed, ingest
from calgrpo.manifest import is_complete
from calgrpo.storage import fetch_folder, upload_file

GSM8K = Path(__file__).resolve().parents[1] / "data" / "gsm8k"  # shipped in the repository


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _problem(task="gsm8k", prompt="What is 2+2?", answer="2+2=4\n#### 4", **extra) -> dict:
    return {"task": task, "prompt": prompt, "answer": answer, **extra}


def test_gsm8k_split_from_local_disk(tmp_path, split="test") -> None:
    expected = 1319
    card = ingest(
        IngestConfig(
            format="gsm8k",
            input=str(GSM8K / f"{split}.jsonl"),
            output=str(tmp_path / "out"),
            eval_fraction=0.1,
        )
    )
    assert card["records_read"] == expected and card["published"] + card["duplicates_dropped"] == expected
    assert is_complete(tmp_path / "out")
    frame = pd.read_parquet(tmp_path / "out" / "problems.parquet")
    assert len(frame) == card["published"] and frame["id"].is_unique
    assert set(frame["task"]) == {"gsm8k"}
    train, evaluation = (pd.read_parquet(tmp_path / "out" / f"{s}.parquet") for s in ("train", "eval"))
    assert len(train) + len(evaluation) == len(frame)
    assert 0.07 < len(evaluation) / len(frame) < 0.13
    assert (
        json.loads((tmp_path / "out" / "dataset_card.json").read_text())["content_hash"]
        == card["content_hash"]
    )


def test_gsm8k_from_and_to_the_embedded_s3(s3_env, tmp_path, split="test") -> None:
    upload_file(GSM8K / f"{split}.jsonl", f"{s3_env}/raw/{split}.jsonl")
    card = ingest(
        IngestConfig(format="gsm8k", input=f"{s3_env}/raw/{split}.jsonl", output=f"{s3_env}/datasets/gsm8k")
    )
    local = fetch_folder(f"{s3_env}/datasets/gsm8k", tmp_path / "fetched")
    assert (
        len(pd.read_parquet(local / "problems.parquet"))
        == card["published"]
        == 1319
    )
    again = ingest(
        IngestConfig(format="gsm8k", input=str(GSM8K / f"{split}.jsonl"), output=str(tmp_path / "local"))
    )
    assert again["content_hash"] == card["content_hash"]  # same data, same ids, same hash


def test_dedupe_ids_and_deterministic_split(tmp_path) -> None:
    rows = [_problem(prompt="What is 2+2?"), _problem(prompt="  what IS 2+2? "), _problem(prompt="What is 3+3?",
            answer="#### 6")]  # fmt: skip
    source = _jsonl(tmp_path / "in.jsonl", rows)
    first = ingest(IngestConfig(format="jsonl", input=source, output=str(tmp_path / "a"), eval_fraction=0.5))
    second = ingest(IngestConfig(format="jsonl", input=source, output=str(tmp_path / "b"), eval_fraction=0.5))
    assert second["content_hash"] == first["content_hash"]
    assert first["duplicates_dropped"] == 1 and first["published"] == 2
    a, b = (pd.read_parquet(tmp_path / x / "problems.parquet") for x in ("a", "b"))
    assert a[["id", "split"]].equals(b[["id", "split"]])
    assert all(i.startswith("gsm8k-") for i in a["id"])


def _refused(tmp_path, fmt: str, source: str, match: str, error=ValidationFailed) -> None:
    with pytest.raises(error, match=match):
        ingest(IngestConfig(format=fmt, input=source, output=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()  # nothing published


def test_missing_columns(tmp_path) -> None:
    _refused(
        tmp_path,
        "jsonl",
        _jsonl(tmp_path / "in.jsonl", [{"task": "gsm8k", "prompt": "q"}]),
        r"record 1 lacks \['answer'\]",
        InvalidInputError,
    )


def test_nulls(tmp_path) -> None:
    _refused(
        tmp_path,
        "jsonl",
        _jsonl(tmp_path / "in.jsonl", [_problem(), _problem(prompt=None)]),
        r"expect_column_values_to_not_be_null on column 'prompt'",
    )


def test_duplicate_ids(tmp_path) -> None:
    rows = [_problem(id="p1"), _problem(id="p1", prompt="Another question?", answer="#### 1")]
    _refused(
        tmp_path,
        "jsonl",
        _jsonl(tmp_path / "in.jsonl", rows),
        r"expect_column_values_to_be_unique on column 'id'",
    )


def test_non_utf8_bytes(tmp_path) -> None:
    (tmp_path / "in.jsonl").write_bytes(
        json.dumps(_problem()).encode() + b"\n" + b'{"task": "gsm8k", "prompt": "\xff\xfe"}\n'
    )
    _refused(
        tmp_path, "jsonl", str(tmp_path / "in.jsonl"), "line 2: bytes that are not UTF-8", InvalidInputError
    )


def test_truncated_jsonl_line(tmp_path) -> None:
    (tmp_path / "in.jsonl").write_text(json.dumps(_problem()) + "\n" + json.dumps(_problem())[:25] + "\n")
    _refused(tmp_path, "jsonl", str(tmp_path / "in.jsonl"), "line 2: not valid JSON", InvalidInputError)


def test_empty_file(tmp_path) -> None:
    (tmp_path / "in.jsonl").write_text("\n")
    _refused(tmp_path, "jsonl", str(tmp_path / "in.jsonl"), "in.jsonl is empty", InvalidInputError)


def test_wrong_format_flag(tmp_path) -> None:
    _refused(
        tmp_path,
        "humaneval",
        str(GSM8K / "test.jsonl"),
        r"required by --format humaneval .* is the format right",
        InvalidInputError,
    )


def test_code_that_does_not_compile(tmp_path) -> None:
    rows = [{"task_id": "t/1", "prompt": "def f(x):\n", "canonical_solution": "    return x\n",
             "test": "def check(candidate):\n    assert candidate(1) == 1\n", "entry_point": "f"},
            {"task_id": "t/2", "prompt": "def g(x):\n", "canonical_solution": "    return x\n",
             "test": "def check(candidate)\n    assert candidate(1) == 1\n", "entry_point": "g"}]  # fmt: skip
    _refused(
        tmp_path,
        "humaneval",
        _jsonl(tmp_path / "in.jsonl", rows),
        r"expect_column_values_to_be_in_set on column 'tests_compile'.*\n.*SyntaxError line 1",
    )


def test_gsm8k_answer_without_marker(tmp_path) -> None:
    rows = [{"question": "2+2?", "answer": "#### 4"}, {"question": "3+3?", "answer": "It is six."}]
    _refused(
        tmp_path,
        "gsm8k",
        _jsonl(tmp_path / "in.jsonl", rows),
        r"answer_ok.*\n.*no '#### <number>' in the answer",
    )


def test_wrong_canonical_solution_and_drop_invalid_quarantine(tmp_path) -> None:
    good = {
        "task_id": "t/1",
        "prompt": "def f(x):\n",
        "canonical_solution": "    return x * 2\n",
        "test": "def check(candidate):\n    assert candidate(2) == 4\n",
        "entry_point": "f",
    }
    bad = {
        **good,
        "task_id": "t/2",
        "prompt": "def h(x):\n",
        "entry_point": "h",
        "canonical_solution": "    return x\n",
    }
    mbpp = {"task_id": 3, "text": "Write a function add(a, b).", "code": "def add(a, b):\n    return a + b\n",
            "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}  # fmt: skip
    source = _jsonl(tmp_path / "in.jsonl", [good, bad])
    _refused(tmp_path, "humaneval", source, "canonical solution fails its tests")
    card = ingest(
        IngestConfig(format="humaneval", input=source, output=str(tmp_path / "kept"), drop_invalid=True)
    )
    assert (card["published"], card["quarantined"], card["records_read"]) == (1, 1, 2)
    quarantine = pd.read_parquet(tmp_path / "kept" / "quarantine.parquet")
    assert json.loads(quarantine.loc[0, "reasons"]) == ["expect_column_values_to_be_in_set(canonical)"]
    assert "FAILED" in (tmp_path / "kept" / "validation.txt").read_text()
    mbpp_card = ingest(
        IngestConfig(format="mbpp", input=_jsonl(tmp_path / "m.jsonl", [mbpp]), output=str(tmp_path / "m"))
    )
    assert mbpp_card["published"] == 1


def test_math_answers_must_parse(tmp_path) -> None:
    rows = [{"problem": "Half of one?", "solution": "It is $\\boxed{\\frac{1}{2}}$."},
            {"problem": "Nothing?", "solution": "no boxed answer here"}]  # fmt: skip
    _refused(tmp_path, "math", _jsonl(tmp_path / "in.jsonl", rows), "math-verify cannot parse the answer")
    card = ingest(
        IngestConfig(
            format="math", input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "ok"), drop_invalid=True
        )
    )
    frame = pd.read_parquet(tmp_path / "ok" / "problems.parquet")
    assert card["published"] == 1 and frame.loc[0, "answer"] == "\\frac{1}{2}"


def test_ingest_cli_exit_codes(tmp_path) -> None:
    import os
    import subprocess
    import sys

    rows = [{"question": "2+2?", "answer": "4"}]
    source = _jsonl(tmp_path / "in.jsonl", rows)
    result = subprocess.run([sys.executable, "-m", "calgrpo.cli", "ingest", "--format", "gsm8k", "--input", source,
                             "--output", str(tmp_path / "out"), "--report", str(tmp_path / "report.txt")],
                            capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "COLUMNS": "400"})  # fmt: skip
    assert result.returncode == 1
    assert "validation FAILED" in result.stderr and "nothing was published" in result.stderr
    assert "answer_ok" in (tmp_path / "report.txt").read_text()
    assert not (tmp_path / "out").exists()


def _failed_report(tmp_path, fmt: str, source: str):
    with pytest.raises(ValidationFailed) as raised:
        ingest(IngestConfig(format=fmt, input=source, output=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()  # nothing published
    return raised.value.report


@pytest.mark.parametrize(
    "gold",
    ["1" + "0" * 400, "1" + "0" * 400 + "/3", "9" * 65, "1/0", "-" + "1," * 40 + "1"],
    ids=["400 zeros", "huge fraction", "65 digits", "division by zero", "long with commas"],
)
def test_gsm8k_unbounded_gold_is_refused_by_a_named_expectation(tmp_path, gold) -> None:
    # The verifier turned such golds into inf, and then every attempt verified correct.
    rows = [{"question": "2+2?", "answer": "#### 4"}, {"question": "Big?", "answer": f"work\n#### {gold}"}]
    source = _jsonl(tmp_path / "in.jsonl", rows)
    report = _failed_report(tmp_path, "gsm8k", source)
    assert [(f["suite"], f["column"]) for f in report.failures] == [("gsm8k", "gold_bounded")]
    assert report.bad_rows == {1: ["expect_column_values_to_be_in_set(gold_bounded)"]}
    assert "gold answer is not a finite number of at most 64 characters" in report.to_text()
    card = ingest(
        IngestConfig(format="gsm8k", input=source, output=str(tmp_path / "kept"), drop_invalid=True)
    )
    assert (card["published"], card["quarantined"]) == (1, 1)


@pytest.mark.parametrize("gold", ["1e400", "inf", "nan", "12 apples"])
def test_gsm8k_gold_that_is_not_a_plain_number_fails_answer_ok(tmp_path, gold) -> None:
    rows = [{"question": "2+2?", "answer": "#### 4"}, {"question": "Big?", "answer": f"#### {gold}"}]
    report = _failed_report(tmp_path, "gsm8k", _jsonl(tmp_path / "in.jsonl", rows))
    assert [f["column"] for f in report.failures] == ["answer_ok"]  # gold_bounded is n/a, not a 2nd reason


def test_whitespace_only_prompt_is_refused_and_quarantined(tmp_path) -> None:
    rows = [
        _problem(),
        _problem(prompt=" \n\t  ", answer="#### 5"),
        _problem(prompt="\u200b\ufeff ", answer="#### 6"),
    ]
    source = _jsonl(tmp_path / "in.jsonl", rows)
    report = _failed_report(tmp_path, "jsonl", source)
    assert [(f["expectation"], f["column"], f["unexpected_count"]) for f in report.failures] == [
        ("expect_column_values_to_match_regex", "prompt", 2)
    ]
    assert "expect_column_values_to_match_regex on column 'prompt' (2 rows)" in report.to_text()
    card = ingest(
        IngestConfig(format="jsonl", input=source, output=str(tmp_path / "kept"), drop_invalid=True)
    )
    assert (card["published"], card["quarantined"], card["records_read"]) == (1, 2, 3)
    quarantine = pd.read_parquet(tmp_path / "kept" / "quarantine.parquet")
    assert sorted(quarantine["prompt"]) == sorted([" \n\t  ", "\u200b\ufeff "])
    assert {r for reasons in quarantine["reasons"] for r in json.loads(reasons)} == {
        "expect_column_values_to_match_regex(prompt)"
    }


def test_dataset_test_code_runs_in_the_sandbox_not_on_the_host(tmp_path) -> None:
    # The dataset is hostile until checked: its own test code must not touch the host at ingest.
    marker = tmp_path / "dataset-code-ran-here"
    hostile_test = (
        f"try:\n    open({str(marker)!r}, 'w').write('x')\nexcept OSError:\n    pass\n"
        "def check(candidate):\n    assert candidate(2) == 4\n"
    )
    row = {"task_id": "t/1", "prompt": "def f(x):\n", "canonical_solution": "    return x * 2\n",
           "test": hostile_test, "entry_point": "f"}  # fmt: skip
    card = ingest(IngestConfig(format="humaneval", input=_jsonl(tmp_path / "in.jsonl", [row]),
                               output=str(tmp_path / "out")))  # fmt: skip
    assert card["published"] == 1  # the write failed inside the jail; the tests themselves still passed
    assert not marker.exists()


def test_mbpp_tests_that_call_no_solution_function_are_refused(tmp_path) -> None:
    rows = [{"task_id": 1, "text": "Write add(a, b).", "code": "def add(a, b):\n    return a + b\n",
             "test_list": ["assert 1 + 2 == 3", "assert len('ab') == 2"]}]  # fmt: skip
    _refused(
        tmp_path, "mbpp", _jsonl(tmp_path / "in.jsonl", rows), r"tests_shape.*\n.*call no function of the solution"
    )


def test_a_task_that_is_not_a_name_is_refused_not_a_crash(tmp_path) -> None:
    rows = [_problem(task=["gsm8k"]), _problem(task={"a": 1}, prompt="q2"), _problem(task=5, prompt="q3"),
            _problem(prompt="q4")]  # fmt: skip
    _refused(tmp_path, "jsonl", _jsonl(tmp_path / "in.jsonl", rows), r"column 'task' \(3 rows\)")


def test_meta_that_is_not_an_object_is_refused_with_the_record(tmp_path) -> None:
    for meta, shown in (([1, 2], "got list"), ("{bad", "got str '{bad'"), ("[1]", r"got str '\[1\]'")):
        rows = [_problem(), _problem(prompt="q2", meta=meta)]
        _refused(tmp_path, "jsonl", _jsonl(tmp_path / "in.jsonl", rows), f"record 2: meta must be a JSON object.*{shown}",
                 InvalidInputError)  # fmt: skip


def test_a_problems_file_from_elsewhere_with_bad_meta_is_refused(tmp_path) -> None:
    from calgrpo.io import load_problems

    pd.DataFrame({"id": ["a", "b"], "task": ["guess"] * 2, "prompt": ["p", "q"], "answer": ["1", "2"],
                  "tests": ["", ""], "meta": ["{}", "[1]"]}).to_parquet(tmp_path / "p.parquet")  # fmt: skip
    with pytest.raises(InvalidInputError, match=r"p.parquet row 2 \('b'\): meta must be a JSON object, got list"):
        load_problems(tmp_path / "p.parquet")
