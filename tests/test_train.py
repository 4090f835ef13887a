"""Teacher training on a slice of real Multi30k: resume equivalence, checkpoints, divergence."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from attnless import checkpoint, hardware
from attnless.prepare import prepare
from attnless.rundir import RunDir
from attnless.runs import read_jsonl
from attnless.train import Trainer, TrainingDiverged, noam_lr, train
from tests.helpers import tiny_config


def _train_losses(run_dir: Path) -> list[tuple[int, float, float]]:
    return [
        (r["step"], r["loss"], r["nll"])
        for r in read_jsonl(run_dir / "metrics.jsonl")
        if r["kind"] == "train"
    ]


def test_resume_matches_uninterrupted_run(tmp_path: Path, data_dir: Path) -> None:
    """N steps straight == N/2 steps, stop, resume, N/2 more (fairseq's reproducibility test),
    crossing an epoch boundary and a validation on the way."""
    small = ("data.train_subset=100", "train.epochs=5")
    straight = tiny_config(tmp_path / "a", data_dir, *small, "train.max_steps=16")
    summary = train(straight, progress=False)
    assert summary["step"] == 16 and summary["epoch"] >= 1, summary  # crossed an epoch end

    half = tiny_config(tmp_path / "b", data_dir, *small, "train.max_steps=8")
    train(half, progress=False)
    resumed = tiny_config(tmp_path / "b", data_dir, *small, "train.max_steps=16")
    train(resumed, progress=False)

    a, b = _train_losses(straight.run_dir()), _train_losses(resumed.run_dir())
    assert [s for s, *_ in a] == list(range(1, 17))
    assert a == b
    model_a = checkpoint.load(straight.run_dir() / "checkpoints" / "last.pt")["model"]
    model_b = checkpoint.load(resumed.run_dir() / "checkpoints" / "last.pt")["model"]
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key


def test_checkpoint_holds_everything_to_resume(tmp_path: Path, data_dir: Path) -> None:
    cfg = tiny_config(tmp_path, data_dir, "train.epochs=1")
    train(cfg, progress=False)
    run = cfg.run_dir()
    for name in ["config.yaml", "versions.json", "spm.model", "metrics.jsonl", "data.json"]:
        assert (run / name).is_file(), name
    payload = checkpoint.load(run / "checkpoints" / "last.pt")
    assert {"model", "optimizer", "state", "rng", "config", "tokenizer", "versions"} <= set(payload)
    assert payload["state"]["epoch"] == 1 and payload["state"]["batch_in_epoch"] == 0
    assert "spm.model" in payload["tokenizer"]
    assert (run / "checkpoints" / "best.pt").is_file()
    records = read_jsonl(run / "metrics.jsonl")
    epoch = [r for r in records if r["kind"] == "epoch"]
    assert len(epoch) == 1 and epoch[0]["valid_loss"] > 0
    # training the finished run again does nothing
    again = train(cfg, progress=False)
    assert again["step"] == payload["state"]["step"]


def test_average_of_last_epochs(tmp_path: Path, data_dir: Path) -> None:
    """``train.average_last = 2``: only the last two epochs' weights are kept, and
    ``average.pt`` holds their mean with the run's metadata, loadable like ``best``."""
    cfg = tiny_config(tmp_path, data_dir, "data.train_subset=60", "train.epochs=3")
    cfg.train.average_last = 2
    train(cfg, progress=False)
    ckpts = cfg.run_dir() / "checkpoints"
    kept = sorted(p.name for p in ckpts.glob("epoch*.weights.pt"))
    assert kept == ["epoch2.weights.pt", "epoch3.weights.pt"]
    two, three = (checkpoint.load(ckpts / name)["model"] for name in kept)
    average = checkpoint.load(ckpts / "average.pt")
    assert average["averaged_epochs"] == [2, 3] and "optimizer" not in average
    for name, weight in average["model"].items():
        torch.testing.assert_close(weight, (two[name] + three[name]) / 2)
    assert not torch.equal(two["encoder.embed.tokens.weight"], three["encoder.embed.tokens.weight"])
    model, payload = RunDir.of(cfg).load_teacher("average")
    assert payload["state"]["epoch"] == 3 and not model.training


def test_loss_decreases(tmp_path: Path, data_dir: Path) -> None:
    cfg = tiny_config(tmp_path, data_dir, "train.epochs=4", "train.warmup=30", "train.log_every=5")
    train(cfg, progress=False)
    losses = [loss for _, loss, _ in _train_losses(cfg.run_dir())]
    assert losses[-1] < losses[0] - 1.0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(tmp_path, data_dir, "train.epochs=1")
    train(cfg, progress=False)
    last = cfg.run_dir() / "checkpoints" / "last.pt"
    before = last.read_bytes()

    import attnless.train as train_mod

    real = train_mod.batch_loss

    def poisoned(model, batch, eps):
        loss, nll, tokens = real(model, batch, eps)
        return loss * float("nan"), nll, tokens

    monkeypatch.setattr(train_mod, "batch_loss", poisoned)
    more = tiny_config(tmp_path, data_dir, "train.epochs=2")
    with pytest.raises(TrainingDiverged, match="non-finite training loss"):
        train(more, progress=False)
    assert last.read_bytes() == before


def test_changed_model_settings_refuse_the_run_folder(tmp_path: Path, data_dir: Path) -> None:
    cfg = tiny_config(tmp_path, data_dir, "train.max_steps=1")
    train(cfg, progress=False)
    other = tiny_config(tmp_path, data_dir, "model.ffn_dim=48", "train.max_steps=1")
    with pytest.raises(ValueError, match="model.ffn_dim: 32 in the run folder, 48 now"):
        train(other, progress=False)


def test_noam_schedule_peak() -> None:
    assert noam_lr(4000, 128, 4000) == pytest.approx(1.3975e-3, rel=1e-4)
    assert noam_lr(2000, 128, 4000) < noam_lr(4000, 128, 4000) > noam_lr(8000, 128, 4000)


def test_trainer_runs_moved_run_folder(tmp_path: Path, data_dir: Path) -> None:
    """A run folder is self-contained: moved elsewhere, it still resumes."""
    from attnless import config as config_mod

    cfg = tiny_config(tmp_path, data_dir, "train.max_steps=2")
    train(cfg, progress=False)
    moved = tmp_path / "moved"
    shutil.move(str(cfg.run_dir()), moved)
    loaded = config_mod.load(moved, ["train.max_steps=4"])
    trainer = Trainer(loaded, prepare(loaded), progress=False)
    assert trainer.state.step == 2
    assert trainer.fit()["step"] == 4


@pytest.mark.parametrize(("speedup", "expected"), [(5.0, torch.bfloat16), (0.6, None)])
def test_auto_precision_follows_the_measured_bf16_speed(
    monkeypatch: pytest.MonkeyPatch, speedup: float, expected: torch.dtype | None
) -> None:
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda threads: speedup)
    cpu = torch.device("cpu")
    assert hardware.autocast_dtype("auto", cpu) == expected
    assert hardware.autocast_dtype("fp32", cpu) is None
    assert hardware.autocast_dtype("bf16", cpu) == torch.bfloat16


