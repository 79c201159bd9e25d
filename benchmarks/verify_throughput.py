"""Verification throughput: code in the sandbox (per isolation level) and math with math-verify.

    python benchmarks/verify_throughput.py            # 400 programs, 2000 math answers
    python benchmarks/verify_throughput.py --quick

Code: small HumanEval-style programs (half correct), verified by the real CodeTask with a pool of
``--workers`` slots; reported per isolation level available here, next to a bare subprocess that
runs program and tests together with no sandbox at all (the cost of isolation). Math: typical
answers (fractions, radicals, intervals, plain numbers) through MathTask's killable worker pool.
Prints one JSON object: verdicts/s and p50/p99 latency of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from calgrpo.sandbox.config import SandboxConfig
from calgrpo.sandbox.isolation import choose_isolation, sandbox_python
from calgrpo.tasks import Problem, get_task

PROMPT = 'def total(values, k):\n    """Return the sum of the k largest values."""\n'
TESTS = (
    "def check(candidate):\n"
    "    assert candidate([1, 5, 3], 2) == 8\n"
    "    assert candidate([4], 1) == 4\n"
    "    assert candidate([2, 2, 2, 9], 3) == 13\n"
)
GOOD = "    return sum(sorted(values)[len(values) - k:])\n"
BAD = "    return sum(sorted(values)[:k])\n"


def math_pairs(num: int) -> list[tuple[str, str]]:
    """Typical (gold, completion) pairs, all different (math-verify caches repeated strings)."""
    pairs = []
    for i in range(num):
        a, b = i + 2, 2 * i + 3
        kind = i % 8
        pairs.append(
            [
                (f"\\frac{{{a}}}{{{b}}}", f"so the answer is $\\boxed{{\\frac{{{2 * a}}}{{{2 * b}}}}}$"),
                (f"{a}\\sqrt{{2}}", f"$\\boxed{{\\sqrt{{{2 * a * a}}}}}$"),
                (f"({a},{b}]", f"$\\boxed{{({a},{b}]}}$"),
                (str(a * b), f"The answer is $\\boxed{{{a * b}}}$."),
                (f"{a}.5", f"$\\boxed{{\\frac{{{2 * a + 1}}}{{2}}}}$"),
                (f"x^2+{a}", f"$\\boxed{{{a}+x^2}}$"),
                (str(a), f"$\\boxed{{{a + 1}}}$"),
                (f"{a}\\pi", f"$\\boxed{{{3.14 * a:.2f}}}$"),
            ][kind]
        )
    return pairs


def _latencies(durations: list[float]) -> dict:
    ordered = sorted(durations)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
    }


def bench_code(num: int, workers: int, isolation: str) -> dict:
    task = get_task("code", sandbox=SandboxConfig(timeout_s=10.0, isolation=isolation), workers=workers)
    problem = Problem(
        id="t",
        task="code",
        prompt=PROMPT,
        answer="",
        tests=TESTS,
        meta={"format": "humaneval", "entry_point": "total"},
    )
    completions = [GOOD if i % 2 == 0 else BAD for i in range(num)]
    try:
        task.verify_many([problem] * 4, completions[:4])  # warm-up (isolation probe, judges, imports)
        started = time.perf_counter()
        verdicts = task.verify_many([problem] * num, completions)
        elapsed = time.perf_counter() - started
    finally:
        task.close()
    assert [v.correct for v in verdicts] == [i % 2 == 0 for i in range(num)], "wrong verdicts"
    return {
        "isolation": verdicts[0].isolation,
        "verdicts": num,
        "verdicts_per_s": round(num / elapsed, 1),
        **_latencies([v.duration_s for v in verdicts]),
    }


def bench_bare_subprocess(num: int, workers: int) -> dict:
    """No sandbox: one plain interpreter per program, tests exec'd beside it."""
    python = sandbox_python()
    script = PROMPT + GOOD + "\n" + TESTS + "\ncheck(total)\n"
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "p.py")
        with open(path, "w") as handle:
            handle.write(script)

        def run(_):
            started = time.perf_counter()
            subprocess.run([python, "-E", "-s", "-B", path], check=True, capture_output=True)
            return time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            durations = list(pool.map(run, range(num)))
        elapsed = time.perf_counter() - started
    return {
        "isolation": "none (bare subprocess)",
        "verdicts": num,
        "verdicts_per_s": round(num / elapsed, 1),
        **_latencies(durations),
    }


def bench_math(num: int, workers: int) -> dict:
    task = get_task("math", workers=workers, timeout_s=10.0)
    try:
        pairs = math_pairs(num)
        problems = [Problem(id=str(i), task="math", prompt="", answer=g) for i, (g, _) in enumerate(pairs)]
        task.verify_many(problems[:8], [p for _, p in pairs[:8]])  # warm-up: spawn workers, import sympy
        started = time.perf_counter()
        verdicts = task.verify_many(problems, [p for _, p in pairs])
        elapsed = time.perf_counter() - started
    finally:
        task.close()
    return {
        "verdicts": num,
        "verdicts_per_s": round(num / elapsed, 1),
        "timeouts": sum(v.timed_out for v in verdicts),
        **_latencies([v.duration_s for v in verdicts]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 programs and 400 math answers")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    num_code, num_math = (100, 400) if args.quick else (400, 2000)
    levels = ["bwrap", "unshare+setuid", "rlimits"]
    code = {}
    for level in levels:
        try:
            choose_isolation(SandboxConfig(isolation=level))
        except Exception as exc:  # noqa: BLE001 (report what this machine cannot do)
            code[level] = {"unavailable": str(exc)}
            continue
        print(f"code, {level} ...", file=sys.stderr, flush=True)
        code[level] = bench_code(num_code, args.workers, level)
    code["bare_subprocess"] = bench_bare_subprocess(num_code, args.workers)
    print("math ...", file=sys.stderr, flush=True)
    report = {
        "benchmark": "verify_throughput",
        "workers": args.workers,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "code": code,
        "math": bench_math(num_math, args.workers),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
