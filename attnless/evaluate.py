"""``attnless evaluate`` / ``translate``: decode a split, score it with sacreBLEU and chrF.

Scores are computed on detokenized, cased text (sacreBLEU's default 13a tokenization), and
the metric signatures are printed and saved next to the scores. Hypotheses are saved one per
line, in corpus order, so anyone can re-score them.

With replacements (``eval.replace``), the teacher with its students installed is scored, and
the scores file adds the BLEU relative to the teacher's, the parameter counts (students vs the
modules they replaced) and the decoding speed. Fixed-length students cannot read sentences
longer than ``n`` positions: a source longer than ``n`` is translated by the teacher instead
(counted as ``teacher_fallback``), and decoder-side students cap the output at ``n - 1``
tokens (counted as ``length_capped``). Length-free students (``fixed_length=False`` in the
registry, e.g. ``toeplitz``) read any length: no fallback and no cap on their account.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attnless import hardware
from attnless.config import Config, DecodeConfig
from attnless.data import ParallelText, load_split
from attnless.data.textio import read_parallel
from attnless.data.tokenizer import Tokenizer
from attnless.prepare import check_compatible
from attnless.replacement import LayerSet, Replacement, from_config, variant_name
from attnless.rundir import RunDir
from attnless.runs import versions


def score(hypotheses: list[str], references: list[str], chrf: bool = True) -> dict[str, Any]:
    """Corpus BLEU (and chrF) with their sacreBLEU signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; expected the same"
        )
    bleu = BLEU()
    result: dict[str, Any] = {"bleu": bleu.corpus_score(hypotheses, [references]).score}
    result["bleu_signature"] = str(bleu.get_signature())
    if chrf:
        metric = CHRF()
        result["chrf"] = metric.corpus_score(hypotheses, [references]).score
        result["chrf_signature"] = str(metric.get_signature())
    return result


def decode_tag(cfg: DecodeConfig) -> str:
    """A short name for decoding settings, used in file names: ``greedy`` or ``beam4-lp1.0``."""
    return "greedy" if cfg.beam == 1 else f"beam{cfg.beam}-lp{cfg.length_penalty:g}"


def output_tag(cfg: Config, split: str) -> str:
    """The file name stem of a split's hypotheses and scores: the split (``test``, or the test
    set ``data.test_set`` names instead of the default), ``.group<k>`` when ``data.test_group``
    joins k test pairs into one, ``.first<N>`` when ``data.eval_subset`` keeps only the first N
    pairs, then :func:`decode_tag`: ``test.greedy``, ``test.group4.greedy``,
    ``test_2017_mscoco.first100.beam4-lp1.0``. Scores of different test sets, groupings,
    subsets or decoding settings never overwrite each other."""
    name = cfg.data.test_set if split == "test" else split
    if split == "test" and cfg.data.test_group > 1:
        name += f".group{cfg.data.test_group}"
    if cfg.data.eval_subset is not None and not split.startswith(FILES):
        name += f".first{cfg.data.eval_subset}"
    return f"{name}.{decode_tag(cfg.decode)}"


def translate_ids(
    model: torch.nn.Module,
    src_ids: list[list[int]],
    cfg: Config,
    progress: bool = False,
    max_positions: int | None = None,
) -> tuple[list[list[int]], float]:
    """Decode id lists with ``cfg.decode`` in the run's precision (see
    :func:`attnless.hardware.run_dtype`); also the seconds taken."""
    from attnless import decode

    device = next(model.parameters()).device
    dtype = hardware.run_dtype(cfg.runtime.precision, RunDir.of(cfg).recorded_precision(), device)
    start = time.perf_counter()
    hyps = decode.translate_ids(
        model,
        src_ids,
        cfg.decode,
        device=device,
        progress=progress,
        autocast_dtype=dtype,
        max_positions=max_positions,
    )
    return hyps, time.perf_counter() - start


