"""report.html: one self-contained page (styles inline, figures as data: URIs, no script, no external
asset), readable offline and in the Kubeflow UI's HTML viewer. Every piece of model-written or
user-given text is escaped."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from calgrpo.evaluation.report import Table, identity, significance, tables, title, training_markdown

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
.subtitle { color: #59636e; margin-top: 0; }
.verdict { padding: 0.7em 1em; border-radius: 6px; background: #f6f8fa; border-left: 4px solid #59636e; }
.verdict.gain { border-left-color: #1a7f37; background: #dafbe1; }
.verdict.worse { border-left-color: #cf222e; background: #ffebe9; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.35em 0.7em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.number { font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { color: #59636e; font-size: 0.85em; }
img { max-width: 100%; height: auto; border: 1px solid #d0d7de; border-radius: 6px; }
pre { background: #f6f8fa; padding: 0.6em; border-radius: 6px; white-space: pre-wrap; word-break: break-word;
      font-size: 0.85em; }
.attempt { margin-left: 1em; }
.correct { color: #1a7f37; font-weight: 600; }
.wrong { color: #cf222e; font-weight: 600; }
"""


def _table(table: Table) -> str:
    parts = [f"<h2>{html.escape(table.title)}</h2><table><thead><tr>"]
    parts += [f"<th>{html.escape(h)}</th>" for h in table.header]
    parts.append("</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for cell in row:
            if cell.source is None:
                cells.append(f"<td>{html.escape(cell.text)}</td>")
            else:
                cells.append(
                    f"<td class='number' data-source='{html.escape(cell.source, quote=True)}'>"
                    f"{html.escape(cell.text)}</td>"
                )
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    if table.note:
        parts.append(f"<p class='note'>{html.escape(table.note)}</p>")
    return "".join(parts)


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'/>"


def _markdown_table_html(text: str) -> str:
    """The per-round table (built as Markdown for report.md and the KFP UI) as HTML."""
    lines = [line for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    head, body = rows[0], rows[1:]
    out = ["<table><thead><tr>", *(f"<th>{html.escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in body:
        out.append("<tr>" + "".join(f"<td class='number'>{html.escape(c)}</td>" for c in row) + "</tr>")
    return "".join(out) + "</tbody></table>"


def write_html(
    metrics: dict[str, Any],
    path: Path,
    curves: Path,
    examples: list[dict[str, Any]] = (),
    history: list[dict[str, Any]] = (),
    training_plot: Path | None = None,
    pareto: Path | None = None,
) -> None:
    candidate = metrics["candidate"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title(metrics))}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title(metrics))}</h1>",
        f"<p class='subtitle'>{candidate['problems']} problems x {candidate['episodes_per_problem']} "
        f"episodes of up to K = {metrics['num_attempts']} attempts with verifier feedback, seed "
        f"{metrics['seed']}.</p>",
    ]
    sentence = significance(metrics)
    if sentence:
        kind = (
            "gain"
            if "significant gain" in sentence and "no significant" not in sentence
            else ("worse" if "significantly worse" in sentence else "")
        )
        parts.append(f"<p class='verdict {kind}' id='significance'>{html.escape(sentence)}</p>")
    parts.append("<h2>V@k against the attempt budget</h2>" + _image(curves, "V@k curves"))
    if pareto is not None:
        parts.append("<h2>V@k against tokens spent</h2>" + _image(pareto, "V@k against tokens"))
    parts += [_table(table) for table in tables(metrics)]
    parts.append(
        "<p class='note'>V@k is the share of episodes solved within k sequential attempts with "
        "feedback; it is not pass@k, which samples k attempts independently.</p>"
    )
    if training_plot is not None:
        parts.append("<h2>Training</h2>" + _image(training_plot, "training curves"))
        parts.append(_markdown_table_html(training_markdown(history, metrics["num_attempts"])))
    parts.append("<h2>What was evaluated</h2><table><tbody>")
    parts += [
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in identity(metrics)
    ]
    parts.append("</tbody></table>")
    config = json.dumps(metrics.get("config", {}), indent=1, sort_keys=True)
    parts.append(
        f"<details><summary>Resolved configuration</summary><pre>{html.escape(config)}</pre></details>"
    )
    if examples:
        parts.append("<h2>Transcripts (a few; all of them are in transcripts.parquet)</h2>")
    for episode in examples:
        parts.append(
            f"<h3>{html.escape(episode['problem_id'])}</h3><pre>{html.escape(episode['prompt'])}</pre>"
        )
        for attempt in episode["attempts"]:
            verdict = html.escape(attempt["verdict"])
            css = "correct" if attempt.get("reward", 0) > 0 else "wrong"
            parts.append(
                f"<div class='attempt'><p>Attempt {attempt['attempt']}: <span class='{css}'>{verdict}"
                f"</span></p><pre>{html.escape(attempt['completion'])}</pre>"
            )
            if attempt["feedback"]:
                parts.append(f"<p>Feedback: {html.escape(attempt['feedback'])}</p>")
            parts.append("</div>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
