"""A sweep's ledger, ``results.jsonl``: what its lines hold, and the typed rows read from them.

The sweep (:mod:`attnless.sweep.results`) appends one JSON line per trained teacher
(``kind: teacher``) and per evaluated cell (``kind: cell``); the report reads them back as
:class:`ResultRow` values, one per teacher or cell and evaluation split, built here and nowhere
else. A line that repeats a teacher or cell (a re-run) replaces the earlier one, in its place.
Lines written by older versions may lack fields: a missing field reads as None.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnless.replacement import Replacement
from attnless.runs import read_jsonl

log = logging.getLogger(__name__)

# The short names of the sites in variant labels and tables.
SITE_SHORT = {"encoder.self": "enc self", "decoder.self": "dec self", "decoder.cross": "cross"}

# The fields of one evaluation split, as the sweep records them under ``scores.<split>`` (the
# first split's also at the top level of the line); the hybrid's comparison with its teacher
# only in cells.
SCORE_KEYS = ("split", "test_set", "bleu", "chrf", "bleu_signature", "chrf_signature")
SCORE_KEYS += ("sentences", "sentences_per_s")
HYBRID_KEYS = ("teacher_bleu", "teacher_chrf", "relative_bleu", "teacher_fallback")
HYBRID_KEYS += ("length_capped", "teacher_sentences_per_s", "speed_rounds")
# What a row takes from a cell's line, from its ``times`` and from its config's ``model``.
CELL_KEYS = ("cell_id", "size", "seed", "n", "student_params", "replaced_params", "params_ratio")
CELL_KEYS += ("machine",)
TIME_KEYS = ("teacher_train_seconds", "distill_seconds", "eval_seconds")
MODEL_KEYS = ("d_model", "heads", "encoder_layers", "decoder_layers")


def scores_of(result: Mapping[str, Any], hybrid: bool = False) -> dict[str, Any]:
    """The recorded scores of one evaluation ``result`` (with the teacher comparison for a
    ``hybrid``): the fields of :data:`SCORE_KEYS` (and :data:`HYBRID_KEYS`) it has."""
    keys = SCORE_KEYS + (HYBRID_KEYS if hybrid else ())
    return {k: result[k] for k in keys if k in result}


def variant_label(replace: Iterable[Replacement | str], cross_causal: bool = True) -> str:
    """``ALR`` for encoder-only variants, else ``ALR dec self + ALR cross`` etc. (``replace``:
    the variant's replacements, or their ``site=method`` texts as a results file records them);
    cross-attention students that see every decoder position (``distill.cross_causal`` false,
    as the paper's code) read ``ALR cross (paper mode)``."""
    parts = [Replacement.of(r) for r in replace]
    if all(r.site == "encoder.self" for r in parts):
        return " + ".join(r.method.upper() for r in parts)
    labels = []
    for r in parts:
        label = f"{r.method.upper()} {SITE_SHORT.get(r.site, r.site)}"
        if r.site == "decoder.cross" and not cross_causal:
            label += " (paper mode)"
        labels.append(label)
    return " + ".join(labels)


def cross_causal_of(config: Mapping[str, Any] | None) -> bool:
    """A recorded config's ``distill.cross_causal`` (true when it does not say)."""
    distill = (config or {}).get("distill") or {}
    return distill.get("cross_causal", True) is not False


def test_group_of(record: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> int:
    """How many consecutive test pairs a cell's line joined into one (``test_group``, else its
    config's ``data.test_group``); 1 (the ordinary test set) when it names neither."""
    data = (config or {}).get("data") or {}
    value = record.get("test_group", data.get("test_group"))
    return int(value) if isinstance(value, int | float) and value >= 1 else 1


def read_results(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """Records of a results file; a corrupt line is skipped with a warning naming it."""
    return read_jsonl(path, warn=warn or log.warning)


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One teacher's or one cell's scores on one evaluation split: the fields a report uses."""

    kind: str  # "teacher" or "cell"
    cell_id: str | None = None  # cells only
    teacher_id: str | None = None
    corpus: str | None = None
    direction: str | None = None
    split: str = "test"
    test_set: str | None = None
    bleu: float | None = None
    chrf: float | None = None
    bleu_signature: str | None = None
    run_dir: str | None = None
    # what a cell replaced
    variant: str | None = None  # e.g. ALR, or ALR dec self + ALR cross
    replace: str = ""  # its site=method entries joined by "+"
    size: str | None = None
    layers: str | None = None  # as in the spec: all, 0-2, 1,3 (str() of an older line's value)
    seed: int | None = None
    n: int | None = None  # the students' fixed length
    # the hybrid against its teacher
    teacher_bleu: float | None = None
    relative_bleu: float | None = None  # % of the teacher's BLEU
    # the test set: each ``test_group`` consecutive pairs joined into one (length tests; 1 =
    # the ordinary test set), how many sentences it has and how many of them a length-capped
    # hybrid handed to the teacher (longer than its fixed length n)
    test_group: int = 1
    sentences: int | None = None
    teacher_fallback: int | None = None
    student_params: int | None = None
    replaced_params: int | None = None
    params_ratio: float | None = None
    sentences_per_s: float | None = None
    teacher_sentences_per_s: float | None = None
    speed_rounds: int | None = None  # > 0: both speeds timed side by side (best of this many)
    machine: str | None = None  # where the cell ran: CPU model and cores, or the GPU's name
    teacher_train_seconds: float | None = None
    distill_seconds: float | None = None
    eval_seconds: float | None = None
    # the teacher's shape (from the recorded config)
    d_model: int | None = None
    heads: int | None = None
    encoder_layers: int | None = None
    decoder_layers: int | None = None
    config: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> list[ResultRow]:
        """The rows of one ``results.jsonl`` line: one per evaluation split (a line without
        ``scores`` is one split, ``split`` or test). A cell's split without some score falls
        back to the line's main one; a teacher's does not."""
        config = record.get("config") if isinstance(record.get("config"), dict) else None
        common = {
            "kind": record.get("kind"),
            "teacher_id": record.get("teacher_id"),
            "corpus": record.get("corpus"),
            "direction": record.get("direction"),
            "run_dir": record.get("run_dir"),
            "config": config,
        }
        own, fallback = ("test_set", "bleu", "chrf", "bleu_signature"), ()
        if record.get("kind") == "cell":
            replace = record.get("replace") or []
            model = (config or {}).get("model") or {}
            times = record.get("times") or {}
            common |= {k: record.get(k) for k in CELL_KEYS}
            common |= {k: times.get(k) for k in TIME_KEYS} | {k: model.get(k) for k in MODEL_KEYS}
            common |= {
                "variant": record.get("variant") or variant_label(replace, cross_causal_of(config)),
                "replace": "+".join(replace),
                "layers": str(record.get("layers")),
            }
            own = ("bleu_signature",)
            fallback = ("test_set", "bleu", "chrf", "teacher_bleu", "relative_bleu")
            fallback += ("sentences_per_s", "teacher_sentences_per_s", "speed_rounds")
            fallback += ("sentences", "teacher_fallback")
            common["test_group"] = test_group_of(record, config)
        scores = record.get("scores") or {record.get("split", "test"): record}
        return [
            cls(
                **common,
                split=split,
                **{key: result.get(key) for key in own},
                **{key: result.get(key, record.get(key)) for key in fallback},
            )
            for split, result in scores.items()
        ]


def latest(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The teacher and cell lines, each teacher or cell once: its last line, in the place of
    its first (a re-run replaces the earlier result)."""
    kept: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in records:
        kind = record.get("kind")
        key = record.get("cell_id") if kind == "cell" else record.get("teacher_id")
        if kind in ("cell", "teacher") and key:
            kept[(kind, key)] = record
    return list(kept.values())


def result_rows(records: Iterable[Mapping[str, Any]]) -> list[ResultRow]:
    """The rows of a ledger's records (:func:`read_results`): every teacher and cell once
    (:func:`latest`), one row per evaluation split."""
    return [row for record in latest(records) for row in ResultRow.from_record(record)]