def translate_hybrid_ids(
    hybrid: Any,
    teacher: torch.nn.Module,
    src_ids: list[list[int]],
    cfg: Config,
    progress: bool = False,
) -> tuple[list[list[int]], dict[str, Any]]:
    """Hypotheses of ``hybrid`` (a :class:`attnless.hybrid.Hybrid`); sources longer than its
    networks' n positions (encoder-side students) are translated by ``teacher`` and counted.
    Statistics: the hybrid's own decoding speed, ``teacher_fallback``, ``length_capped``."""
    n = hybrid.n
    inside, outside = _split_by_fit(hybrid, src_ids)
    positions = n if hybrid.decoder_side else None
    hyp_in, seconds = translate_ids(
        hybrid.model, [src_ids[i] for i in inside], cfg, progress, positions
    )
    hyp_out, _ = translate_ids(teacher, [src_ids[i] for i in outside], cfg)
    hyp_ids: list[list[int]] = [[] for _ in src_ids]
    for i, hyp in zip(inside + outside, hyp_in + hyp_out):
        hyp_ids[i] = hyp
    stats = _speed(len(inside), hyp_in, seconds)
    stats["teacher_fallback"] = len(outside)
    stats["length_capped"] = sum(len(h) >= n - 1 for h in hyp_in) if hybrid.decoder_side else 0
    return hyp_ids, stats


def _split_by_fit(hybrid: Any, src_ids: list[list[int]]) -> tuple[list[int], list[int]]:
    """Indices of the sources ``hybrid`` reads itself, and of those longer than its encoder-side
    networks' n positions (translated by the teacher)."""
    fits = [not hybrid.encoder_side or len(ids) <= hybrid.n for ids in src_ids]
    return [i for i, ok in enumerate(fits) if ok], [i for i, ok in enumerate(fits) if not ok]


def speed_side_by_side(
    hybrid: Any, teacher: torch.nn.Module, src_ids: list[list[int]], cfg: Config, rounds: int
) -> dict[str, Any]:
    """Greedy decoding speed of ``hybrid`` and of its ``teacher`` on the same sources (those the
    hybrid reads itself), timed in alternation in this process, best of ``rounds`` passes each:
    a ratio that machine load, warm-up and another machine's numbers cannot skew."""
    sources = [src_ids[i] for i in _split_by_fit(hybrid, src_ids)[0]]
    positions = hybrid.n if hybrid.decoder_side else None
    best = {"hybrid": float("inf"), "teacher": float("inf")}
    for _ in range(rounds):
        for name, model, limit in (("teacher", teacher, None), ("hybrid", hybrid.model, positions)):
            best[name] = min(best[name], translate_ids(model, sources, cfg, max_positions=limit)[1])
    return {
        "sentences_per_s": len(sources) / max(best["hybrid"], 1e-9),
        "teacher_sentences_per_s": len(sources) / max(best["teacher"], 1e-9),
        "speed_rounds": rounds,
    }


def translate_lines(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    lines: list[str],
    cfg: Config,
    progress: bool = False,
    source: str = "input",
    strict: bool = False,
    hybrid: Any = None,
) -> tuple[list[str], dict[str, Any]]:
    """Translate raw source lines: exactly one detokenized hypothesis per line, and decoding
    statistics.

    A line longer (in subword tokens) than the model's ``model.max_positions`` cannot be read:
    with ``strict`` that is an error naming ``source`` and the line; otherwise its hypothesis is
    empty, the rest is translated, and ``stats["too_long"]`` lists the line numbers (from 1).
    With ``hybrid`` (and ``model`` its teacher) the hybrid translates, see
    :func:`translate_hybrid_ids`.
    """
    src_ids = tokenizer.encode_src(lines)
    limit = model.encoder.embed.positions.size(0)
    too_long = [i for i, ids in enumerate(src_ids) if len(ids) > limit]
    if too_long and strict:
        first = too_long[0]
        raise ValueError(
            f"{source}: line {first + 1}: {len(src_ids[first])} subword tokens, more than "
            f"model.max_positions ({limit}); nothing was translated. Split or shorten the line"
        )
    inside = [i for i, ids in enumerate(src_ids) if len(ids) <= limit]
    if hybrid is not None:
        hyp_in, stats = translate_hybrid_ids(
            hybrid, model, [src_ids[i] for i in inside], cfg, progress
        )
    else:
        hyp_in, seconds = translate_ids(model, [src_ids[i] for i in inside], cfg, progress)
        stats = _speed(len(inside), hyp_in, seconds)
    hyp_ids: list[list[int]] = [[] for _ in src_ids]
    for i, hyp in zip(inside, hyp_in):
        hyp_ids[i] = hyp
    stats.update(too_long=[i + 1 for i in too_long], max_positions=limit)
    return tokenizer.decode_tgt(hyp_ids), stats


