"""Distillation: one epoch of ALR students at all six encoder layers, sharing one teacher pass
per batch (the Distiller as is) against one teacher pass per layer per batch (the official
code's way: one job per layer; emulated by running the Distiller once per layer).

The teacher is the paper-size model (``experiments/paper.yaml``) with random weights (the
time of a teacher pass and of a student step does not depend on the values); the data is a
slice of Multi30k's training set. Validation is off (the per-layer jobs would repeat it too),
and building the students and loading the teacher are not timed, which favours the per-layer
way. Both ways run in alternating rounds; the best round of each counts.

    python -m benchmarks.distill_epoch [--sentences 4000] [--batch 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from collections.abc import Callable
from typing import Any

from attnless import config as config_mod
from attnless import hardware
from attnless.config import Config
from attnless.data.batching import Examples, fit_length, sentence_batches
from attnless.distill import Distiller
from attnless.prepare import Prepared
from attnless.replacement import ALL, LayerSet, Replacement
from attnless.rundir import RunDir
from attnless.train import Trainer
from benchmarks.common import table, timed

ALR = Replacement("encoder.self", "alr")


def _setup(
    cfg: Config, prepared: Prepared, batch_size: int, pick: Callable[[Examples], list[int]]
) -> tuple[Config, Prepared]:
    """What both measurements start from: a teacher checkpoint of the config's model (random
    weights), the training pairs that fit ``n`` that ``pick`` chooses, and the config of one
    distillation epoch of ``batch_size`` sentences with validation off."""
    Trainer(cfg, prepared, progress=False).save(best=True)
    fits = fit_length(prepared.train, cfg.distill.n)
    data = dataclasses.replace(prepared, train=fits.select(pick(fits)))
    overrides = [
        "distill.epochs=1",
        "distill.max_steps=null",
        f"distill.batch_size={batch_size}",
        "distill.validate_every_epoch=false",
        "distill.progress=false",
        "distill.teacher_checkpoint=best",
    ]
    return config_mod.from_dict(config_mod.apply_overrides(cfg.to_dict(), overrides)), data


def _distiller(cfg: Config, data: Prepared, size: str, layers: LayerSet) -> Distiller:
    """A Distiller of fresh ALR-``size`` students at ``layers`` (none resumed)."""
    shutil.rmtree(RunDir.of(cfg).students, ignore_errors=True)
    return Distiller(cfg, data, False, [ALR.with_sizes(size)], layers)


def measure(
    cfg: Config,
    prepared: Prepared,
    sentences: int = 4000,
    batch_size: int = 256,
    size: str = "S",
    rounds: int = 2,
) -> dict[str, Any]:
    device = hardware.resolve_device(cfg.runtime.device)
    layers = cfg.model.encoder_layers
    run_cfg, data = _setup(
        cfg, prepared, batch_size, lambda fits: list(range(min(sentences, len(fits))))
    )

    def epoch(which: LayerSet) -> float:
        return timed(_distiller(run_cfg, data, size, which).fit, device)

    shared, per_layer = [], []
    for _ in range(rounds):
        shared.append(epoch(ALL))
        per_layer.append(sum(epoch(LayerSet((i,))) for i in range(layers)))
    batches = -(-len(data.train) // batch_size)
    return {
        "sentences": len(data.train),
        "batch_size": batch_size,
        "batches": batches,
        "layers": layers,
        "size": size,
        "shared_s": min(shared),
        "per_layer_s": min(per_layer),
        "speedup": min(per_layer) / min(shared),
        "autocast": hardware.compute_text(hardware.autocast_dtype(cfg.runtime.precision, device)),
        "rounds": rounds,
    }


def measure_truncation(
    cfg: Config,
    prepared: Prepared,
    sentences: int = 2560,
    batch_size: int = 256,
    size: str = "L",
    rounds: int = 2,
) -> dict[str, Any]:
    """The Distiller's steps over a real distillation epoch slice (``sentences // batch_size``
    batches of the epoch's order) of ALR-``size`` at every encoder layer (one shared teacher
    pass per batch), the networks computing only each batch's positions (truncated) against
    padding every sentence to n (the official computation): the same students on the same
    batches, after one warm-up pass of each form, alternating rounds, the best of each counts."""
    device = hardware.resolve_device(cfg.runtime.device)

    def whole_batches(fits: Examples) -> list[int]:
        """Whole batches of the real epoch order (lengths as in a real epoch)."""
        order = sentence_batches(fits, batch_size, cfg.seed, 0)[: max(1, sentences // batch_size)]
        return sorted(i for b in order for i in b)

    run_cfg, data = _setup(cfg, prepared, batch_size, whole_batches)
    distiller = _distiller(run_cfg, data, size, ALL)
    students = distiller.students
    order = sentence_batches(data.train, batch_size, cfg.seed, 0)  # re-batched alike

    def steps(truncate: bool) -> float:
        """The Distiller's training steps over the slice (teacher passes included; the
        epoch-end checkpoint writes, the same for both forms, excluded)."""
        for student in students:
            student.net.truncate = truncate
        return timed(lambda: [distiller.train_step(students, [b]) for b in order], device)

    for truncate in (True, False):  # warm-up: kernels for every batch shape, optimizer state
        steps(truncate)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for truncate in (True, False):
            times[truncate].append(steps(truncate))
    n = cfg.distill.n
    longest = [max(len(data.train.src[i]) for i in batch) for batch in order]
    return {
        "sentences": len(data.train),
        "batch_size": batch_size,
        "batches": len(order),
        "layers": cfg.model.encoder_layers,
        "size": size,
        "n": n,
        "mean_longest": sum(longest) / len(longest),
        "truncated_s": min(times[True]),
        "padded_s": min(times[False]),
        "truncated_rounds_s": times[True],
        "padded_rounds_s": times[False],
        "speedup": min(times[False]) / min(times[True]),
        "autocast": hardware.compute_text(hardware.autocast_dtype(cfg.runtime.precision, device)),
        "rounds": rounds,
    }


def truncation_markdown(result: dict[str, Any]) -> str:
    rows = [
        [
            "truncated to each batch's longest source (attnless)",
            result["truncated_s"],
            f"{result['speedup']:.2f}x",
        ],
        [f"padded to n = {result['n']} (official)", result["padded_s"], "1.00x"],
    ]
    return "\n\n".join(
        [
            f"ALR-{result['size']} students at all {result['layers']} encoder layers, one "
            f"shared teacher pass per batch, {result['sentences']:,} Multi30k training pairs in "
            f"{result['batches']} batches of {result['batch_size']} sentences (longest source "
            f"{result['mean_longest']:.1f} positions on average, n = {result['n']}), "
            f"{result['autocast']}, validation off; best of {result['rounds']} alternating "
            "rounds. Both forms give the same outputs and gradients "
            "(tests/test_replacement_oracle.py).",
            table(["student networks", "seconds", "speed"], rows),
        ]
    )


def markdown(result: dict[str, Any]) -> str:
    layers, batches = result["layers"], result["batches"]
    rows = [
        [
            "shared: one teacher pass per batch (attnless)",
            batches,
            batches * layers,
            result["shared_s"],
            f"{result['speedup']:.2f}x",
        ],
        [
            "one teacher pass per layer and batch (one job per layer)",
            batches * layers,
            batches * layers,
            result["per_layer_s"],
            "1.00x",
        ],
    ]
    return "\n\n".join(
        [
            f"ALR-{result['size']} students at all {layers} encoder layers, one epoch of "
            f"{result['sentences']:,} Multi30k training pairs in {batches} batches of "
            f"{result['batch_size']} sentences, the config's teacher (random weights), "
            f"{result['autocast']}, validation off; best of {result['rounds']} "
            "rounds (alternating).",
            table(
                ["distillation", "teacher passes", "student steps", "epoch seconds", "speed"],
                rows,
            ),
        ]
    )


def main() -> None:
    import tempfile

    from attnless.prepare import prepare

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/paper.yaml")
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--truncation", action="store_true", help="ALR-L truncated vs padded instead"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_mod.load(args.config, [f"run_root={tmp}"])
        if args.truncation:
            result = measure_truncation(
                cfg, prepare(cfg), args.sentences, args.batch, "L", args.rounds
            )
            print(truncation_markdown(result))
        else:
            result = measure(cfg, prepare(cfg), args.sentences, args.batch, "S", args.rounds)
            print(markdown(result))


if __name__ == "__main__":
    main()
