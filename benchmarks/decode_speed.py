"""Decoding speed: greedy with and without the incremental cache, and beam 4, for the teacher
and for a fully attentionless hybrid, on (a slice of) the Multi30k test set.

Both models are the paper's size (``experiments/paper.yaml``: d = 128, 6 + 6 layers, n = 50)
with random weights: the hybrid is the teacher with a randomly initialised ALR student of one
size (M by default) installed at every encoder self-attention, decoder self-attention and
cross-attention site, as ``attnless evaluate --replace`` would install trained ones. Speed
does not depend on the weights' values, except through the output lengths: random models
rarely emit EOS, so nearly every hypothesis runs to its length cap
``min(1.2 * source + 10, n - 1)`` (the same cap for both models). That is more decoder steps
than trained models take; the mean output length is reported with every figure. Each model
and mode is decoded in alternating rounds; the best round counts.

    python -m benchmarks.decode_speed [--sentences 1000] [--nocache-sentences 200] [--size M]
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch

from attnless import hardware
from attnless.config import Config
from attnless.data import load_split
from attnless.decode import translate_ids
from attnless.model import Seq2SeqTransformer, build_model, count_parameters
from attnless.model.sites import SITES, get_method, install
from attnless.prepare import Prepared
from attnless.replacement import ALL, Replacement
from attnless.students import build_student, expand_specs
from benchmarks.common import table, timed

ALR_EVERYWHERE = tuple(Replacement(site, "alr") for site in SITES)
MAIN_MODES = (("greedy, cached", 1, True), ("beam 4, cached", 4, True))
CACHE_MODES = (("greedy, cached", 1, True), ("greedy, no cache", 1, False))


def random_hybrid(
    teacher: Seq2SeqTransformer, cfg: Config, size: str, seed: int
) -> torch.nn.Module:
    """A copy of ``teacher`` with random-init ALR students of ``size`` at every attention site
    of every layer (installed like :func:`attnless.hybrid.build_hybrid` does)."""
    device = next(teacher.parameters()).device
    specs = expand_specs([r.with_sizes(size) for r in ALR_EVERYWHERE], ALL, teacher)
    model = copy.deepcopy(teacher)
    torch.manual_seed(seed)
    paths = {spec: get_method(spec.site, spec.method).path(spec.layer) for spec in specs}
    for spec in sorted(specs, key=lambda s: -len(paths[s])):
        install(model, paths[spec], build_student(spec, cfg).to(device))
    return model.eval()


def _decode_rounds(
    models: dict[str, torch.nn.Module],
    src: list[list[int]],
    cfg: Config,
    modes: tuple,
    rounds: int,
    device: torch.device,
    dtype: torch.dtype | None,
) -> list[dict[str, Any]]:
    """Best-of-``rounds`` timing of every (mode, model), alternating models and modes."""
    best: dict[tuple[str, str], float] = {}
    lengths: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for mode, beam, cache in modes:
            decode_cfg = cfg.decode.model_copy(update={"beam": beam, "use_cache": cache})
            for name, model in models.items():
                hyps: list = []

                def run(model=model, decode_cfg=decode_cfg, hyps=hyps) -> None:
                    hyps[:] = translate_ids(
                        model,
                        src,
                        decode_cfg,
                        device,
                        autocast_dtype=dtype,
                        max_positions=cfg.distill.n,
                    )

                seconds = timed(run, device)
                key = (mode, name)
                best[key] = min(seconds, best.get(key, float("inf")))
                lengths[key] = sum(map(len, hyps)) / max(len(hyps), 1)
    return [
        {
            "mode": mode,
            "model": name,
            "seconds": best[(mode, name)],
            "sentences_per_s": len(src) / best[(mode, name)],
            "mean_output_tokens": lengths[(mode, name)],
        }
        for mode, *_ in modes
        for name in models
    ]


def measure(
    cfg: Config,
    prepared: Prepared,
    sentences: int = 1000,
    nocache_sentences: int = 200,
    size: str = "M",
    rounds: int = 2,
) -> dict[str, Any]:
    """Greedy and beam 4 (cached) on ``sentences`` test sentences, best of ``rounds`` rounds;
    and greedy with vs without the cache on the first ``nocache_sentences`` of them, best of
    ``rounds`` rounds too (decoding without the cache is slow: it re-runs every prefix; a
    single round on an H200 once caught a one-off cost, teacher 35 sentences/s against 1,786)."""
    device = hardware.resolve_device(cfg.runtime.device)
    dtype = hardware.autocast_dtype(cfg.runtime.precision, device)
    n = cfg.distill.n
    text = load_split(cfg.data, "test")
    src = prepared.tokenizer.encode_src(text.src[:sentences])
    src = [ids for ids in src if len(ids) <= n]  # what a hybrid can read (the rest: teacher)
    tok = prepared.tokenizer
    torch.manual_seed(cfg.seed)
    teacher = build_model(cfg, tok.src_vocab_size, tok.tgt_vocab_size).to(device).eval()
    hybrid = random_hybrid(teacher, cfg, size, cfg.seed)
    models = {"teacher": teacher, f"hybrid (ALR-{size} at every site)": hybrid}
    rows = _decode_rounds(models, src, cfg, MAIN_MODES, rounds, device, dtype)
    sliced = src[:nocache_sentences]
    cache_rows = _decode_rounds(models, sliced, cfg, CACHE_MODES, rounds, device, dtype)
    speed = {(r["mode"], r["model"]): r["sentences_per_s"] for r in cache_rows}
    speedup = {
        name: speed[(CACHE_MODES[0][0], name)] / speed[(CACHE_MODES[1][0], name)] for name in models
    }
    return {
        "rows": rows,
        "nocache": {
            "sentences": len(sliced),
            "rows": cache_rows,
            "speedup": speedup,
            "rounds": rounds,
        },
        "sentences": len(src),
        "test_set": text.name,
        "size": size,
        "params": {name: count_parameters(m) for name, m in models.items()},
        "autocast": hardware.compute_text(dtype),
        "batch_tokens": cfg.decode.batch_tokens,
        "rounds": rounds,
    }


def _rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    by = {(r["mode"], r["model"]): r for r in rows}
    teacher = rows[0]["model"]
    return [
        [
            r["mode"],
            r["model"],
            r["sentences_per_s"],
            r["mean_output_tokens"],
            f"{r['sentences_per_s'] / by[(r['mode'], teacher)]['sentences_per_s']:.2f}x",
        ]
        for r in rows
    ]


def _rounds_text(rounds: int) -> str:
    return "one round" if rounds == 1 else f"best of {rounds} rounds, alternating"


def markdown(result: dict[str, Any]) -> str:
    header = ["decoding", "model", "sentences/s", "mean output tokens", "vs teacher"]
    nocache = result["nocache"]
    params = ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in result["params"].items())
    speedups = ", ".join(f"{k} {v:.1f}x" for k, v in nocache["speedup"].items())
    return "\n\n".join(
        [
            f"{result['test_set']}, sources of at most n = 50 tokens, batches of "
            f"{result['batch_tokens']} source tokens, {result['autocast']}. The "
            f"config's models with random weights (parameters: {params}): random models rarely "
            "emit EOS, so hypotheses run to the length cap min(1.2·source + 10, 49), the same for "
            "both models (more steps than trained models take; see the mean output length).",
            f"{result['sentences']} sentences, best of {result['rounds']} rounds (alternating):",
            table(header, _rows(result["rows"])),
            f"The incremental cache, on the first {nocache['sentences']} of those sentences "
            f"({_rounds_text(nocache.get('rounds', 1))}; cached greedy is {speedups} faster "
            "than without the cache):",
            table(header, _rows(nocache["rows"])),
        ]
    )


def main() -> None:
    import tempfile

    from attnless import config as config_mod
    from attnless.prepare import prepare

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/paper.yaml")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--nocache-sentences", type=int, default=200)
    parser.add_argument("--size", default="M")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_mod.load(args.config, [f"run_root={tmp}"])
        device = hardware.resolve_device(cfg.runtime.device)
        if device.type == "cpu":
            hardware.tune_cpu_runtime(cfg.runtime.threads)
        result = measure(
            cfg, prepare(cfg), args.sentences, args.nocache_sentences, args.size, args.rounds
        )
    print(markdown(result))


if __name__ == "__main__":
    main()
