"""The report's figures: V@k (and pass@k) against the attempt budget, and training curves by round.

matplotlib's object API (no pyplot): no global state, no GUI backend, a faster import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SIDES = (("candidate", "tab:blue"), ("baseline", "tab:gray"))


def _figure(width: float, height: float, panels: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, panels, i + 1) for i in range(panels)]


def write_curves(metrics: dict[str, Any], path: Path) -> None:
    """V@k with its 95% band for candidate and baseline, and pass@k (dashed) where it was measured;
    the x-axis is the attempt budget k = 1..K (integers only)."""
    fig, (ax,) = _figure(6.4, 4.2)
    num_attempts = len(metrics["candidate"]["v@k"]["mean"])
    ks = list(range(1, num_attempts + 1))
    for side, color in SIDES:
        numbers = metrics.get(side)
        if not numbers:
            continue
        curve = numbers["v@k"]
        ax.plot(ks, curve["mean"], marker="o", color=color, label=f"{side}: V@k (feedback)")
        ax.fill_between(ks, curve["low"], curve["high"], color=color, alpha=0.2)
        if "pass@k" in numbers:
            independent = numbers["pass@k"]["mean"]
            ax.plot(ks, independent, marker="s", linestyle="--", color=color, alpha=0.8,
                    label=f"{side}: pass@k (independent)")  # fmt: skip
    ax.set_xticks(ks)
    _save(fig, ax, path, "attempt budget k", "share of episodes solved (95% CI)", "upper left")


def _save(fig, ax, path: Path, xlabel: str, ylabel: str, legend: str) -> None:
    """Labels, a 0..1 y-axis, a grid and the legend, then the PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_pareto(metrics: dict[str, Any], path: Path) -> bool:
    """V@k against the completion tokens a budget of k attempts spends (the Pareto view of how many
    attempts to allow); False (no file) when the evaluation has no spend numbers."""
    if "spend" not in metrics["candidate"]:
        return False
    fig, (ax,) = _figure(6.4, 4.2)
    for side, color in SIDES:
        numbers = metrics.get(side)
        if not numbers or "spend" not in numbers:
            continue
        tokens, v_at_k = numbers["spend"]["tokens"], numbers["v@k"]["mean"]
        ax.plot(tokens, v_at_k, marker="o", color=color, label=side)
        for k, (x, y) in enumerate(zip(tokens, v_at_k, strict=True), start=1):
            ax.annotate(
                f"k={k}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8, color=color
            )
    _save(fig, ax, path, "completion tokens per episode (budget of k attempts)", "V@k", "lower right")
    return True


TRAINING_SERIES = (
    ("rollout/v@k", "V@K of the round's rollout", 0),
    ("eval/v@K", "V@K on the evaluation set", 0),
    ("train/loss", "loss", 1),
    ("train/entropy", "entropy (nats/token)", 1),
)


def write_training_curves(history: list[dict[str, Any]], num_attempts: int, path: Path) -> bool:
    """Success and optimisation by round from a training run's per-round metrics; False (no file)
    when the history has no training rounds."""
    rounds = [row for row in history if "train/loss" in row]
    if not rounds:
        return False
    fig, axes = _figure(9.6, 3.6, panels=2)
    for key, label, panel in TRAINING_SERIES:
        key = key.replace("@K", f"@{num_attempts}")
        points = [(row["round"], row[key]) for row in history if isinstance(row.get(key), int | float)]
        if points:
            xs, ys = zip(*points, strict=True)
            axes[panel].plot(xs, ys, marker="." if len(xs) > 20 else "o", label=label)
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("share solved")
    axes[1].set_ylabel("value")
    for ax in axes:
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True
