"""``attnless train``: teacher training with exact resume, validation and atomic checkpoints.

A run folder holds ``checkpoints/last.pt`` (written at every epoch end, every
``train.save_every`` steps, and when ``train.max_steps`` stops a run) and ``checkpoints/best.pt``
(lowest validation loss); with ``train.average_last = N`` also ``checkpoints/average.pt``, the
mean of the last N epochs' weights (fairseq's ``average_checkpoints``). ``last.pt`` carries the
model, optimizer, schedule position, the RNG states and the sampler position (epoch, batch), so
training the same config again continues exactly where it stopped: on the CPU, N steps straight
and N/2 + resume + N/2 give identical losses.

An update (a step) consumes ``world * train.accumulate`` consecutive batches of the seeded epoch
order: under ``torchrun`` (DDP, see :mod:`attnless.distributed`) rank ``r`` of ``world`` takes
batches ``r, r + world, ...`` of each group, with ``train.max_tokens`` the budget of one batch of
one process. The summed loss is divided by the group's global number of target tokens (known
on every rank from the sentence lengths, so no communication is needed), hence N processes
give the same updates as one process accumulating the same N batches. Only rank 0 writes
checkpoints and metrics; logged throughput is global.

On CUDA the inner loop never waits for the device: batches are pinned and copied
asynchronously, the real target positions are selected with indices built on the host, and
losses are only read (and checked for NaN) every ``train.log_every`` steps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from attnless import checkpoint, distributed, hardware
from attnless.allocator import active_allocator
from attnless.config import Config
from attnless.data.batching import Batch, Examples, collate, epoch_batches, eval_batches
from attnless.data.tokenizer import PAD_ID
from attnless.distributed import Context
from attnless.model import Seq2SeqTransformer, build_model, count_parameters
from attnless.model.loss import batch_loss
from attnless.prepare import Prepared, prepare
from attnless.progress import progress_bar
from attnless.rundir import RunDir
from attnless.runs import append_jsonl, drop_metrics_after, seed_everything, versions

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


@dataclass
class DeviceBatch(Batch):
    """A batch on its device, with the flat positions of its real target tokens (built on the
    host, so selecting them on the device needs no host sync, unlike a boolean mask)."""

    keep_index: Tensor | None = None


def to_device(batch: Batch, device: torch.device) -> DeviceBatch:
    """``batch`` on ``device``: pinned and copied asynchronously on CUDA."""
    keep_index = batch.tgt_out.reshape(-1).ne(PAD_ID).nonzero().squeeze(1)
    tensors = (batch.src, batch.tgt_in, batch.tgt_out, keep_index)
    if device.type == "cuda":
        tensors = tuple(t.pin_memory().to(device, non_blocking=True) for t in tensors)
    elif device.type != "cpu":
        tensors = tuple(t.to(device) for t in tensors)
    src, tgt_in, tgt_out, keep_index = tensors
    return DeviceBatch(src, tgt_in, tgt_out, batch.index, keep_index)


@torch.no_grad()
def evaluate_loss(
    model: Seq2SeqTransformer,
    examples: Examples,
    cfg: Config,
    device: torch.device,
    dtype: torch.dtype | None,
    ctx: Context | None = None,
) -> dict[str, float]:
    """Teacher-forced loss, NLL and perplexity per target token over a whole split (with
    ``ctx``, each rank takes its share of the batches and the sums are all-reduced)."""
    ctx = ctx or Context()
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    batches = distributed.rank_share(eval_batches(examples, 2 * cfg.train.max_tokens), ctx)
    with hardware.autocast(device, dtype):
        for indices in batches:
            batch = to_device(collate(examples, indices), device)
            loss, nll, tokens = batch_loss(model, batch, cfg.train.label_smoothing)
            totals += torch.stack([loss.double(), nll.double(), tokens.double()])
    model.train(was_training)
    loss, nll, tokens = distributed.all_reduce_sum(totals, ctx).tolist()
    tokens = max(tokens, 1.0)
    return {"loss": loss / tokens, "nll": nll / tokens, "ppl": math.exp(min(nll / tokens, 50))}


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random stream (dropout); rank 0 keeps ``seed``'s."""
    return seed * 1_000_003 + 7_919 * rank


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """``epoch 3/20  step 1,014  valid loss 3.58  ppl 14.7  6,116 tok/s`` from an epoch record."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"step {record['step']:,}"]
    if "valid_loss" in record:
        parts.append(f"valid loss {record['valid_loss']:.3f}")
        parts.append(f"ppl {record['valid_ppl']:.1f}")
    parts.append(f"{record['train_tokens_per_s']:,.0f} tok/s")
    return "  ".join(parts)


class Trainer:
    """Owns the model, optimizer and schedule of one run; ``fit`` trains to the configured end.

    Under ``torchrun`` the model is wrapped in DDP and every rank runs its own Trainer; they
    take the same decisions (steps, epoch ends, validation, saves) in the same order."""

    def __init__(self, cfg: Config, prepared: Prepared, progress: bool = True) -> None:
        self.cfg = cfg
        self.data = prepared
        self.run_dir = prepared.run_dir
        self.run = RunDir(prepared.run_dir)
        self.metrics_path = self.run.metrics_file
        self.ctx, self.device, self.dtype = distributed.setup_run(
            cfg.runtime, self.run.recorded_precision()
        )
        self.progress = progress and cfg.train.progress and self.ctx.is_main
        seed_everything(cfg.seed)
        tok = prepared.tokenizer
        self.model = build_model(cfg, tok.src_vocab_size, tok.tgt_vocab_size).to(self.device)
        self.optimizer = make_optimizer(self.model, cfg)
        self.state = TrainState()
        if self.run.checkpoint("last").exists():
            self._restore(self.run.load_checkpoint("last", self.device))
        elif self.ctx.rank > 0:
            torch.manual_seed(rank_seed(cfg.seed, self.ctx.rank))  # own dropout masks
        if self.ctx.is_main:  # decided once: distillation and evaluation keep this precision
            self.run.record_precision(self.dtype)
        self.ddp = self._wrap(self.model)
        # target tokens of each training pair (ids + EOS): a step's global count, on every rank
        self._target_lengths = [len(t) + 1 for t in prepared.train.tgt]

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.ctx.enabled:
            return model
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        # the only buffers are constant position tables: no need to broadcast them every step
        no_sync_buffers = {"broadcast_buffers": False}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
            no_sync_buffers = {"forward_sync_buffers": False}  # torch >= 2.13
        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            gradient_as_bucket_view=True,
            **no_sync_buffers,
        )

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
            "precision": hardware.dtype_name(self.dtype),
        }

    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainState(**payload["state"])
        if "precision" in payload:  # a resumed run keeps the precision ``auto`` chose
            self.dtype = hardware.autocast_dtype(payload["precision"], self.device)
        checkpoint.set_rng_state(payload["rng"])
        if self.ctx.enabled:
            states = payload.get("rng_ranks")
            if states is not None and len(states) == self.ctx.world:
                checkpoint.set_rng_state(states[self.ctx.rank])
            elif self.ctx.rank > 0:  # saved by another number of processes
                torch.manual_seed(rank_seed(self.cfg.seed + self.state.step, self.ctx.rank))
        if self.ctx.is_main:
            log.info("resumed %s at step %d", self.run_dir, self.state.step)

    def save(self, best: bool = False) -> None:
        """Write ``last.pt`` (and ``best.pt``) on rank 0; every rank must call it (the RNG states
        of all ranks are gathered into the checkpoint)."""
        states = distributed.gather_objects(checkpoint.rng_state(), self.ctx)
        if not self.ctx.is_main:
            return
        payload = self._payload()
        if self.ctx.enabled:
            payload["rng_ranks"] = states
        self.run.save_checkpoint("last", payload)
        if best:
            self.run.save_checkpoint("best", payload)

    # ------------------------------------------------------------------ training

    def _log(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
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

    def _check_finite(self, loss_sum: torch.Tensor | float) -> None:
        value = float(loss_sum)
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"non-finite training loss ({value}) at step {self.state.step} "
                f"(epoch {self.state.epoch + 1}); training stopped and the last good checkpoint "
                f"was kept in {self.run.checkpoints}. Try a lower train.lr_scale, a longer "
                "train.warmup or runtime.precision=fp32."
            )

    @property
    def batches_per_step(self) -> int:
        """Batches one update consumes over all processes: ``world * train.accumulate``."""
        return self.ctx.world * self.cfg.train.accumulate

    def step_tokens(self, group: Sequence[list[int]]) -> int:
        """Real target tokens of the batches ``group`` (indices into the training split)."""
        lengths = self._target_lengths
        return sum(lengths[i] for indices in group for i in indices)

    def train_step(self, group: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One update on the batches ``group`` (index lists into the training split): this rank
        trains on its share and DDP sums the gradients. Returns this rank's summed loss and NLL
        as detached tensors (no device sync here, except the NaN check on the CPU)."""
        ctx, tokens = self.ctx, self.step_tokens(group)
        mine = distributed.rank_share(group, ctx)
        # every rank runs as many backward passes (DDP's all-reduce is collective): a rank
        # short of batches in an epoch's last step repeats one with weight 0
        passes = -(-len(group) // ctx.world)
        work = [(indices, True) for indices in mine] + [(group[0], False)] * (passes - len(mine))
        self._set_lr()
        self.optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(2, device=self.device)
        for k, (indices, real) in enumerate(work):
            batch = to_device(collate(self.data.train, indices), self.device)
            last = k == len(work) - 1
            with self._no_sync(not last):
                with hardware.autocast(self.device, self.dtype):
                    loss, nll, _ = batch_loss(self.ddp, batch, self.cfg.train.label_smoothing)
                # DDP averages gradients over ranks: loss * world / tokens sums them instead
                (loss * ctx.world / tokens if real else loss * 0.0).backward()
            if real:
                sums += torch.stack([loss.detach(), nll.detach()])
        if self.device.type == "cpu":  # free on the CPU: never step on a non-finite loss
            self._check_finite(distributed.all_reduce_sum(sums[:1].clone(), ctx))
        if self.cfg.train.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_norm)
        self.optimizer.step()
        self.state.step += 1
        return sums[0], sums[1]

    def _no_sync(self, skip: bool):
        """DDP's ``no_sync`` (accumulate locally, all-reduce later) when ``skip``."""
        if skip and self.ctx.enabled:
            return self.ddp.no_sync()
        return contextlib.nullcontext()

    def fit(self) -> dict[str, Any]:
        """Train until ``train.epochs`` epochs or ``train.max_steps`` steps are done."""
        cfg, state, ctx = self.cfg, self.state, self.ctx
        train = self.data.train
        if self._finished():
            return self.summary()
        if ctx.is_main:  # a killed run logged steps after its last checkpoint: they are redone
            drop_metrics_after(self.metrics_path, state.step)
        self.model.train()
        per_step = self.batches_per_step
        batches_per_epoch = len(epoch_batches(train, cfg.train.max_tokens, cfg.seed, state.epoch))
        total = -(-batches_per_epoch // per_step) * cfg.train.epochs
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
                "allocator": active_allocator(),
                "world_size": ctx.world,
                "accumulate": cfg.train.accumulate,
                "max_tokens": cfg.train.max_tokens,
            }
        )
        window = self._new_window()
        sync_every = 1 if self.device.type == "cpu" else cfg.train.log_every
        with progress_bar("train", total, self.progress) as bar:
            bar.advance(state.step)
            while not self._finished():
                batches = epoch_batches(train, cfg.train.max_tokens, cfg.seed, state.epoch)
                bar.set_description(f"epoch {state.epoch + 1}/{cfg.train.epochs}")
                for group in distributed.groups(batches[state.batch_in_epoch :], per_step):
                    t0 = time.perf_counter()
                    tokens = self.step_tokens(group)
                    loss, nll = self.train_step(group)
                    window["sums"] += torch.stack([loss, nll])
                    window["tokens"] += tokens
                    state.batch_in_epoch += len(group)
                    state.train_tokens += tokens
                    status = {}
                    if state.step % sync_every == 0 and self.progress:
                        mine = self.step_tokens(distributed.rank_share(group, ctx))
                        status = {"loss": float(loss) / max(mine, 1)}
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

    def _new_window(self) -> dict[str, Any]:
        sums = torch.zeros(2, device=self.device)
        return {"sums": sums, "tokens": 0, "t0": time.perf_counter()}

    def _log_window(self, window: dict[str, Any]) -> None:
        """Log the loss of the steps since the last log (global: summed over ranks; the only
        place the loss is read from the device on CUDA). Every rank must call it."""
        tokens = max(window["tokens"], 1)
        loss, nll = distributed.all_reduce_sum(window["sums"], self.ctx).tolist()
        elapsed = time.perf_counter() - window["t0"]
        self._check_finite(loss)
        self._log(
            {
                "kind": "train",
                "step": self.state.step,
                "epoch": self.state.epoch + 1,
                "loss": loss / tokens,
                "nll": nll / tokens,
                "ppl": math.exp(min(nll / tokens, 50)),
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
            valid = evaluate_loss(
                self.model, self.data.valid, self.cfg, self.device, self.dtype, self.ctx
            )
            best = valid["loss"] < state.best_valid_loss
            if best:
                state.best_valid_loss = valid["loss"]
            record.update({f"valid_{k}": v for k, v in valid.items()})
        record["train_seconds"] = state.train_seconds
        record["train_tokens_per_s"] = state.train_tokens / max(state.train_seconds, 1e-9)
        self._log(record)
        self.save(best=best or not self.run.checkpoint("best").exists())
        if self.ctx.is_main:
            if self.cfg.train.average_last > 0:
                self._save_average()
            log.info(epoch_line(record, self.cfg.train.epochs))

    def _save_average(self) -> None:
        """Keep this epoch's weights (``epoch<N>.weights.pt``, the last ``train.average_last``
        epochs only) and write their mean, with this run's metadata, to ``average.pt``."""
        keep, epoch, run = self.cfg.train.average_last, self.state.epoch, self.run
        checkpoint.save(run.epoch_weights(epoch), {"model": self.model.state_dict()})
        for e in range(1, epoch - keep + 1):
            run.epoch_weights(e).unlink(missing_ok=True)
        epochs = [e for e in range(epoch - keep + 1, epoch + 1) if run.epoch_weights(e).exists()]
        payload = self._payload()
        del payload["optimizer"]  # a re-scoring checkpoint: resuming always uses last.pt
        payload["model"] = checkpoint.average_weights([run.epoch_weights(e) for e in epochs])
        payload["averaged_epochs"] = epochs
        run.save_checkpoint("average", payload)

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
            "world_size": self.ctx.world,
        }


def train(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Prepare the data (if needed) and train the teacher of ``cfg``; resume if possible.

    Under ``torchrun``, rank 0 prepares the run folder first; the other ranks then read it."""
    ctx, _ = distributed.setup(hardware.resolve_device(cfg.runtime.device))
    with distributed.main_first(ctx):
        prepared = prepare(cfg, record=ctx.is_main)
    trainer = Trainer(cfg, prepared, progress=progress)
    return trainer.fit()
