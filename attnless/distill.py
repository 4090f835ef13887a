"""``attnless distill``: train replacement networks against the frozen teacher, online.

One teacher forward pass per batch captures, with forward hooks, the input and output of every
requested site (any layers, any mix of methods and sizes); every student that learns from a
captured site then takes its step on those tensors. Nothing is written to disk but the
students' checkpoints. Each student is trained independently on the teacher's own activations
(the paper's per-layer training) with MSE over the non-padded elements.

Students live in ``<run>/students/<site>/<method>-<size>/<key>/layer<i>.pt``, where ``<key>``
is a hash of everything that decides a student's weights (:func:`student_settings`: method,
size, n, learning rate, batches, epochs, seed, precision, the cross-attention causal flag and
the teacher's weights), spelled out in the folder's ``settings.json``. A job with other settings
therefore never resumes or reuses another job's students: it trains its own, in its own folder.
Each checkpoint holds the network, its optimizer, its training position and its settings, and is
written atomically at every epoch end, so an interrupted job resumes where it stopped.

A student update consumes ``world * distill.accumulate`` consecutive batches of the epoch's
order (``world`` processes under ``torchrun``, rank ``r`` taking batches ``r, r + world, ...``);
its loss is the squared error summed over those batches divided by their global number of real
elements, counted on the host from the sentence lengths. Each rank runs the teacher on its own
batches; the students' gradients are summed over the ranks with one asynchronous all-reduce per
student, overlapping the next students' backward passes. Only rank 0 writes. On CUDA nothing in
the loop waits for the device except every ``distill.log_every`` steps, when losses are logged.

A student with no parameters (``fnet``, ``meanpool``) has nothing to train: it gets no
optimizer and takes no step; it is validated once and saved (epoch 0, step 0), so that hybrid
evaluation finds it like any other student.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnless import distributed, hardware
from attnless.config import Config, ConfigError
from attnless.data.batching import Batch, collate, fit_length, sentence_batches
from attnless.model import count_parameters
from attnless.model.sites import Method, get_method, get_module
from attnless.prepare import Prepared, prepare
from attnless.progress import progress_bar
from attnless.replacement import LayerSet, Replacement, from_config, to_config
from attnless.rundir import RunDir
from attnless.runs import append_jsonl, versions
from attnless.students import (
    StudentSpec,
    build_student,
    expand_specs,
    state_fingerprint,
    student_settings,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- capture


class Capture:
    """Forward hooks that record (args, output) of teacher modules for one forward pass."""

    def __init__(self, model: nn.Module, paths: list[str]) -> None:
        self.records: dict[str, tuple[tuple, Tensor]] = {}
        self._handles = [
            get_module(model, path).register_forward_hook(self._hook(path)) for path in paths
        ]

    def _hook(self, path: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            self.records[path] = (args, output.detach())

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def masked_mse(prediction: Tensor, target: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of squared errors over real positions, and the number of real elements."""
    diff = (prediction.float() - target.float()) * keep[..., None]
    return diff.square().sum(), keep.sum() * target.size(-1)


