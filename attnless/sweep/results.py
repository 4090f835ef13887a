"""Writing a sweep's ``results.jsonl``: the lines of teachers and cells, appended as they finish.

Reading them back is :mod:`attnless.results` (the report reads them without the sweep).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from attnless.config import Config
from attnless.hardware import describe_machine, resolve_device
from attnless.results import scores_of
from attnless.runs import append_jsonl, git_revision, versions
from attnless.sweep.cells import Cell, Family
from attnless.sweep.spec import Spec

HOST = socket.gethostname()


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append a record; first end a line a killed writer may have left unterminated."""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                try:
                    os.write(fd, b"\n")
                finally:
                    os.close(fd)
    append_jsonl(path, record)


def _config_record(cfg: Config) -> dict[str, Any]:
    """``cfg`` as recorded in a result (without its folder)."""
    values = cfg.to_dict()
    values.pop("dir", None)
    return values


def timestamp() -> str:
    """The local time, as recorded in ``finished_at``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def teacher_record(
    spec: Spec,
    cell: Cell,
    summary: dict[str, Any],
    scores: dict[str, dict[str, Any]],
    wall_seconds: float,
    train_wall_seconds: float,
) -> dict[str, Any]:
    """The line of a trained and scored teacher: ``summary`` of its training, ``scores`` per
    evaluation split (the first split's are the main ones)."""
    cfg = cell.config
    main = scores[cfg.eval.splits[0]]
    return {
        "kind": "teacher",
        "teacher_id": cell.teacher,
        "sweep": spec.name,
        "preset": spec.preset,
        "corpus": cell.corpus,
        "direction": cell.direction,
        "run_dir": str(cfg.run_dir()),
        "checkpoint": cfg.distill.teacher_checkpoint,
        "step": main.get("step", summary["step"]),
        "epochs": summary["epoch"],
        "params": summary["params"],
        "device": summary["device"],
        "precision": summary["precision"],
        "tokens_per_s": summary["tokens_per_s"],
        "machine": describe_machine(resolve_device(cfg.runtime.device)),
        "train_seconds": summary["train_seconds"],
        "wall_seconds": wall_seconds,
        "train_wall_seconds": train_wall_seconds,
        **scores_of(main),
        "scores": {s: scores_of(v) for s, v in scores.items()},
        "seed": cfg.seed,
        "config": _config_record(cfg),
        "versions": versions(),
        "finished_at": timestamp(),
        "host": HOST,
        "pid": os.getpid(),
    }


def cell_record(
    spec: Spec,
    shard: tuple[int, int],
    cell: Cell,
    teacher: dict[str, Any],
    students: dict[Family, dict[str, Any]],
    results: list[dict[str, Any]],
    eval_seconds: float,
) -> dict[str, Any]:
    """The line of an evaluated cell: its ``teacher``'s line, the ``students``' family markers
    and the evaluation ``results`` per split (the first split's are the main ones)."""
    main = results[0]
    calls: dict[str, float] = {}
    fam_info = {}
    for fam in cell.families():
        marker = students.get(fam) or {}
        fam_info["/".join(fam)] = {
            k: marker.get(k)
            for k in ("call", "seconds", "students_in_call", "layers", "precision", "folder")
        }
        if marker.get("call"):
            calls[marker["call"]] = marker.get("seconds", 0.0)
    return {
        "kind": "cell",
        "cell_id": cell.id,
        "sweep": spec.name,
        "preset": spec.preset,
        "index": cell.index,
        **cell.grid_values(),
        "test_group": cell.test_group,  # always (grid_values has it only when not 1)
        "variant": cell.label,
        "teacher_id": cell.teacher,
        "run_dir": str(cell.teacher_dir),
        "hybrid": main.get("variant"),
        **scores_of(main),
        "teacher_bleu": main.get("teacher_bleu"),
        "teacher_chrf": main.get("teacher_chrf"),
        "relative_bleu": main.get("relative_bleu"),
        "scores": {r["split"]: scores_of(r, hybrid=True) for r in results},
        "student_params": main.get("student_params"),
        "replaced_params": main.get("replaced_params"),
        "params_ratio": main.get("params_ratio"),
        "replacements": main.get("replacements"),
        "n": main.get("n"),
        "teacher_fallback": main.get("teacher_fallback"),
        "length_capped": main.get("length_capped"),
        "sentences_per_s": main.get("sentences_per_s"),
        "teacher_sentences_per_s": main.get("teacher_sentences_per_s"),
        "speed_rounds": main.get("speed_rounds"),
        "times": {
            "teacher_train_seconds": teacher.get("train_seconds"),
            "distill_seconds": sum(calls.values()),
            "distill_calls": fam_info,
            "eval_seconds": eval_seconds,
        },
        "seed": cell.config.seed,
        "distill_epochs": cell.config.distill.epochs,
        "distill_batch_size": cell.config.distill.batch_size,
        "precision": next((f["precision"] for f in fam_info.values() if f["precision"]), None),
        "machine": describe_machine(resolve_device(cell.config.runtime.device)),
        "commit": git_revision(),
        "config": _config_record(cell.config),
        "versions": main.get("versions") or versions(),
        "shard": f"{shard[0]}/{shard[1]}",
        "finished_at": timestamp(),
        "host": HOST,
        "pid": os.getpid(),
    }
