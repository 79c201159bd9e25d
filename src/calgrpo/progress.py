"""One progress helper: a bar on a terminal, a JSON line every ~10% when stderr is not a TTY."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` while reporting progress on stderr."""
    if not enabled:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False)
        return
    started = time.monotonic()
    next_report = 0.0
    for done, item in enumerate(items, start=1):
        yield item
        if total and done / total >= next_report:
            line = {
                "progress": desc,
                "done": done,
                "total": total,
                "elapsed_s": round(time.monotonic() - started, 1),
            }
            print(json.dumps(line), file=sys.stderr, flush=True)
            next_report = done / total + 0.1
