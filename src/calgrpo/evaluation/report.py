"""What an evaluation's reports say: tables, the significance sentence, the run's identity, and
report.md. report.html (calgrpo.evaluation.report_html) shows the same tables and numbers.

Every number of a table cell is taken from metrics.json at a path the cell records (``Cell.source``),
so a reader (or the browser test) can check each shown value against the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENERIC_FOLDER_NAMES = frozenset(
    {"model", "new_model", "final", "candidate", "baseline", "output", "eval.parquet", "problems.parquet"}
)


@dataclass(frozen=True)
class Cell:
    """A table cell: its text and, for a number, where in metrics.json the number comes from."""

    text: str
    source: str | None = None
    """Dotted path into metrics.json (list indices as numbers), e.g. ``candidate.v@k.mean.2``."""


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[Cell]]
    note: str = ""


def model_title(uri: str) -> str:
    """A readable name for a model URI: a hub id as it is, a file or folder by its last parts
    (``runs/guess/model`` -> ``guess/model``), never a whole temporary path."""
    text = uri.rstrip("/")
    if "://" not in text and not text.startswith(("/", ".")) and text.count("/") == 1:
        return text  # a hub id, ID@REVISION included
    parts = [part for part in text.replace("\\", "/").split("/") if part]
    if not parts:
        return uri
    name = parts[-1]
    if name in GENERIC_FOLDER_NAMES and len(parts) > 1:
        name = f"{parts[-2]}/{name}"
    return name


def lookup(metrics: dict[str, Any], source: str) -> Any:
    """The value at a dotted ``source`` path of metrics.json."""
    value: Any = metrics
    for part in source.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _interval_cells(
    metrics: dict[str, Any], path: str, num_attempts: int, signed: bool = False
) -> list[Cell]:
    curve = lookup(metrics, path)
    spec = "+.3f" if signed else ".3f"
    return [
        Cell(
            f"{curve['mean'][i]:{spec}} [{curve['low'][i]:{spec}}, {curve['high'][i]:{spec}}]",
            f"{path}.mean.{i}",
        )
        for i in range(num_attempts)
    ]


DETAILS = (
    ("first_attempt_accuracy", "First-attempt accuracy", "share of episodes solved by their first attempt"),
    (
        "success_after_failed_first",
        "Success after a failed first attempt",
        "share of the episodes whose first attempt failed that a later attempt solved",
    ),
    ("attempts_mean", "Attempts used", "mean attempts per episode (an episode stops at its first success)"),
    (
        "tokens_per_solved_problem",
        "Generated tokens per solved episode",
        "completion tokens of all episodes over the number of solved episodes",
    ),
)


def tables(metrics: dict[str, Any]) -> list[Table]:
    """Every table the reports show, in order."""
    num_attempts = metrics["num_attempts"]
    ks = [f"k = {k}" for k in range(1, num_attempts + 1)]
    main = [[Cell("candidate: V@k"), *_interval_cells(metrics, "candidate.v@k", num_attempts)]]
    if metrics.get("baseline"):
        main.append([Cell("baseline: V@k"), *_interval_cells(metrics, "baseline.v@k", num_attempts)])
        main.append([Cell("difference"), *_interval_cells(metrics, "difference", num_attempts, signed=True)])
    out = [
        Table(
            "Verification@k: solved within k attempts with feedback (mean [95% CI])",
            ["", *ks],
            main,
            "Intervals: bootstrap over problems; the difference is paired (same problems, same seed).",
        )
    ]
    for side in ("candidate", "baseline"):
        numbers = metrics.get(side) or {}
        if "pass@k" in numbers:
            rows = [
                [
                    Cell("V@k (k attempts with feedback)"),
                    *_interval_cells(metrics, f"{side}.v@k", num_attempts),
                ],
                [
                    Cell("pass@k (k independent attempts)"),
                    *_interval_cells(metrics, f"{side}.pass@k", num_attempts),
                ],
                [
                    Cell("V@k - pass@k"),
                    *_interval_cells(metrics, f"{side}.feedback_gain", num_attempts, True),
                ],
            ]
            out.append(
                Table(
                    f"{side.capitalize()}: feedback or resampling?",
                    ["", *ks],
                    rows,
                    f"pass@k: unbiased estimate from {numbers['independent_samples']} independent "
                    "first attempts per problem; the difference is paired per problem.",
                )
            )
    slices = metrics["candidate"].get("slices") or {}
    if slices:
        rows = [
            [
                Cell(f"{name} ({s['problems']} problems)"),
                *_interval_cells(metrics, f"candidate.slices.{name}.v@k", num_attempts),
            ]
            for name, s in slices.items()
        ]
        out.append(Table("Candidate V@k by slice", ["", *ks], rows))
    detail_rows = []
    for key, name, meaning in DETAILS:
        row = [Cell(name), Cell(f"{metrics['candidate'][key]:.3f}", f"candidate.{key}")]
        if metrics.get("baseline"):
            row.append(Cell(f"{metrics['baseline'][key]:.3f}", f"baseline.{key}"))
        detail_rows.append([*row, Cell(meaning)])
    header = ["", "candidate", *(["baseline"] if metrics.get("baseline") else []), "meaning"]
    out.append(Table("Episodes in detail", header, detail_rows))
    if "spend" in metrics["candidate"]:
        out.append(_spend_table(metrics, ks))
    return out


def _spend_table(metrics: dict[str, Any], ks: list[str]) -> Table:
    """What each attempt budget costs, and the cost-aware score J@k at the evaluated cost levels."""
    rows = []
    for side in ("candidate", "baseline"):
        numbers = metrics.get(side) or {}
        if "spend" not in numbers:
            continue
        for key, name, spec in (("attempts", "attempts used", ".3f"), ("tokens", "completion tokens", ".1f")):
            values = numbers["spend"][key]
            cells = [Cell(f"{v:{spec}}", f"{side}.spend.{key}.{i}") for i, v in enumerate(values)]
            rows.append([Cell(f"{side}: {name}"), *cells])
        for level, score in enumerate(numbers.get("cost_aware", [])):
            name = f"{side}: J@k, {score['per_attempt']:g} per attempt"
            if score["per_token"]:
                name += f" + {score['per_token']:g} per token"
            rows.append([Cell(name), *[Cell(f"{v:+.3f}", f"{side}.cost_aware.{level}.j@k.{i}")
                                       for i, v in enumerate(score["j@k"])]])  # fmt: skip
    note = (
        "Per episode, cut at k attempts (it stops at its first success), averaged per problem then over "
        "problems; J@k = V@k - cost x attempts - token cost x tokens: is attempt k worth its price?"
    )
    return Table("Spend by attempt budget, and the cost-aware score", ["", *ks], rows, note)


def significance(metrics: dict[str, Any]) -> str | None:
    """A plain sentence on the paired difference at K against the promotion margin (None without a
    baseline); the rule is promotion's: the lower 95% bound must exceed the margin."""
    if not metrics.get("difference"):
        return None
    k, margin = metrics["num_attempts"], float(metrics.get("margin") or 0.0)
    difference = metrics["difference"]
    mean, low, high = difference["mean"][-1], difference["low"][-1], difference["high"][-1]
    said = (
        f"At k = {k} the candidate's V@{k} differs from the baseline's by {mean:+.3f} "
        f"(95% CI [{low:+.3f}, {high:+.3f}])."
    )
    if low > margin:
        return f"{said} The whole interval lies above the promotion margin {margin:+.3f}: a significant gain."
    if high < 0:
        return f"{said} The whole interval lies below zero: the candidate is significantly worse."
    return (
        f"{said} The interval reaches down to the promotion margin {margin:+.3f} or below: "
        "no significant gain at that margin."
    )


