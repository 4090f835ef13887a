"""``attnless train``: teacher training with exact resume, validation and atomic checkpoints.

A run folder holds ``checkpoints/last.pt`` (written at every epoch end, every
``train.save_every`` steps, and when ``train.max_steps`` stops a run) and ``checkpoints/best.pt``
(lowest validation loss). ``last.pt`` carries the model, optimizer, schedule position, the RNG
states and the sampler position (epoch, batch), so training the same config again continues
exactly where it stopped: on the CPU, N steps straight and N/2 + resume + N/2 give identical
losses.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from attnless import checkpoint, hardware
from attnless.config import Config
from attnless.data.batching import Batch, Examples, collate, epoch_batches, eval_batches
from attnless.model import Seq2SeqTransformer, build_model, count_parameters
from attnless.model.loss import linear_smoothed_cross_entropy
from attnless.prepare import Prepared, prepare
from attnless.progress import progress_bar
from attnless.runs import append_jsonl, seed_everything, versions

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # batches of the current epoch already trained
    best_valid_loss: float = math.inf
    train_seconds: float = 0.0
    train_tokens: int = 0


def noam_lr(step: int, d_model: int, warmup: int, scale: float = 1.0) -> float:
    """``scale * d^-0.5 * min(step^-0.5, step * warmup^-1.5)`` (Vaswani et al.), step >= 1."""
    step = max(step, 1)
    return scale * d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Adam:
    t = cfg.train
    kwargs: dict[str, Any] = {"lr": 0.0, "betas": t.betas, "eps": t.eps}
    if t.weight_decay:
        kwargs["weight_decay"] = t.weight_decay
    return torch.optim.Adam(model.parameters(), fused=True, **kwargs)


def batch_loss(
    model: Seq2SeqTransformer, batch: Batch, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed smoothed loss, summed NLL and the number of target tokens of a batch."""
    hidden = model(batch.src, batch.tgt_in)
    keep = batch.tgt_out.ne(0)
    target = batch.tgt_out[keep]
    gen = model.generator
    loss, nll = linear_smoothed_cross_entropy(
        hidden[keep], gen.weight, gen.bias, target, label_smoothing
    )
    return loss, nll, keep.sum()


