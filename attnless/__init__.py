"""attnless: attentionless Transformers (arXiv 2311.10642), reproducibly.

The Python API mirrors the CLI verbs::

    from attnless import config, train, evaluate
    cfg = config.load("experiments/quick.yaml")
    train(cfg)
    evaluate(cfg)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["evaluate", "prepare", "train"]


def prepare(cfg: Any) -> Any:
    """See :func:`attnless.prepare.prepare`."""
    from attnless.prepare import prepare as run

    return run(cfg)


def train(cfg: Any, progress: bool = True) -> dict[str, Any]:
    """See :func:`attnless.train.train`."""
    from attnless.train import train as run

    return run(cfg, progress=progress)


def evaluate(cfg: Any, splits: list[str] | None = None, progress: bool = True) -> list[dict]:
    """See :func:`attnless.evaluate.evaluate`."""
    from attnless.evaluate import evaluate as run

    return run(cfg, splits, progress=progress)
