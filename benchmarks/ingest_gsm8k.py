"""Ingest + validate the GSM8K train split (7,473 rows): wall time, rows/s, peak memory.

    python benchmarks/ingest_gsm8k.py [--input ../shared/data/gsm8k/train.jsonl]

Timed from inside the process (interpreter start-up excluded). The first run includes importing
pandas, pyarrow and Great Expectations (cold); the second is warm. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from calgrpo.ingest.pipeline import IngestConfig, ingest

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", type=Path, default=DEFAULT)
    args = parser.parse_args()
    runs = []
    for label in ("cold", "warm"):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            card = ingest(
                IngestConfig(format="gsm8k", input=str(args.input), output=folder, eval_fraction=0.1)
            )
            elapsed = time.perf_counter() - started
        runs.append({"run": label, "rows": card["records_read"], "seconds": round(elapsed, 3),
                     "rows_per_s": round(card["records_read"] / elapsed, 1)})  # fmt: skip
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is KiB on Linux
    print(json.dumps({"benchmark": "ingest_gsm8k", "runs": runs, "peak_rss_mb": round(peak_mb, 1)}, indent=2))


if __name__ == "__main__":
    main()
