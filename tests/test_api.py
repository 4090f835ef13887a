"""The Python API works after every submodule has been imported (a function named like a
submodule in ``attnless/__init__.py`` would be shadowed by it)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import attnless
from attnless import api
from tests.helpers import tiny_config


def test_every_api_function_works_after_importing_every_submodule(
    tmp_path: Path, data_dir: Path
) -> None:
    for module in pkgutil.walk_packages(attnless.__path__, "attnless."):
        if module.name not in ("attnless.__main__",):
            importlib.import_module(module.name)
    cfg = tiny_config(tmp_path, data_dir, "train.epochs=1", "runtime.threads=1")
    assert callable(api.load_config)
    prepared = api.prepare(cfg)
    assert prepared.run_dir == cfg.run_dir() and len(prepared.train)
    summary = api.train(cfg, progress=False)
    assert summary["epoch"] == 1
    students = api.load_config(
        cfg.run_dir(),
        [
            "distill.replace=[encoder.self=alr:XS]",
            "distill.layers=0",
            "distill.max_steps=1",
            "distill.progress=false",
        ],
    )
    distilled = api.distill(students, progress=False)
    assert list(distilled["students"]) == ["encoder.self.alr-XS.0"]
    (record,) = api.evaluate(cfg, ["valid"], progress=False)
    assert record["split"] == "valid" and record["bleu"] >= 0
    hypotheses = api.translate(cfg, ["Ein Hund läuft .", "Zwei Männer ."])
    assert len(hypotheses) == 2 and all(isinstance(h, str) for h in hypotheses)