def student_backward(
    net: nn.Module,
    args: tuple,
    target: Tensor,
    count: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> Tensor:
    """Forward ``net`` on captured ``args`` (under autocast), backpropagate the squared error
    against ``target`` over the real positions divided by ``count`` (the real elements of the
    whole update), and return that loss, detached. Gradients accumulate; the caller zeroes
    them and steps the optimizer."""
    net.train()
    with hardware.autocast(device, dtype):
        prediction = net(*args)
    sse, _ = masked_mse(prediction, target, args[1].keep)
    loss = sse / count
    loss.backward()
    return loss.detach()


def make_student_optimizer(net: nn.Module, lr: float, cfg: Config) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over parameters, gradients and moments; on the CPU
    several times faster than ``foreach`` for the multi-million-parameter students)."""
    d = cfg.distill
    return torch.optim.Adam(net.parameters(), lr=lr, betas=d.betas, eps=d.eps, fused=True)


# --------------------------------------------------------------------------- students


@dataclass
class Student:
    spec: StudentSpec
    method: Method
    module_path: str
    net: nn.Module
    optimizer: torch.optim.Optimizer | None  # None: no parameters, nothing to train
    settings: dict[str, Any]
    path: Path  # its checkpoint
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def position(self) -> tuple[int, int]:
        return self.epoch, self.batch_in_epoch

    @property
    def params(self) -> list[nn.Parameter]:
        return list(self.net.parameters())


class Distiller:
    """Trains a set of students from one frozen teacher, sharing every teacher pass: those of
    ``replacements`` at ``layers`` (default: ``cfg.distill``'s)."""

    def __init__(
        self,
        cfg: Config,
        prepared: Prepared,
        progress: bool = True,
        replacements: Sequence[Replacement] | None = None,
        layers: LayerSet | None = None,
    ) -> None:
        if replacements is None or layers is None:
            replacements, layers = from_config(cfg.distill)
        else:  # the config the students record names them
            cfg = copy.deepcopy(cfg)
            to_config(cfg.distill, replacements, layers)
        self.cfg = cfg
        self.run_dir = prepared.run_dir
        self.run = RunDir(prepared.run_dir)
        self.ctx, self.device, self.dtype = distributed.setup_run(
            cfg.runtime, self.run.recorded_precision()
        )
        self.progress = progress and cfg.distill.progress and self.ctx.is_main
        self.teacher, payload = self.run.load_teacher(cfg.distill.teacher_checkpoint, self.device)
        self.teacher_step = payload["state"]["step"]
        self.teacher_hash = state_fingerprint(payload["model"])
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        n = cfg.distill.n
        self.train_data = fit_length(prepared.train, n)
        self.valid_data = fit_length(prepared.valid, n)
        if not len(self.train_data):
            raise ConfigError(f"distill.n={n}: no training pair fits {n} positions")
        specs = expand_specs(replacements, layers, self.teacher)
        self.students = [self._make_student(spec) for spec in specs]
        for folder in dict.fromkeys(s.path.parent for s in self.students):
            log.info("students in %s", folder)
        self.metrics_path = self.run.student_metrics_file
        self.encoder_only = all(s.spec.site.startswith("encoder") for s in self.students)

    def _make_student(self, spec: StudentSpec) -> Student:
        torch.manual_seed(self.cfg.seed * 1_000_003 + zlib.crc32(spec.key.encode()))
        method = get_method(spec.site, spec.method)
        net = build_student(spec, self.cfg).to(self.device)
        settings = student_settings(self.cfg, spec.family, self.teacher_hash)
        trainable = count_parameters(net) > 0
        optimizer = make_student_optimizer(net, settings["lr"], self.cfg) if trainable else None
        path = self.run.student_folder(settings).layer(spec.layer)
        student = Student(spec, method, method.path(spec.layer), net, optimizer, settings, path)
        if path.exists():  # resume it, if it was distilled with these settings
            payload = self.run.load_student(
                settings, spec.layer, self.device, processes=self.ctx.world, whose="this job's"
            )
            net.load_state_dict(payload["student"])
            if optimizer is not None:
                optimizer.load_state_dict(payload["optimizer"])
            student.epoch, student.batch_in_epoch, student.step = payload["position"]
            student.history = payload.get("history", [])
        return student

    # ---------------------------------------------------------------- persistence

    def save(self, student: Student) -> None:
        """Write ``student``'s checkpoint (rank 0 only)."""
        if not self.ctx.is_main:
            return
        payload = {
            "student": student.net.state_dict(),
            "optimizer": student.optimizer.state_dict() if student.optimizer else None,
            "position": (student.epoch, student.batch_in_epoch, student.step),
            "meta": {
                "settings": student.settings,
                "layer": student.spec.layer,
                "processes": self.ctx.world,
                "params": count_parameters(student.net),
                "teacher": {
                    "checkpoint": self.cfg.distill.teacher_checkpoint,
                    "step": self.teacher_step,
                    "sha256": self.teacher_hash,
                },
            },
            "history": student.history,
            "config": self.cfg.to_dict(),
            "versions": versions(),
        }
        self.run.save_student(student.settings, student.spec.layer, payload)

    def _log(self, record: dict[str, Any]) -> None:
        if self.ctx.is_main:
            append_jsonl(self.metrics_path, record)

    # ---------------------------------------------------------------- training

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def _teacher_pass(self, batch) -> dict[str, tuple[tuple, Tensor]]:
        paths = sorted({s.module_path for s in self.students})
        capture = Capture(self.teacher, paths)
        try:
            with torch.no_grad(), hardware.autocast(self.device, self.dtype):
                if self.encoder_only:
                    self.teacher.encoder(batch.src)
                else:
                    self.teacher(batch.src, batch.tgt_in)
        finally:
            capture.close()
        return capture.records

    def _real_tokens(self, group: list[list[int]]) -> dict[str, int]:
        """Real positions of the batches ``group`` on each side (the students' MSE count per
        model dimension): source tokens, and decoder inputs (BOS + target tokens)."""
        data = self.train_data
        return {
            "encoder": sum(len(data.src[i]) for indices in group for i in indices),
            "decoder": sum(len(data.tgt[i]) + 1 for indices in group for i in indices),
        }

    def train_step(self, learners: list[Student], group: list[list[int]]) -> dict[str, Tensor]:
        """One update of every student in ``learners`` on the batches ``group`` (this rank
        takes its share); returns each student's loss on this rank's batches (the global loss
        is their sum over ranks), as tensors: nothing here waits for the device."""
        ctx = self.ctx
        mine = distributed.rank_share(group, ctx)
        real = self._real_tokens(group)
        for student in learners:
            student.optimizer.zero_grad(set_to_none=True)
        losses = {s.spec.key: torch.zeros((), device=self.device) for s in learners}
        pending = []

        def update(student: Student) -> None:
            student.optimizer.step()
            student.step += 1

        for k, indices in enumerate(mine):
            records = self._teacher_pass(self._to_device(collate(self.train_data, indices)))
            last = k == len(mine) - 1
            for student in learners:
                args, target = records[student.module_path]
                side = "encoder" if student.spec.site.startswith("encoder") else "decoder"
                count = real[side] * target.size(-1)
                losses[student.spec.key] += student_backward(
                    student.net, args, target, count, self.device, self.dtype
                )
                if last and ctx.enabled:  # sum over ranks while the next students train
                    pending.append((student, distributed.all_reduce_grads(student.params, ctx)))
                elif last:
                    update(student)
            del records
        if not mine:  # no batch for this rank in the epoch's last step: contribute zeros
            pending = [(s, distributed.all_reduce_grads(s.params, ctx)) for s in learners]
        for student, finish in pending:
            finish()
            update(student)
        return losses

    def _finished(self, student: Student) -> bool:
        d = self.cfg.distill
        if student.optimizer is None:  # no parameters: nothing to train
            return True
        return student.epoch >= d.epochs or (
            d.max_steps is not None and student.step >= d.max_steps
        )

    def fit(self) -> dict[str, Any]:
        """Train every student to ``distill.epochs`` (or ``distill.max_steps``)."""
        d, seed = self.cfg.distill, self.cfg.seed
        # parameter-free students: validated and saved once (no training), so that they can
        # be evaluated like the others
        self._end_epoch([s for s in self.students if s.optimizer is None and not s.history])
        active = [s for s in self.students if not self._finished(s)]
        if not active:
            return self.summary()
        per_step = self.ctx.world * d.accumulate
        epoch, batch_index = min(s.position() for s in active)
        per_epoch = -(-len(sentence_batches(self.train_data, d.batch_size, seed, 0)) // per_step)
        total = per_epoch * d.epochs - (epoch * per_epoch + batch_index // per_step)
        if d.max_steps is not None:
            total = min(total, d.max_steps - min(s.step for s in active))
        start = time.perf_counter()
        losses: dict[str, Tensor] = {}
        shown: dict[str, float] = {}
        every_step = self.device.type == "cpu" and self.progress  # reading a loss is free there
        with progress_bar("distill", total, self.progress) as bar:
            while active:
                batches = sentence_batches(self.train_data, d.batch_size, seed, epoch)
                bar.set_description(f"distill epoch {epoch + 1}/{d.epochs}")
                while True:
                    waiting = [
                        s
                        for s in active
                        if s.epoch == epoch
                        and s.batch_in_epoch < len(batches)
                        and not self._finished(s)
                    ]
                    if not waiting:
                        break
                    # students at the earliest position step together, sharing teacher passes
                    index = min(s.batch_in_epoch for s in waiting)
                    learners = [s for s in waiting if s.batch_in_epoch == index]
                    group = batches[index : index + per_step]
                    losses.update(self.train_step(learners, group))
                    for student in learners:
                        student.batch_in_epoch += len(group)
                    if learners[0].step % d.log_every == 0:
                        shown.update(self._log_losses(learners, losses, epoch))
                    elif every_step:
                        shown.update({s.spec.key: float(losses[s.spec.key]) for s in learners})
                    bar.advance(1, **_short_losses(shown))
                ended = [s for s in active if s.position() == (epoch, len(batches))]
                for student in ended:
                    student.epoch, student.batch_in_epoch = epoch + 1, 0
                self._end_epoch(ended)
                for student in active:
                    if student not in ended and self._finished(student):
                        self.save(student)  # stopped by distill.max_steps within the epoch
                active = [s for s in active if not self._finished(s)]
                epoch += 1
        self._log({"kind": "distill_done", "seconds": time.perf_counter() - start})
        return self.summary()

    def _log_losses(
        self, learners: list[Student], losses: dict[str, Tensor], epoch: int
    ) -> dict[str, float]:
        """Log the learners' last losses (summed over ranks: every rank must call this); the
        only place the losses are read from the device."""
        stacked = torch.stack([losses[s.spec.key].float() for s in learners])
        values = distributed.all_reduce_sum(stacked, self.ctx).tolist()
        for student, value in zip(learners, values):
            self._log(
                {
                    "kind": "distill",
                    "student": student.spec.key,
                    "epoch": epoch + 1,
                    "step": student.step,
                    "mse": value,
                }
            )
        return {s.spec.key: v for s, v in zip(learners, values)}

    def _end_epoch(self, students: list[Student]) -> None:
        """Validate the students that finished an epoch (one shared pass), log, save."""
        if not students:
            return
        valid = {}
        if self.cfg.distill.validate_every_epoch and len(self.valid_data):
            valid = self.validate(students)
        for student in students:
            record: dict[str, Any] = {"epoch": student.epoch, "step": student.step}
            if student.spec.key in valid:
                record["valid_mse"] = valid[student.spec.key]
            student.history.append(record)
            self._log({"kind": "distill_epoch", "student": student.spec.key, **record})
            self.save(student)
        if self.ctx.is_main:
            mse = "  ".join(
                f"{s.spec.key.split('.', 2)[-1]} {valid[s.spec.key]:.4g}"
                for s in students
                if s.spec.key in valid
            )
            log.info(
                f"distill epoch {students[0].epoch}/{self.cfg.distill.epochs}  "
                f"{len(students)} students" + (f"  valid mse {mse}" if mse else "")
            )

    @torch.no_grad()
    def validate(self, students: list[Student] | None = None) -> dict[str, float]:
        """MSE over the non-padded elements of the valid split, per student (each rank takes
        its share of the batches; the sums are all-reduced)."""
        students = students or self.students
        totals = torch.zeros(len(students), 2, dtype=torch.float64, device=self.device)
        batches = sentence_batches(self.valid_data, self.cfg.distill.batch_size, 0, None)
        for indices in distributed.rank_share(batches, self.ctx):
            records = self._teacher_pass(self._to_device(collate(self.valid_data, indices)))
            for j, student in enumerate(students):
                args, target = records[student.module_path]
                student.net.eval()
                with hardware.autocast(self.device, self.dtype):
                    prediction = student.net(*args)
                sse, count = masked_mse(prediction, target, args[1].keep)
                totals[j, 0] += sse.double()
                totals[j, 1] += count
        values = distributed.all_reduce_sum(totals, self.ctx).tolist()
        return {s.spec.key: sse / max(count, 1) for s, (sse, count) in zip(students, values)}

    def summary(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "precision": hardware.dtype_name(self.dtype),
            "students": {
                s.spec.key: {
                    "epoch": s.epoch,
                    "step": s.step,
                    "folder": str(s.path.parent),
                    "params": count_parameters(s.net),
                    "valid_mse": next(
                        (h["valid_mse"] for h in reversed(s.history) if "valid_mse" in h), math.nan
                    ),
                }
                for s in self.students
            },
        }


def _short_losses(losses: dict[str, float]) -> dict[str, float]:
    return {key.split(".", 2)[-1]: value for key, value in losses.items()}


def distill(
    cfg: Config,
    progress: bool = True,
    replacements: Sequence[Replacement] | None = None,
    layers: LayerSet | None = None,
) -> dict[str, Any]:
    """Distil the students of ``replacements`` at ``layers`` (default: those ``cfg.distill``
    names) from the teacher of ``cfg``'s run folder."""
    ctx, _ = distributed.setup(hardware.resolve_device(cfg.runtime.device))
    with distributed.main_first(ctx):
        prepared = prepare(cfg, record=False)
    return Distiller(cfg, prepared, progress, replacements, layers).fit()
