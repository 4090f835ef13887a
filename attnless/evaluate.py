"""``attnless evaluate`` / ``translate``: decode a split, score it with sacreBLEU and chrF.

Scores are computed on detokenized, cased text (sacreBLEU's default 13a tokenization), and
the metric signatures are printed and saved next to the scores. Hypotheses are saved one per
line, in corpus order, so anyone can re-score them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from attnless import hardware
from attnless.config import Config, DecodeConfig
from attnless.data import load_split
from attnless.data.tokenizer import Tokenizer
from attnless.runs import versions, write_json, write_text


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


def translate_lines(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    lines: list[str],
    cfg: Config,
    progress: bool = False,
) -> tuple[list[str], dict[str, Any]]:
    """Translate raw source lines; returns detokenized hypotheses and decoding statistics."""
    from attnless.decode import translate_ids

    device = next(model.parameters()).device
    dtype = hardware.autocast_dtype(cfg.train.precision, device)
    src_ids = tokenizer.encode_src(lines)
    start = time.perf_counter()
    hyp_ids = translate_ids(
        model, src_ids, cfg.decode, device=device, progress=progress, autocast_dtype=dtype
    )
    seconds = time.perf_counter() - start
    stats = {
        "sentences": len(lines),
        "decode_seconds": seconds,
        "sentences_per_s": len(lines) / max(seconds, 1e-9),
        "output_tokens_per_s": sum(map(len, hyp_ids)) / max(seconds, 1e-9),
    }
    return tokenizer.decode_tgt(hyp_ids), stats


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    cfg: Config,
    split: str,
    out_dir: Path,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Decode ``split`` with ``model``, score it, and write hypotheses and scores to ``out_dir``."""
    text = load_split(cfg.data, split)
    hyps, stats = translate_lines(model, tokenizer, text.src, cfg, progress=progress)
    tag = f"{split}.{decode_tag(cfg.decode)}"
    result: dict[str, Any] = {
        "split": split,
        "test_set": text.name,
        "decode": {**cfg.decode.__dict__},
        **score(hyps, text.tgt, cfg.eval.chrf),
        **stats,
        **(extra or {}),
        "versions": versions(),
    }
    write_text(out_dir / f"{tag}.hyp.txt", "".join(h + "\n" for h in hyps))
    write_json(out_dir / f"{tag}.scores.json", result)
    return result


def evaluate(
    cfg: Config, splits: list[str] | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """Score the teacher of ``cfg``'s run folder on ``splits`` (default ``eval.splits``)."""
    from attnless.train import load_model

    run_dir = cfg.run_dir()
    device = hardware.resolve_device(cfg.train.device)
    if device.type == "cpu":
        hardware.tune_cpu_runtime(cfg.train.threads)
    model, payload = load_model(run_dir, cfg.eval.checkpoint, device)
    tokenizer = Tokenizer.load(run_dir)
    extra = {
        "variant": "teacher",
        "checkpoint": cfg.eval.checkpoint,
        "step": payload["state"]["step"],
    }
    return [
        evaluate_model(model, tokenizer, cfg, split, run_dir / "eval" / "teacher", extra, progress)
        for split in (splits or cfg.eval.splits)
    ]
