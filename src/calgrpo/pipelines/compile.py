"""Compiling components to standalone YAML that other pipelines load.

``calgrpo pipeline compile`` writes ``components/<name>/component.yaml`` for every stage; a test
checks that the committed files match the source, so they never drift.
"""

from __future__ import annotations

from pathlib import Path


def compile_components(output_dir: str | Path) -> list[Path]:
    """Compile every component of :mod:`calgrpo.pipelines.components`; returns the YAML paths."""
    from kfp import compiler

    from calgrpo.pipelines.components import ALL

    written = []
    for name, component in ALL.items():
        path = Path(output_dir, name, "component.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(component, str(path))
        written.append(path)
    return written