def identity(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) pairs saying what was evaluated: models, data, settings, code."""
    candidate = metrics["candidate"]
    pairs = [
        ("candidate", metrics.get("candidate_name") or model_title(metrics["candidate_model"])),
        ("candidate content sha256", metrics.get("candidate_fingerprint") or "(not a folder)"),
    ]
    if metrics.get("baseline_model"):  # names, not the paths of the machine that ran it
        baseline = model_title(metrics["baseline_model"])
        if metrics.get("baseline_fingerprint"):
            baseline += f" (content {metrics['baseline_fingerprint'][:12]})"
        pairs.append(("baseline", baseline))
    if metrics.get("base_model"):
        pairs.append(("trained from", metrics["base_model"]))
    if metrics.get("training_rounds"):
        pairs.append(("training rounds", str(metrics["training_rounds"])))
    pairs += [
        ("problems", f"{candidate['problems']} from {model_title(metrics.get('problems_source') or '?')}"),
        ("problems content sha256", metrics.get("problems_sha256") or "?"),
        (
            "episodes",
            f"{candidate['episodes_per_problem']} per problem, up to K = {metrics['num_attempts']} "
            "attempts each",
        ),
        ("seed", str(metrics["seed"])),
        ("calgrpo", metrics.get("code_version") or "?"),
    ]
    return pairs


def title(metrics: dict[str, Any]) -> str:
    name = metrics.get("candidate_name") or model_title(metrics["candidate_model"])
    fingerprint = metrics.get("candidate_fingerprint")
    return f"Evaluation of {name}" + (f" (content {fingerprint[:12]})" if fingerprint else "")


def headline_markdown(metrics: dict[str, Any]) -> str:
    """The first table and the significance sentence: what the KFP UI shows of an evaluation."""
    main = tables(metrics)[0]
    lines = [f"## {title(metrics)}", "", *_markdown_table(main)]
    sentence = significance(metrics)
    if sentence:
        lines += ["", sentence]
    return "\n".join(lines) + "\n"


def _markdown_table(table: Table) -> list[str]:
    lines = ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(_one_line(cell.text) for cell in row) + " |" for row in table.rows]
    return lines + (["", table.note] if table.note else [])


def training_markdown(history: list[dict[str, Any]], num_attempts: int) -> str:
    """A row per training round: the rollout's V@K, loss, KL, entropy, clip fraction, tokens/s."""
    columns = (
        ("rollout/v@k", f"rollout V@{num_attempts}", ".3f"),
        ("train/loss", "loss", "+.4f"),
        ("train/kl", "KL", ".4f"),
        ("train/entropy", "entropy", ".3f"),
        ("train/clip_fraction", "clip fraction", ".3f"),
        ("train/tokens_per_s", "tokens/s", ".0f"),
        (f"eval/v@{num_attempts}", f"eval V@{num_attempts}", ".3f"),
    )
    columns = tuple(c for c in columns if any(isinstance(row.get(c[0]), int | float) for row in history))
    lines = [
        "| round | " + " | ".join(name for _, name, _ in columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for row in history:
        cells = [
            format(row[key], spec) if isinstance(row.get(key), int | float) else ""
            for key, _, spec in columns
        ]
        lines.append(f"| {row.get('round', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(
    metrics: dict[str, Any],
    path: Path,
    examples: list[dict[str, Any]] = (),
    history: list[dict[str, Any]] = (),
) -> None:
    lines = [f"# {title(metrics)}", ""]
    sentence = significance(metrics)
    if sentence:
        lines += [sentence, ""]
    for table in tables(metrics):
        lines += [f"## {table.title}", "", *_markdown_table(table), ""]
    lines.append(
        "V@k is the share of episodes solved within k sequential attempts with feedback; it is not pass@k."
    )
    if any("train/loss" in row for row in history):
        lines += ["", "## Training by round", "", training_markdown(history, metrics["num_attempts"])]
    lines += ["", "## What was evaluated", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {_one_line(value)} |" for name, value in identity(metrics)]
    if examples:
        lines += ["", "## Transcripts (a few; all of them are in transcripts.parquet)", ""]
    for episode in examples:
        lines += [f"### {episode['problem_id']}", "", _fenced(episode["prompt"]), ""]
        for attempt in episode["attempts"]:
            lines += [
                f"Attempt {attempt['attempt']} ({attempt['verdict']}):",
                "",
                _fenced(attempt["completion"]),
            ]
            if attempt["feedback"]:
                lines += ["", f"Feedback: {_one_line(attempt['feedback'])}"]
            lines.append("")
    path.write_text("\n".join(lines) + "\n")


def _fenced(text: str) -> str:
    """Model-written text as a code block it cannot close early."""
    return "~~~~text\n" + text.replace("~~~~", "~ ~ ~ ~") + "\n~~~~"


def _one_line(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")
