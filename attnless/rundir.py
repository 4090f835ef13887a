"""The run folder: every path in it, and the loads and saves of what it holds.

::

    <run>/config.yaml  versions.json  data.json        the run's settings, versions, data summary
    <run>/spm.model (or spm.src.model + spm.tgt.model)  tokenizer.json
    <run>/metrics.jsonl                                training log
    <run>/checkpoints/{last,best,average}.pt           the teacher (last: to resume)
    <run>/checkpoints/epoch<N>.weights.pt              weights averaged into average.pt
    <run>/students/metrics.jsonl                       distillation log
    <run>/students/<site>/<method>-<size>/<key>/       the students of one family and settings
        settings.json  layer<i>.pt  sweep.json         (key: a hash of the settings)
    <run>/eval/<variant>/<split>.<decode>.{hyp.txt,scores.json}

Training, distillation, evaluation, the command line and sweeps find their files through
:class:`RunDir`, and never build these paths themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from attnless import checkpoint, hardware
from attnless.config import CHECKPOINTS
from attnless.model.sites import ReplacementError
from attnless.replacement import Family
from attnless.runs import fingerprint, read_json, versions, write_json, write_text
from attnless.students import StudentSpec, settings_diff, state_fingerprint


@functools.cache
def _checkpoint_precision(path: str, mtime_ns: int) -> str | None:
    """The precision recorded in a teacher checkpoint (cached per file version)."""
    return checkpoint.load(path).get("precision")


if TYPE_CHECKING:
    from attnless.config import Config
    from attnless.data.tokenizer import Tokenizer
    from attnless.model import Seq2SeqTransformer

TEACHER = "teacher"  # the evaluation folder of the best teacher checkpoint

_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def _run_path(*parts: str, doc: str | None = None) -> property:
    """A read-only property of :class:`RunDir`: the path ``root / parts[0] / ...``."""

    def get(run: RunDir) -> Path:
        return run.root.joinpath(*parts)

    return property(get, doc=doc)


@dataclass(frozen=True)
class StudentFolder:
    """``<run>/students/<site>/<method>-<size>/<key>/``: the students (one file per layer) of
    one family distilled with one set of settings, the settings, and a sweep's marker."""

    path: Path

    def layer(self, index: int) -> Path:
        return self.path / f"layer{index}.pt"

    @property
    def settings_file(self) -> Path:
        return self.path / "settings.json"

    @property
    def marker_file(self) -> Path:
        """``sweep.json``: the layers a sweep distilled here, and what it cost."""
        return self.path / "sweep.json"

    def has(self, layers: list[int]) -> bool:
        return all(self.layer(i).is_file() for i in layers)

    def read_marker(self) -> dict[str, Any]:
        """The sweep marker; empty if missing or corrupt."""
        try:
            return read_json(self.marker_file) or {}
        except ValueError:
            return {}

    def write_marker(self, record: dict[str, Any]) -> None:
        write_json(self.marker_file, record)

    def saved_settings(self) -> dict[str, Any] | None:
        try:
            saved = (read_json(self.settings_file) or {}).get("settings")
        except ValueError:
            return None
        return saved if isinstance(saved, dict) else None


