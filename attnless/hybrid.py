"""Hybrid models: the teacher with distilled students installed at the requested sites.

The students are looked up by the settings of the request and by the teacher's weights
(:func:`attnless.students.student_settings`), so a student distilled with other settings, or
from another teacher, is never installed: a missing student is a clear error that names the
folders distilled with other settings and how those differ (old -> new), and changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from attnless.config import Config
from attnless.model import Seq2SeqTransformer, count_parameters
from attnless.model.sites import ReplacementError, get_method, install
from attnless.replacement import LayerSet, Replacement
from attnless.rundir import RunDir
from attnless.students import (
    StudentSpec,
    build_student,
    expand_specs,
    state_fingerprint,
    student_settings,
)


@dataclass
class Hybrid:
    model: Seq2SeqTransformer
    specs: list[StudentSpec]
    n: int
    student_params: int = 0
    replaced_params: int = 0
    by_site: dict[str, dict[str, Any]] = field(default_factory=dict)

    def _capped(self) -> list[StudentSpec]:
        """The students that read at most ``n`` positions (the length-free ones read any)."""
        return [s for s in self.specs if get_method(s.site, s.method).fixed_length]

    @property
    def encoder_side(self) -> bool:
        """Whether the source must fit ``n`` positions (length-capped encoder or cross
        replacements)."""
        return any(s.site in ("encoder.self", "decoder.cross") for s in self._capped())

    @property
    def decoder_side(self) -> bool:
        """Whether the decoder input must fit ``n`` positions (length-capped decoder
        replacements)."""
        return any(s.site.startswith("decoder") for s in self._capped())


def load_student(
    spec: StudentSpec, cfg: Config, teacher_hash: str, teacher_step: int, device
) -> nn.Module:
    """Load the student of ``spec`` distilled with ``cfg``'s settings from the teacher whose
    weights have the :func:`state_fingerprint` ``teacher_hash`` (at ``teacher_step``)."""
    run = RunDir.of(cfg)
    settings = student_settings(cfg, spec.family, teacher_hash)
    path = run.student_folder(settings).layer(spec.layer)
    if not path.is_file():
        others = run.other_settings(settings)
        raise ReplacementError(
            f"{path}: no student for {spec.key} distilled with these settings from this "
            f"teacher ({cfg.distill.teacher_checkpoint} checkpoint, step {teacher_step}, "
            f"weights {teacher_hash}); run `attnless distill` with "
            f"--replace {spec.site}={spec.method}:{spec.size} and the same --set options first"
            + "".join(f"\n  other settings (old -> new): {line}" for line in others)
        )
    payload = run.load_student(settings, spec.layer, device)
    student = build_student(spec, cfg)
    try:
        student.load_state_dict(payload["student"])
    except RuntimeError as err:
        raise ReplacementError(f"{path}: weights do not fit the student ({err})") from None
    return student.to(device)


def build_hybrid(
    teacher: Seq2SeqTransformer,
    teacher_step: int,
    cfg: Config,
    replacements: Sequence[Replacement],
    layers: LayerSet,
) -> Hybrid:
    """A copy of ``teacher`` with the students of ``replacements`` at ``layers`` installed."""
    specs = expand_specs(replacements, layers, teacher)
    seen: dict[tuple[str, int], StudentSpec] = {}
    for spec in specs:
        other = seen.setdefault((spec.site, spec.layer), spec)
        if other is not spec:
            raise ReplacementError(
                f"two replacements for {spec.site} layer {spec.layer}: "
                f"{other.method}:{other.size} and {spec.method}:{spec.size}; give one per site"
            )
    paths = {spec: get_method(spec.site, spec.method).path(spec.layer) for spec in specs}
    for a in specs:
        for b in specs:
            if a is not b and paths[b].startswith(paths[a] + "."):
                raise ReplacementError(
                    f"{a.key} replaces {paths[a]}, which contains {paths[b]} ({b.key})"
                )
    device = next(teacher.parameters()).device
    teacher_hash = state_fingerprint(teacher.state_dict())
    students = {spec: load_student(spec, cfg, teacher_hash, teacher_step, device) for spec in specs}
    model = copy.deepcopy(teacher)
    hybrid = Hybrid(model, specs, cfg.distill.n)
    for spec in sorted(specs, key=lambda s: -len(paths[s])):
        original = install(model, paths[spec], students[spec])
        site = hybrid.by_site.setdefault(
            spec.site, {"method": spec.method, "size": spec.size, "layers": [], "params": 0}
        )
        site["layers"].append(spec.layer)
        site["params"] += count_parameters(students[spec])
        site["replaced_params"] = site.get("replaced_params", 0) + count_parameters(original)
        hybrid.student_params += count_parameters(students[spec])
        hybrid.replaced_params += count_parameters(original)
    model.eval()
    return hybrid


def finetune(hybrid: Hybrid, cfg: Config, prepared, epochs: int, progress: bool) -> dict:
    """Train the whole hybrid end to end on the training split (beyond the paper).

    Uses the teacher's objective (label-smoothed cross-entropy) with Adam at a constant
    learning rate of ``distill.lr`` (default 1e-4), on pairs that fit ``n`` positions.
    """
    from attnless import hardware
    from attnless.data.batching import collate, epoch_batches, fit_length
    from attnless.model.loss import batch_loss
    from attnless.progress import progress_bar

    model = hybrid.model
    device = next(model.parameters()).device
    dtype = hardware.run_dtype(cfg.runtime.precision, RunDir.of(cfg).recorded_precision(), device)
    data = fit_length(prepared.train, hybrid.n)
    d = cfg.distill
    optimizer = torch.optim.Adam(
        model.parameters(), lr=d.lr or 1e-4, betas=d.betas, eps=d.eps, foreach=True
    )
    torch.manual_seed(cfg.seed)
    model.train()
    losses = []
    total = sum(
        len(epoch_batches(data, cfg.train.max_tokens, cfg.seed, 1000 + e)) for e in range(epochs)
    )
    with progress_bar("fine-tune", total, progress) as bar:
        for epoch in range(epochs):
            for indices in epoch_batches(data, cfg.train.max_tokens, cfg.seed, 1000 + epoch):
                batch = collate(data, indices).to(device)
                with hardware.autocast(device, dtype):
                    loss, _, tokens = batch_loss(model, batch, cfg.train.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                (loss / tokens).backward()
                optimizer.step()
                losses.append(float(loss.detach()) / int(tokens))
                bar.advance(1, loss=losses[-1])
    model.eval()
    return {"finetune_epochs": epochs, "finetune_final_loss": losses[-1] if losses else None}


def describe(hybrid: Hybrid) -> dict[str, Any]:
    return {
        "replacements": hybrid.by_site,
        "student_params": hybrid.student_params,
        "replaced_params": hybrid.replaced_params,
        "params_ratio": hybrid.student_params / max(hybrid.replaced_params, 1),
        "n": hybrid.n,
    }
