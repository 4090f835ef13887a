"""Multi-process training and distillation (DDP, gloo on the CPU) against one process.

Two processes started by ``torchrun`` (each batch budget per process) must give the same loss
curve, validation losses, weights and students as one process accumulating the same two batches
per update (``train.accumulate=2``, ``distill.accumulate=2``), including a resume, an epoch with
an odd number of batches (the second rank sits out the last step) and sharded validation; and
only rank 0 may write to the run folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnless import checkpoint
from attnless import config as config_mod
from attnless.distill import distill
from attnless.runs import read_jsonl
from attnless.train import train
from tests.helpers import REPO, tiny_config

# dropout off and fp32, so that the only differences are in the order of floating-point sums;
# 120 pairs give 11 training batches per epoch and 5 distillation batches: odd counts
COMMON = (
    "data.train_subset=120",
    "model.dropout=0",
    "model.attention_dropout=0",
    "runtime.precision=fp32",
    "runtime.threads=1",
    "train.epochs=10",
    "train.warmup=20",
    "distill.n=50",
    "distill.batch_size=24",
    "distill.epochs=1",
    "distill.lr=3e-3",
    "distill.log_every=1",
    "distill.progress=false",
    "distill.teacher_checkpoint=last",
    "distill.replace=[encoder.self=alr:S, decoder.cross=alr:XS]",
    "distill.layers=all",
)
TOLERANCE = 1e-5


def _write_config(tmp_path: Path, data_dir: Path, name: str, *extra: str) -> Path:
    run = tmp_path / name / "run"
    cfg = tiny_config(tmp_path / name, data_dir, *COMMON, *extra, f"dir={run}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(config_mod.dump(cfg))
    return path


def _train_curve(run: Path) -> list[tuple[int, float, float]]:
    records = read_jsonl(run / "metrics.jsonl")
    return [(r["step"], r["loss"], r["nll"]) for r in records if r["kind"] == "train"]


def _valid(run: Path) -> list[tuple[int, float]]:
    records = read_jsonl(run / "metrics.jsonl")
    return [(r["step"], r["valid_loss"]) for r in records if r["kind"] == "epoch"]


def _student_curve(run: Path) -> list[tuple[str, int, float]]:
    records = read_jsonl(run / "students" / "metrics.jsonl")
    return [(r["student"], r["step"], r["mse"]) for r in records if r["kind"] == "distill"]


def _close(a: list[tuple], b: list[tuple]) -> None:
    """Same rows (steps, names) with the last columns (losses) equal to ``TOLERANCE``."""
    assert len(a) == len(b), (a, b)
    for x, y in zip(a, b):
        assert x[:-2] == y[:-2] and y[-2:] == pytest.approx(x[-2:], rel=TOLERANCE), (x, y)


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=key)


def _same_moments(a: dict, b: dict) -> None:
    """Adam's moments (unlike its updates) scale with the gradients: equal moments mean equal
    gradients, not just gradients equal up to a factor."""
    for i, state in a["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(b["state"][i][key], state[key], rtol=1e-3, atol=1e-9)


@pytest.mark.slow
def test_two_processes_equal_one_process_accumulating_two_batches(
    tmp_path: Path, data_dir: Path
) -> None:
    ref_yaml = _write_config(
        tmp_path, data_dir, "ref", "train.accumulate=2", "distill.accumulate=2"
    )
    ddp_yaml = _write_config(tmp_path, data_dir, "ddp")

    # two processes: 4 steps, stop, resume to 9 (crossing the end of epoch 1), then distil
    plan = {
        "watch": str(tmp_path / "ddp"),
        "record": str(tmp_path / "record"),
        "commands": [
            ["train", str(ddp_yaml), "-q", "--set", "train.max_steps=4"],
            ["train", str(ddp_yaml), "-q", "--set", "train.max_steps=9"],
            ["distill", str(ddp_yaml), "-q"],
        ],
    }
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(REPO / "tests" / "ddp_worker.py"), str(plan_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # one process accumulating two batches per update, straight to 9 steps, then distil
    threads = torch.get_num_threads()
    try:
        train(config_mod.load(ref_yaml, ["train.max_steps=9"]), progress=False)
        distill(config_mod.load(ref_yaml, ["train.max_steps=9"]), progress=False)
    finally:
        torch.set_num_threads(threads)

    ref, ddp = tmp_path / "ref" / "run", tmp_path / "ddp" / "run"
    curve = _train_curve(ref)
    assert [step for step, *_ in curve] == list(range(1, 10))
    _close(curve, _train_curve(ddp))
    assert len(_valid(ref)) == 1
    _close(_valid(ref), _valid(ddp))
    a = checkpoint.load(ref / "checkpoints" / "last.pt")
    b = checkpoint.load(ddp / "checkpoints" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 9
    assert a["state"]["batch_in_epoch"] == b["state"]["batch_in_epoch"] == 6
    assert b["state"]["train_tokens"] == a["state"]["train_tokens"]  # global token counts
    assert len(b["rng_ranks"]) == 2  # every rank's random state, for an exact resume
    _same_weights(a["model"], b["model"])
    _same_moments(a["optimizer"], b["optimizer"])

    students = _student_curve(ref)
    assert len(students) == 4 * 3  # 4 students, 5 batches = 3 updates of 2 batches
    _close(students, _student_curve(ddp))
    for path in sorted((ref / "students").rglob("layer*.pt")):
        # the same student; its folder differs: distill.accumulate is one of its settings
        family = path.parent.parent.relative_to(ref)
        (other,) = (ddp / family).glob(f"*/{path.name}")
        x, y = checkpoint.load(path), checkpoint.load(other)
        assert (x["meta"]["processes"], y["meta"]["processes"]) == (1, 2)
        assert x["position"] == y["position"] == (1, 0, 3)
        assert y["history"][0]["valid_mse"] == pytest.approx(
            x["history"][0]["valid_mse"], rel=TOLERANCE
        )
        _same_weights(x["student"], y["student"])
        _same_moments(x["optimizer"], y["optimizer"])

    # only rank 0 wrote: checkpoints, metrics, students, run-folder files
    written0 = (tmp_path / "record" / "rank0.txt").read_text().split()
    written1 = (tmp_path / "record" / "rank1.txt").read_text().split()
    assert written1 == []
    assert "run/metrics.jsonl" in written0 and "run/students/metrics.jsonl" in written0
    assert any(p.startswith("run/checkpoints/.last.pt") for p in written0)
    assert any(re.match(r"run/students/encoder\.self/alr-S/\w+/\.layer1\.pt", p) for p in written0)


def test_accumulate_is_validated(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(config_mod.ConfigError, match="train.accumulate: must be positive"):
        tiny_config(tmp_path, data_dir, "train.accumulate=0")