def _speed(sentences: int, hyp_ids: list[list[int]], seconds: float) -> dict[str, Any]:
    return {
        "sentences": sentences,
        "decode_seconds": seconds,
        "sentences_per_s": sentences / max(seconds, 1e-9),
        "output_tokens_per_s": sum(map(len, hyp_ids)) / max(seconds, 1e-9),
    }


def _write(cfg: Config, variant: str, split: str, hyps: list[str], result: dict) -> dict:
    result["versions"] = versions()
    RunDir.of(cfg).write_eval(variant, output_tag(cfg, split), hyps, result)
    return result


def _base_record(cfg: Config, split: str, text: ParallelText, variant: str) -> dict[str, Any]:
    return {
        "variant": variant,
        "split": split,
        "test_set": text.name,
        "decode": cfg.decode.model_dump(),
    }


def evaluate_teacher(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    cfg: Config,
    split: str,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
    text: ParallelText | None = None,
) -> dict[str, Any]:
    """Decode and score ``split`` (or ``text``) with the teacher; write to ``eval/teacher``
    (the best checkpoint) or ``eval/teacher.<checkpoint>``."""
    text = text or load_split(cfg.data, split)
    hyp_ids, seconds = translate_ids(model, tokenizer.encode_src(text.src), cfg, progress)
    hyps = tokenizer.decode_tgt(hyp_ids)
    extra = extra or {}
    variant = RunDir.teacher_variant(extra.get("checkpoint", "best"))
    result = _base_record(cfg, split, text, variant)
    result.update(score(hyps, text.tgt, cfg.eval.chrf))
    result.update(_speed(len(text), hyp_ids, seconds))
    result.update(extra)
    return _write(cfg, variant, split, hyps, result)


def teacher_scores(
    cfg: Config, split: str, checkpoint: str, progress: bool, text: ParallelText | None = None
) -> dict[str, Any]:
    """The teacher's scores on ``split`` (or ``text``) with the current decoding settings
    (computed once)."""
    text = text or load_split(cfg.data, split)
    saved = RunDir.of(cfg).read_scores(RunDir.teacher_variant(checkpoint), output_tag(cfg, split))
    same = saved and (
        saved.get("checkpoint") == checkpoint
        and saved.get("decode") == cfg.decode.model_dump()
        and saved.get("test_set") == text.name
        and saved.get("sentences") == len(text)
    )
    return saved if same else _evaluate_teacher_split(cfg, split, checkpoint, progress, text)


def _evaluate_teacher_split(
    cfg: Config, split: str, which: str, progress: bool, text: ParallelText | None = None
) -> dict:
    run = RunDir.of(cfg)
    model, payload = run.load_teacher(which, hardware.resolve_device(cfg.runtime.device))
    extra = {"checkpoint": which, "step": payload["state"]["step"]}
    return evaluate_teacher(model, run.tokenizer(), cfg, split, extra, progress, text)


