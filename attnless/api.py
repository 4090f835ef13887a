"""The Python API: one function per CLI verb, importable without name clashes.

    from attnless import api
    cfg = api.load_config("experiments/quick.yaml", ["train.epochs=2"])
    api.train(cfg)
    api.distill(api.load_config(cfg.run_dir(), ["distill.replace=[encoder.self=alr:S]"]))
    api.evaluate(cfg)

(The verbs live here rather than in ``attnless/__init__.py``: there, a function ``train``
would be replaced by the submodule ``attnless.train`` as soon as anything imports it.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnless.config import Config


def load_config(path: str | Path, overrides: Sequence[str] | None = None) -> Config:
    """A YAML config or a run folder's config, with ``section.key=value`` overrides."""
    from attnless.config import load

    return load(path, list(overrides or []))


def prepare(cfg: Config) -> Any:
    """Create (or check) the run folder, train the tokenizer, encode the data."""
    from attnless.prepare import prepare as run

    return run(cfg)


def train(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the teacher; returns the training summary."""
    from attnless.train import train as run

    return run(cfg, progress=progress)


def distill(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Distil the students of ``cfg.distill`` from the run's teacher; returns their summary."""
    from attnless.distill import distill as run

    return run(cfg, progress=progress)


def evaluate(
    cfg: Config, splits: list[str] | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Score the teacher, or with ``cfg.eval.replace`` the hybrid; one record per split."""
    from attnless.evaluate import evaluate as run

    return run(cfg, splits, progress=progress)


def translate(cfg: Config, lines: list[str], checkpoint: str = "best") -> list[str]:
    """Translate raw source lines with the run's teacher: one hypothesis per line."""
    from attnless.evaluate import translate_lines
    from attnless.rundir import RunDir

    run = RunDir.of(cfg)
    model, _ = run.load_teacher(checkpoint)
    return translate_lines(model, run.tokenizer(), lines, cfg)[0]
