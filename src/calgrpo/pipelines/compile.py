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


def compile_pipelines(output_dir: str | Path, config=None, train_nodes: int = 1) -> list[Path]:
    """Compile the train (``config``, a PipelineConfig, as its config parameter's default, its rounds
    unrolled; TrainJob training when ``train_nodes`` > 1) and evaluate pipelines to YAML."""
    from kfp import compiler

    from calgrpo.pipelines.definitions import build_train_pipeline, evaluate_pipeline

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    written = [Path(output_dir, "train.yaml"), Path(output_dir, "evaluate.yaml")]
    compiler.Compiler().compile(build_train_pipeline(config, train_nodes), str(written[0]))
    compiler.Compiler().compile(evaluate_pipeline, str(written[1]))
    return written
