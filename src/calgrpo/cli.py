"""The ``calgrpo`` command: one subcommand per job, help generated from the config dataclasses.

Only dataclasses, tyro and the light error module are imported at the top so that ``--help`` stays
fast; each handler imports torch and the library after parsing. Results go to stdout (``--json``
for machines), logs to stderr. Exit codes: 0 success, 1 runtime failure, 2 usage error.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tyro

from calgrpo.errors import CalgrpoError, ConfigError, UnknownNameError

log = logging.getLogger("calgrpo")

ALL_METHODS = ("cal", "trajectory", "naive", "single", "cal_inclusive", "cal_singleton_zero")


@dataclass(frozen=True)
class CheckEstimatorConfig:
    """Prove the advantage estimators exact on DESIGN's tabular toy (z in {0,1,2}, K = 3).

    Enumerates every ordered group of G trajectories for each hidden z, takes the exact expectation
    of each method's gradient estimate, and compares it with the true gradient of V@3. Methods
    registered as unbiased must match to --tolerance; the others are reported with their bias.
    Exits 1 if an unbiased method is off.
    """

    methods: tuple[str, ...] = ALL_METHODS
    """Advantage methods to check (names in the advantage registry)."""
    group_size: int = 3
    """G, trajectories per group; all 15^G groups per z are enumerated, so 2..4."""
    tolerance: float = 1e-10
    """Largest relative error ||E[g_hat] - grad|| / ||grad|| accepted for an unbiased method."""
    json: bool = False
    """Print the result as one JSON object on stdout instead of a table."""
    debug: bool = False
    """Show tracebacks and debug logs."""

    def __post_init__(self) -> None:
        if not 2 <= self.group_size <= 4:
            raise ConfigError(
                f"--group-size must be in 2..4 (15^G groups are enumerated), got {self.group_size}"
            )
        if not self.tolerance > 0:
            raise ConfigError(f"--tolerance must be > 0, got {self.tolerance}")
        if not self.methods:
            raise ConfigError("--methods needs at least one method name")


def run_check_estimator(config: CheckEstimatorConfig) -> int:
    """Handler of ``calgrpo check-estimator``; returns the exit code."""
    from calgrpo.algorithms import ADVANTAGE_METHODS
    from calgrpo.toys.guessing import design_exact_check_toy
    from calgrpo.toys.tables import (
        cosine,
        exact_estimator_moments,
        relative_error,
        success_probability,
        true_gradient,
    )

    specs = [ADVANTAGE_METHODS.get(name) for name in config.methods]  # unknown names fail before work
    toy = design_exact_check_toy()
    truth = true_gradient(toy)
    rows = []
    for spec in specs:
        moments = exact_estimator_moments(toy, config.group_size, spec.name)
        error = relative_error(moments.mean, truth)
        ok = error <= config.tolerance if spec.unbiased else True
        rows.append(
            {
                "method": spec.name,
                "registered_unbiased": spec.unbiased,
                "relative_error": error,
                "cosine": cosine(moments.mean, truth),
                "total_variance": moments.total_variance,
                "ok": ok,
            }
        )
    result = {
        "toy": toy.name,
        "group_size": config.group_size,
        "v_at_k": success_probability(toy),
        "grad_norm": float(truth.norm()),
        "methods": rows,
        "passed": all(r["ok"] for r in rows),
    }
    if config.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"toy {result['toy']}: V@3 = {result['v_at_k']:.6f}, ||grad|| = {result['grad_norm']:.6f}, "
            f"G = {config.group_size} (every group enumerated)"
        )
        print(f"{'method':<20}{'unbiased?':>10}{'rel. error':>13}{'cosine':>9}{'variance':>11}  verdict")
        for r in rows:
            verdict = "exact" if r["relative_error"] <= config.tolerance else "biased"
            if not r["ok"]:
                verdict = "FAILED (registered unbiased)"
            print(
                f"{r['method']:<20}{'yes' if r['registered_unbiased'] else 'no':>10}"
                f"{r['relative_error']:>13.3e}{r['cosine']:>9.4f}{r['total_variance']:>11.5f}  {verdict}"
            )
    return 0 if result["passed"] else 1


COMMANDS: dict[str, tuple[type, Callable[[Any], int]]] = {
    "check-estimator": (CheckEstimatorConfig, run_check_estimator),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``calgrpo`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        config = tyro.extras.subcommand_cli_from_dict(
            {name: cls for name, (cls, _) in COMMANDS.items()}, prog="calgrpo", args=argv
        )
        handler = next(h for cls, h in COMMANDS.values() if isinstance(config, cls))
        return handler(config)
    except (ConfigError, UnknownNameError) as error:
        print(f"calgrpo: error: {error}", file=sys.stderr)
        return 2
    except CalgrpoError as error:
        if debug:
            raise
        print(f"calgrpo: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
