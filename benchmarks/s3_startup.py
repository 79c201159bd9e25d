"""Embedded S3 start-up: seconds from launching `weed mini` to a healthy, credentialed bucket.

    python benchmarks/s3_startup.py [--repeats 5]

Prints one JSON object with each start-up time, the median and the maximum.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

from calgrpo.storage.embedded import EmbeddedS3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder, EmbeddedS3(folder) as server:
            times.append(round(server.startup_s, 3))
    print(
        json.dumps(
            {
                "benchmark": "s3_startup",
                "startup_s": times,
                "median_s": statistics.median(times),
                "max_s": max(times),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