def test_auto_precision_is_decided_once_per_run(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decided when the teacher is trained and recorded in its run folder: a resumed run,
    distillation and evaluation keep it, however a new measurement comes out."""
    from attnless.distill import Distiller

    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda threads: 5.0)
    students = ("distill.replace=[encoder.self=alr:XS]", "distill.teacher_checkpoint=last")
    cfg = tiny_config(tmp_path, data_dir, "data.train_subset=50", "train.max_steps=2", *students)
    train(cfg, progress=False)
    run = cfg.run_dir()
    run_dir = RunDir(run)
    assert checkpoint.load(run / "checkpoints" / "last.pt")["precision"] == "bf16"
    assert run_dir.runtime_file.read_text() == '{\n  "precision": "bf16"\n}\n'
    monkeypatch.setattr(hardware, "cpu_bf16_speedup", lambda threads: 0.5)  # a busy machine
    cpu = torch.device("cpu")
    assert hardware.autocast_dtype("auto", cpu) is None  # what a new measurement says
    assert Trainer(cfg, prepare(cfg), progress=False).dtype == torch.bfloat16
    assert Distiller(cfg, prepare(cfg, record=False), progress=False).dtype == torch.bfloat16
    recorded = run_dir.recorded_precision()
    assert hardware.run_dtype("auto", recorded, cpu) == torch.bfloat16  # evaluation's choice
    assert hardware.run_dtype("fp32", recorded, cpu) is None  # a setting other than auto wins
    run_dir.runtime_file.unlink()  # a run trained before the record: its checkpoints
    assert run_dir.recorded_precision() == "bf16"
    assert RunDir(tmp_path / "untrained").recorded_precision() is None  # nothing recorded


def test_epoch_log_line_is_readable() -> None:
    from attnless.train import epoch_line

    record = {
        "epoch": 3,
        "step": 1014,
        "valid_loss": 3.5812,
        "valid_ppl": 14.71,
        "train_tokens_per_s": 6116.4,
    }
    assert epoch_line(record, 20) == (
        "epoch 3/20  step 1,014  valid loss 3.581  ppl 14.7  6,116 tok/s"
    )