def evaluate_hybrid(
    cfg: Config,
    splits: list[str],
    replacements: Sequence[Replacement],
    layers: LayerSet,
    progress: bool = True,
    texts: dict[str, ParallelText] | None = None,
) -> list[dict]:
    """Score the teacher with the students of ``replacements`` at ``layers`` installed
    (``texts``: the text of a split, instead of the corpus's)."""
    texts = texts or {}
    from attnless.hybrid import build_hybrid, describe, finetune

    run = RunDir.of(cfg)
    device = hardware.resolve_device(cfg.runtime.device)
    which = cfg.distill.teacher_checkpoint
    teacher, payload = run.load_teacher(which, device)
    step = payload["state"]["step"]
    hybrid = build_hybrid(teacher, step, cfg, replacements, layers)
    variant = variant_name(replacements, layers)
    info = describe(hybrid)
    if cfg.eval.finetune_epochs:
        from attnless.prepare import prepare

        variant += f".ft{cfg.eval.finetune_epochs}"
        prepared = prepare(cfg, record=False)
        info.update(finetune(hybrid, cfg, prepared, cfg.eval.finetune_epochs, progress))
    tokenizer = run.tokenizer()
    results = []
    for split in splits:
        text = texts.get(split) or load_split(cfg.data, split)
        src_ids = tokenizer.encode_src(text.src)
        hyp_ids, stats = translate_hybrid_ids(hybrid, teacher, src_ids, cfg, progress)
        hyps = tokenizer.decode_tgt(hyp_ids)
        teacher_result = teacher_scores(cfg, split, which, progress, texts.get(split))
        result = _base_record(cfg, split, text, variant)
        result.update(score(hyps, text.tgt, cfg.eval.chrf))
        result["teacher_bleu"] = teacher_result["bleu"]
        result["relative_bleu"] = 100.0 * result["bleu"] / max(teacher_result["bleu"], 1e-9)
        if "chrf" in result and "chrf" in teacher_result:
            result["teacher_chrf"] = teacher_result["chrf"]
        result.update(info)
        result.update(stats)
        if cfg.runtime.speed_rounds:
            rounds = cfg.runtime.speed_rounds
            result.update(speed_side_by_side(hybrid, teacher, src_ids, cfg, rounds))
        result.update({"checkpoint": which, "step": step})
        results.append(_write(cfg, variant, split, hyps, result))
    return results


def evaluate(
    cfg: Config,
    splits: list[str] | None = None,
    progress: bool = True,
    texts: dict[str, ParallelText] | None = None,
    replacements: Sequence[Replacement] | None = None,
    layers: LayerSet | None = None,
) -> list[dict[str, Any]]:
    """Score the teacher of ``cfg``'s run folder, or, with replacements (``replacements`` at
    ``layers``, default: ``eval.replace`` at ``eval.layers``), the hybrid, on ``splits`` or on
    ``texts`` (split name -> your own parallel text, see :func:`file_text`).

    Settings that contradict the run folder's (data, tokenizer, model, seed) are an error."""
    check_compatible(cfg.run_dir(), cfg)
    texts = texts or {}
    splits = list(texts) or splits or cfg.eval.splits
    device = hardware.resolve_device(cfg.runtime.device)
    if device.type == "cpu":
        hardware.tune_cpu_runtime(cfg.runtime.threads)
    if replacements is None or layers is None:
        replacements, layers = from_config(cfg.eval)
    if replacements:
        return evaluate_hybrid(cfg, splits, replacements, layers, progress, texts)
    which = cfg.eval.checkpoint
    return [
        _evaluate_teacher_split(cfg, split, which, progress, texts.get(split)) for split in splits
    ]


FILES = "files."  # the split name prefix of user-given test files


def file_text(src: str | Path, ref: str | Path) -> tuple[str, ParallelText]:
    """A user's test files as (split name, text): ``files.<source file name>``."""
    text = read_parallel(src, ref, f"{src} | {ref}")
    return f"{FILES}{Path(src).name}", text