@torch.no_grad()
def evaluate_loss(
    model: Seq2SeqTransformer,
    examples: Examples,
    cfg: Config,
    device: torch.device,
    dtype: torch.dtype | None,
) -> dict[str, float]:
    """Teacher-forced loss, NLL and perplexity per target token over a whole split."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    with hardware.autocast(device, dtype):
        for indices in eval_batches(examples, 2 * cfg.train.max_tokens):
            batch = collate(examples, indices).to(device)
            loss, nll, tokens = batch_loss(model, batch, cfg.train.label_smoothing)
            totals += torch.stack([loss.double(), nll.double(), tokens.double()]).cpu()
    model.train(was_training)
    loss, nll, tokens = totals.tolist()
    tokens = max(tokens, 1.0)
    return {"loss": loss / tokens, "nll": nll / tokens, "ppl": math.exp(min(nll / tokens, 50))}


class Trainer:
    """Owns the model, optimizer and schedule of one run; ``fit`` trains to the configured end."""

    def __init__(self, cfg: Config, prepared: Prepared, progress: bool = True) -> None:
        self.cfg = cfg
        self.data = prepared
        self.run_dir = prepared.run_dir
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.progress = progress and cfg.train.progress
        self.device = hardware.resolve_device(cfg.train.device)
        self.dtype = hardware.autocast_dtype(cfg.train.precision, self.device)
        if self.device.type == "cpu":
            hardware.tune_cpu_runtime(cfg.train.threads)
        seed_everything(cfg.seed)
        tok = prepared.tokenizer
        self.model = build_model(cfg, tok.src_vocab_size, tok.tgt_vocab_size).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg)
        self.state = TrainState()
        last = self.ckpt_dir / "last.pt"
        if last.exists():
            self._restore(checkpoint.load(last, self.device))

    # ------------------------------------------------------------------ checkpoints

    def _payload(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "state": asdict(self.state),
            "rng": checkpoint.rng_state(),
            "config": self.cfg.to_dict(),
            "tokenizer": {p.name: p.read_bytes() for p in self.data.tokenizer.files},
            "versions": versions(),
        }

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainState(**payload["state"])
        checkpoint.set_rng_state(payload["rng"])
        log.info("resumed %s at step %d", self.run_dir, self.state.step)

    def save(self, best: bool = False) -> None:
        payload = self._payload()
        checkpoint.save(self.ckpt_dir / "last.pt", payload)
        if best:
            checkpoint.save(self.ckpt_dir / "best.pt", payload)

    # ------------------------------------------------------------------ training

    def _log(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record)

    def _finished(self) -> bool:
        max_steps = self.cfg.train.max_steps
        return self.state.epoch >= self.cfg.train.epochs or (
            max_steps is not None and self.state.step >= max_steps
        )

    def _set_lr(self) -> float:
        t, m = self.cfg.train, self.cfg.model
        lr = noam_lr(self.state.step + 1, m.d_model, t.warmup, t.lr_scale)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _check_finite(self, loss_sum: torch.Tensor) -> None:
        value = float(loss_sum.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"non-finite training loss ({value}) at step {self.state.step} "
                f"(epoch {self.state.epoch + 1}); training stopped and the last good checkpoint "
                f"was kept in {self.ckpt_dir}. Try a lower train.lr_scale, a longer "
                "train.warmup or train.precision=fp32."
            )

    def train_step(self, batch: Batch, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on ``batch`` (``tokens`` real target tokens); returns the summed loss and
        NLL as detached tensors, so no device sync is needed here."""
        self._set_lr()
        with hardware.autocast(self.device, self.dtype):
            loss, nll, _ = batch_loss(self.model, batch, self.cfg.train.label_smoothing)
        if self.device.type == "cpu":  # free on the CPU: never step on a non-finite loss
            self._check_finite(loss)
        self.optimizer.zero_grad(set_to_none=True)
        (loss / tokens).backward()
        if self.cfg.train.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_norm)
        self.optimizer.step()
        self.state.step += 1
        return loss.detach(), nll.detach()

    def fit(self) -> dict[str, Any]:
        """Train until ``train.epochs`` epochs or ``train.max_steps`` steps are done."""
        cfg, state = self.cfg, self.state
        train = self.data.train
        if self._finished():
            return self.summary()
        self.model.train()
        batches_per_epoch = len(epoch_batches(train, cfg.train.max_tokens, cfg.seed, state.epoch))
        total = batches_per_epoch * cfg.train.epochs
        if cfg.train.max_steps is not None:
            total = min(total, cfg.train.max_steps)
        self._log(
            {
                "kind": "start",
                "step": state.step,
                "params": count_parameters(self.model),
                "device": str(self.device),
                "precision": str(self.dtype or torch.float32),
                "threads": torch.get_num_threads(),
            }
        )
        window = self._new_window()
        sync_every = 1 if self.device.type == "cpu" else cfg.train.log_every
        pin = self.device.type == "cuda"
        with progress_bar("train", total, self.progress) as bar:
            bar.advance(state.step)
            while not self._finished():
                batches = epoch_batches(train, cfg.train.max_tokens, cfg.seed, state.epoch)
                bar.set_description(f"epoch {state.epoch + 1}/{cfg.train.epochs}")
                for indices in batches[state.batch_in_epoch :]:
                    batch = collate(train, indices)
                    tokens = batch.target_tokens
                    if pin:
                        batch = batch.pin_memory()
                    batch = batch.to(self.device, non_blocking=True)
                    t0 = time.perf_counter()
                    loss, nll = self.train_step(batch, tokens)
                    window["loss"] += loss
                    window["nll"] += nll
                    window["tokens"] += tokens
                    state.batch_in_epoch += 1
                    state.train_tokens += tokens
                    status = {}
                    if state.step % sync_every == 0:
                        status = {"loss": float(loss) / tokens}
                    state.train_seconds += time.perf_counter() - t0
                    if state.step % cfg.train.log_every == 0:
                        self._log_window(window)
                        window = self._new_window()
                    tok_s = round(state.train_tokens / max(state.train_seconds, 1e-9))
                    lr = self.optimizer.param_groups[0]["lr"]
                    bar.advance(1, **status, lr=lr, tok_s=tok_s)
                    if cfg.train.save_every and state.step % cfg.train.save_every == 0:
                        self.save()
                    if self._finished():
                        break
                if state.batch_in_epoch >= len(batches):
                    if window["tokens"]:
                        self._log_window(window)
                    self._end_epoch()
                    window = self._new_window()  # validation is not training time
        if window["tokens"]:
            self._log_window(window)
        self.save()
        return self.summary()

    @staticmethod
    def _new_window() -> dict[str, Any]:
        return {"loss": 0.0, "nll": 0.0, "tokens": 0, "t0": time.perf_counter()}

    def _log_window(self, window: dict[str, Any]) -> None:
        tokens = max(window["tokens"], 1)
        elapsed = time.perf_counter() - window["t0"]
        self._check_finite(window["loss"])
        window["loss"], window["nll"] = float(window["loss"]), float(window["nll"])
        self._log(
            {
                "kind": "train",
                "step": self.state.step,
                "epoch": self.state.epoch + 1,
                "loss": window["loss"] / tokens,
                "nll": window["nll"] / tokens,
                "ppl": math.exp(min(window["nll"] / tokens, 50)),
                "lr": self.optimizer.param_groups[0]["lr"],
                "tokens": int(window["tokens"]),
                "tokens_per_s": window["tokens"] / max(elapsed, 1e-9),
            }
        )

    def _end_epoch(self) -> None:
        state = self.state
        state.epoch += 1
        state.batch_in_epoch = 0
        record: dict[str, Any] = {"kind": "epoch", "step": state.step, "epoch": state.epoch}
        best = False
        if self.cfg.train.validate_every_epoch:
            valid = evaluate_loss(self.model, self.data.valid, self.cfg, self.device, self.dtype)
            best = valid["loss"] < state.best_valid_loss
            if best:
                state.best_valid_loss = valid["loss"]
            record.update({f"valid_{k}": v for k, v in valid.items()})
        record["train_seconds"] = state.train_seconds
        record["train_tokens_per_s"] = state.train_tokens / max(state.train_seconds, 1e-9)
        self._log(record)
        self.save(best=best or not (self.ckpt_dir / "best.pt").exists())
        log.info("epoch %d: %s", state.epoch, record)

    def summary(self) -> dict[str, Any]:
        s = self.state
        return {
            "run_dir": str(self.run_dir),
            "step": s.step,
            "epoch": s.epoch,
            "best_valid_loss": s.best_valid_loss,
            "train_seconds": s.train_seconds,
            "train_tokens": s.train_tokens,
            "tokens_per_s": s.train_tokens / max(s.train_seconds, 1e-9),
            "params": count_parameters(self.model),
            "device": str(self.device),
            "precision": str(self.dtype or torch.float32),
        }


def train(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Prepare the data (if needed) and train the teacher of ``cfg``; resume if possible."""
    trainer = Trainer(cfg, prepare(cfg), progress=progress)
    return trainer.fit()


def load_model(
    run_dir: str | Path, which: str = "best", device: torch.device | str = "cpu"
) -> tuple[Seq2SeqTransformer, dict[str, Any]]:
    """The teacher stored in ``run_dir/checkpoints/{which}.pt`` (eval mode) and its payload."""
    from attnless import config as config_mod

    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    payload = checkpoint.load(path, device)
    cfg = config_mod.from_dict(payload["config"], str(path))
    state = payload["model"]
    src_vocab = state["encoder.embed.tokens.weight"].size(0)
    tgt_vocab = state["decoder.embed.tokens.weight"].size(0)
    model = build_model(cfg, src_vocab, tgt_vocab).to(device)
    model.load_state_dict(state)
    model.eval()
    return model, payload