@dataclass(frozen=True)
class RunDir:
    """One run folder (see the module's docstring for its layout)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, cfg: Config) -> RunDir:
        return cls(cfg.run_dir())

    def __str__(self) -> str:
        return str(self.root)

    def __fspath__(self) -> str:
        return str(self.root)

    # ---------------------------------------------------------------- the run's own files

    config_file = _run_path("config.yaml")
    data_file = _run_path("data.json")
    metrics_file = _run_path("metrics.jsonl")

    def record(self, config_text: str) -> None:
        """Write the run's config (YAML text) and the package versions."""
        write_text(self.config_file, config_text)
        write_json(self.root / "versions.json", versions())

    def tokenizer(self) -> Tokenizer:
        from attnless.data.tokenizer import Tokenizer

        return Tokenizer.load(self.root)

    # ---------------------------------------------------------------- runtime record

    runtime_file = _run_path(
        "runtime.json", doc="``runtime.json``: the precision the teacher was trained in."
    )

    def record_precision(self, dtype: torch.dtype | None) -> None:
        """Record that this run's teacher is trained in ``dtype`` (None: fp32)."""
        write_json(self.runtime_file, {"precision": hardware.dtype_name(dtype)})

    def recorded_precision(self) -> str | None:
        """``bf16`` or ``fp32``: the precision the teacher was trained in, from
        ``runtime.json`` or, for runs trained before that file, a checkpoint's metadata; None
        for a run without either."""
        try:
            record = read_json(self.runtime_file) or {}
        except ValueError:  # corrupt: the checkpoints still know
            record = {}
        if record.get("precision") in ("bf16", "fp32"):
            return record["precision"]
        for name in ("last", "best", "average"):
            path = self.checkpoint(name)
            if path.is_file():
                return _checkpoint_precision(str(path), path.stat().st_mtime_ns)
        return None

    # ---------------------------------------------------------------- teacher checkpoints

    checkpoints = _run_path("checkpoints")

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/<which>.pt`` (``best``, ``last`` or ``average``)."""
        return self.checkpoints / f"{which}.pt"

    def epoch_weights(self, epoch: int) -> Path:
        """The weights of epoch ``epoch`` kept for ``average.pt``."""
        return self.checkpoints / f"epoch{epoch}.weights.pt"

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.checkpoints.glob("*.pt"))

    def save_checkpoint(self, which: str, payload: dict[str, Any]) -> None:
        checkpoint.save(self.checkpoint(which), payload)

    def load_checkpoint(self, which: str, device: torch.device | str = "cpu") -> dict[str, Any]:
        """The payload of teacher checkpoint ``which``; a missing one is an error that names
        the checkpoints this run has."""
        path = self.checkpoint(which)
        if not path.is_file():
            have = [name for name in CHECKPOINTS if self.checkpoint(name).is_file()]
            hint = (
                " (average.pt is written when train.average_last > 0)" if which == "average" else ""
            )
            raise FileNotFoundError(
                f"{path}: checkpoint not found{hint}; this run has: "
                f"{', '.join(have) or 'none (train it first)'}"
            )
        return checkpoint.load(path, device)

    def load_teacher(
        self, which: str = "best", device: torch.device | str = "cpu"
    ) -> tuple[Seq2SeqTransformer, dict[str, Any]]:
        """The teacher of checkpoint ``which`` (eval mode), built from the checkpoint's own
        config, and the checkpoint's payload."""
        from attnless import config as config_mod
        from attnless.model import build_model

        payload = self.load_checkpoint(which, device)
        cfg = config_mod.from_dict(payload["config"], str(self.checkpoint(which)))
        state = payload["model"]
        src_vocab = state["encoder.embed.tokens.weight"].size(0)
        tgt_vocab = state["decoder.embed.tokens.weight"].size(0)
        model = build_model(cfg, src_vocab, tgt_vocab).to(device)
        model.load_state_dict(state)
        model.eval()
        return model, payload

    def teacher_fingerprint(self, which: str) -> str | None:
        """The :func:`~attnless.students.state_fingerprint` of the weights of teacher checkpoint
        ``which`` (None while there is none), computed once per file version."""
        path = self.checkpoint(which)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key not in _FINGERPRINTS:
            _FINGERPRINTS[key] = state_fingerprint(checkpoint.load(path)["model"])
        return _FINGERPRINTS[key]

    # ---------------------------------------------------------------- students

    students = _run_path("students")
    student_metrics_file = _run_path("students", "metrics.jsonl")

    def family_root(self, family: Family) -> Path:
        """The folder of every student of ``family``, one sub-folder per setting."""
        site, method, size = family
        return self.students / site / f"{method}-{size}"

    def student_folder(self, settings: Mapping[str, Any]) -> StudentFolder:
        """The folder of the students with ``settings`` (:func:`attnless.students.
        student_settings`), named by a hash of them."""
        family = Family(settings["site"], settings["method"], settings["size"])
        return StudentFolder(self.family_root(family) / fingerprint(dict(settings), 10))

    def student_checkpoints(self) -> list[tuple[StudentSpec, Path]]:
        """Every student checkpoint of the run (of any settings), with the student it holds."""
        out = []
        for path in sorted(self.students.glob("*/*/*/layer*.pt")):
            method, _, size = path.parents[1].name.rpartition("-")
            layer = int(path.stem.removeprefix("layer"))
            out.append((StudentSpec(path.parents[2].name, method, size, layer), path))
        return out

    def other_settings(self, settings: Mapping[str, Any]) -> list[str]:
        """Lines naming the folders of the same family distilled with other settings and how
        those differ from ``settings`` (old -> new)."""
        root = self.family_root(Family(settings["site"], settings["method"], settings["size"]))
        lines = []
        if any(root.glob("layer*.pt")):
            lines.append(f"{root}: students from before settings were recorded (not used)")
        for folder in sorted(p for p in root.glob("*") if p.is_dir()):
            saved = StudentFolder(folder).saved_settings()
            if saved is not None and saved != settings:
                lines.append(f"{folder}: {', '.join(settings_diff(saved, settings))}")
        return lines

    def save_student(self, settings: Mapping[str, Any], layer: int, payload: dict) -> None:
        """Write the student of ``settings`` at ``layer`` (and, first, the folder's settings)."""
        folder = self.student_folder(settings)
        if not folder.settings_file.exists():
            write_json(folder.settings_file, {"settings": dict(settings)})
        checkpoint.save(folder.layer(layer), payload)

    def load_student(
        self,
        settings: Mapping[str, Any],
        layer: int,
        device: torch.device | str = "cpu",
        processes: int | None = None,
        whose: str = "the request's",
    ) -> dict[str, Any]:
        """The checkpoint of the student of ``settings`` at ``layer``, checked to have been
        distilled with exactly those settings (and, given ``processes``, by that many
        processes): a file copied or moved by hand is a ReplacementError naming what differs
        from ``whose`` settings (old -> new)."""
        path = self.student_folder(settings).layer(layer)
        payload = checkpoint.load(path, device)
        meta = payload.get("meta", {})
        wanted = {**settings, "layer": layer}
        saved = {**meta.get("settings", {}), "layer": meta.get("layer")}
        if processes is not None:
            wanted["processes"], saved["processes"] = processes, meta.get("processes")
        diffs = settings_diff(saved, wanted)
        if diffs:
            raise ReplacementError(
                f"{path}: distilled with other settings than {whose} (old -> new): "
                f"{', '.join(diffs)}; delete it, or run with its settings"
            )
        return payload

    # ---------------------------------------------------------------- evaluation

    evaluations = _run_path("eval")

    @staticmethod
    def teacher_variant(which: str) -> str:
        """The evaluation folder name of teacher checkpoint ``which``: ``teacher`` for the best
        one, else ``teacher.<which>``."""
        return TEACHER if which == "best" else f"{TEACHER}.{which}"

    def eval_dir(self, variant: str) -> Path:
        return self.evaluations / variant

    def eval_files(self, variant: str, tag: str) -> tuple[Path, Path]:
        """The hypotheses and the scores of ``variant`` on ``tag`` (``<split>.<decode>``)."""
        folder = self.eval_dir(variant)
        return folder / f"{tag}.hyp.txt", folder / f"{tag}.scores.json"

    def write_eval(self, variant: str, tag: str, hyps: list[str], result: dict) -> None:
        hyp_file, scores_file = self.eval_files(variant, tag)
        write_text(hyp_file, "".join(h + "\n" for h in hyps))
        write_json(scores_file, result)

    def read_scores(self, variant: str, tag: str) -> dict[str, Any] | None:
        return read_json(self.eval_files(variant, tag)[1])
