"""Readable outputs of an evaluation: report.md, report.html and curves.png."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any


def _row(label: str, curve: dict[str, list[float]]) -> list[str]:
    triples = zip(curve["mean"], curve["low"], curve["high"], strict=True)
    return [label] + [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in triples]


def tables(metrics: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table the reports show."""
    num_attempts = len(metrics["candidate"]["v@k"]["mean"])
    header = ["", *[f"V@{k}" for k in range(1, num_attempts + 1)]]
    main = [_row("candidate", metrics["candidate"]["v@k"])]
    if metrics.get("baseline"):
        main.append(_row("baseline", metrics["baseline"]["v@k"]))
        main.append(_row("difference", metrics["difference"]))
    out = [("Verification@k (mean [95% CI], bootstrap over problems)", header, main)]
    for side in ("candidate", "baseline"):
        numbers = metrics.get(side) or {}
        if "pass@k" in numbers:
            out.append((
                f"{side.capitalize()}: feedback or resampling? k attempts with feedback (V@k) against k "
                f"independent attempts (pass@k, from {numbers['independent_samples']} per problem)",
                ["", *[f"k={k}" for k in range(1, num_attempts + 1)]],
                [_row("V@k", numbers["v@k"]), _row("pass@k", numbers["pass@k"]),
                 _row("V@k - pass@k", numbers["feedback_gain"])],
            ))  # fmt: skip
    slices = metrics["candidate"].get("slices") or {}
    if slices:
        out.append(
            (
                "Candidate by slice",
                header,
                [_row(f"{name} ({s['problems']})", s["v@k"]) for name, s in slices.items()],
            )
        )
    keys = (
        "first_attempt_accuracy",
        "success_after_failed_first",
        "attempts_mean",
        "tokens_per_solved_problem",
    )
    other = [[key.replace("_", " "), f"{metrics['candidate'][key]:.3f}"] for key in keys]
    out.append(("Candidate details", ["metric", "value"], other))
    return out


def write_markdown(metrics: dict[str, Any], path: Path, examples: list[dict[str, Any]] = ()) -> None:
    lines = [f"# Evaluation of {metrics['candidate_model']}", ""]
    if metrics.get("baseline_model"):
        lines += [f"Baseline: {metrics['baseline_model']}.", ""]
    candidate = metrics["candidate"]
    lines += [f"{candidate['problems']} problems x {candidate['episodes_per_problem']} episodes, "
              f"K = {metrics['num_attempts']}, seed {metrics['seed']}.", ""]  # fmt: skip
    for title, header, rows in tables(metrics):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines.append(
        "V@k is the share of episodes solved within k sequential attempts with feedback; it is not pass@k."
    )
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
    return " ".join(text.split()).replace("|", "\\|")


def write_plot(metrics: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # not pyplot: no global state, no GUI backend, faster import

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for side, color in (("candidate", "tab:blue"), ("baseline", "tab:gray")):
        if not metrics.get(side):
            continue
        curve = metrics[side]["v@k"]
        ks = list(range(1, len(curve["mean"]) + 1))
        ax.plot(ks, curve["mean"], marker="o", color=color, label=side)
        ax.fill_between(ks, curve["low"], curve["high"], color=color, alpha=0.2)
    ax.set_xlabel("attempt budget k")
    ax.set_ylabel("V@k (95% CI)")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_html(metrics: dict[str, Any], path: Path, plot: Path, examples: list[dict[str, Any]] = ()) -> None:
    parts = ["<html><head><meta charset='utf-8'><title>Evaluation</title></head><body>",
             f"<h1>Evaluation of {html.escape(metrics['candidate_model'])}</h1>"]  # fmt: skip
    for title, header, rows in tables(metrics):
        parts.append(f"<h2>{html.escape(title)}</h2><table border='1' cellpadding='4'><tr>")
        parts += [f"<th>{html.escape(h)}</th>" for h in header]
        parts.append("</tr>")
        for row in rows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        parts.append("</table>")
    image = base64.b64encode(plot.read_bytes()).decode()
    parts.append(f"<h2>Curves</h2><img alt='V@k curves' src='data:image/png;base64,{image}'/>")
    if examples:
        parts.append("<h2>Transcripts (a few; all of them are in transcripts.parquet)</h2>")
    for episode in examples:
        parts.append(
            f"<h3>{html.escape(episode['problem_id'])}</h3><pre>{html.escape(episode['prompt'])}</pre>"
        )
        for attempt in episode["attempts"]:
            parts.append(f"<p>Attempt {attempt['attempt']} ({html.escape(attempt['verdict'])}):</p>"
                         f"<pre>{html.escape(attempt['completion'])}</pre>")  # fmt: skip
            if attempt["feedback"]:
                parts.append(f"<p>Feedback: {html.escape(attempt['feedback'])}</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
