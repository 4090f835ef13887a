"""``make bench``: every performance figure of attnless, measured in one run, written to
``results/bench.md`` (and ``results/bench.json``) and printed.

1. teacher training tokens/s: attnless vs an identically configured ``torch.nn.Transformer``
   (:mod:`benchmarks.train_throughput`);
2. decoding sentences/s on Multi30k test: greedy with and without the cache, beam 4; teacher vs
   a fully attentionless hybrid (:mod:`benchmarks.decode_speed`);
3. student training GFLOP/s against a GEMM ceiling in the compute dtype and in bf16
   (:mod:`benchmarks.student_flops`);
4. a six-layer distillation epoch with one shared teacher pass vs one per layer
   (:mod:`benchmarks.distill_epoch`).

Each comparison is measured side by side in the same process (alternating rounds where it
says so), so the ratios hold on a busy machine better than the absolute numbers. Settings are
fixed and seeded; ``--quick`` shrinks every benchmark to seconds (for the tests).

    python -m benchmarks.bench [--threads N] [--quick] [--out results/bench.md]
    python -m benchmarks.bench --render results/bench.json   # re-render, e.g. with a GPU's run

The summary of every other recorded run beside ``--out`` (``results/bench-gpu.json``, an H200's,
written by ``tools/gpu/run_cells.sh ... 'bench'``) is tabled next to this run's.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attnless import config as config_mod
from attnless import hardware
from attnless.allocator import relaunch_with_fast_allocator
from attnless.prepare import prepare
from attnless.runs import write_text
from benchmarks import decode_speed, distill_epoch, student_flops, train_throughput
from benchmarks.common import REPO, machine, table

FULL = {
    "config": "experiments/paper.yaml",
    "overrides": [],
    "train": {"steps": 10, "warmup": 3, "rounds": 2},
    "decode": {"sentences": 1000, "nocache_sentences": 200, "size": "M", "rounds": 2},
    "students": {"sizes": ("S", "M", "L"), "batch": 256, "repeats": 3, "rounds": 3},
    "distill": {"sentences": 4096, "batch_size": 256, "size": "S", "rounds": 2},
    "truncation": {"sentences": 2560, "batch_size": 256, "size": "L", "rounds": 2},
}
QUICK = {
    "config": "experiments/smoke.yaml",
    "overrides": ["runtime.precision=fp32"],  # no bf16 kernel creation for every new shape
    "train": {"steps": 2, "warmup": 1, "rounds": 1},
    "decode": {"sentences": 16, "nocache_sentences": 8, "size": "XS", "rounds": 1},
    "students": {"sizes": ("XS", "S"), "batch": 16, "repeats": 1, "rounds": 1},
    "distill": {"sentences": 64, "batch_size": 32, "size": "XS", "rounds": 1},
    "truncation": {"sentences": 64, "batch_size": 32, "size": "XS", "rounds": 1},
}


def load() -> float | None:
    """The 1-minute load average (other processes' work competes with the benchmark)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run(settings: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": settings, "sections": {}, "seconds": {}, "load": {}}
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"run_root={tmp}", *settings["overrides"], *overrides]
        cfg = config_mod.load(REPO / settings["config"], overrides)
        device = hardware.resolve_device(cfg.runtime.device)
        if device.type == "cpu":
            hardware.tune_cpu_runtime(cfg.runtime.threads)
        out["load"]["start"] = load()
        start = time.perf_counter()
        prepared = prepare(cfg)
        students = settings["students"]
        steps = [
            ("train", lambda: train_throughput.measure(cfg, **settings["train"])),
            ("decode", lambda: decode_speed.measure(cfg, prepared, **settings["decode"])),
            ("students", lambda: student_flops.measure(cfg, prepared.train, **students)),
            ("distill", lambda: distill_epoch.measure(cfg, prepared, **settings["distill"])),
            (
                "truncation",
                lambda: distill_epoch.measure_truncation(cfg, prepared, **settings["truncation"]),
            ),
        ]
        if hardware.autocast_dtype(cfg.runtime.precision, device) is not None:
            # the truncation ratio in fp32 too: where the GEMMs are cheap (bf16), the memory
            # passes that do not shrink with the length (Adam) weigh more
            cfg32 = config_mod.load(
                REPO / settings["config"], [*overrides, "runtime.precision=fp32"]
            )
            steps.append(
                (
                    "truncation_fp32",
                    lambda: distill_epoch.measure_truncation(
                        cfg32, prepared, **settings["truncation"]
                    ),
                )
            )
        for name, measure in steps:
            t0 = time.perf_counter()
            out["load"][name] = load()
            out["sections"][name] = measure()
            out["seconds"][name] = time.perf_counter() - t0
            print(f"  {name}: {out['seconds'][name]:.0f} s", flush=True)
        out["seconds"]["total"] = time.perf_counter() - start
        out["load"]["end"] = load()
        out["machine"] = machine(device)
        m = cfg.model
        out["model"] = model = {
            "config": settings["config"],
            "d_model": m.d_model,
            "layers": f"{m.encoder_layers}+{m.decoder_layers}",
            "heads": m.heads,
            "ffn_dim": m.ffn_dim,
            "vocab": f"{prepared.tokenizer.src_vocab_size} joint"
            if cfg.tokenizer.joint
            else f"{prepared.tokenizer.src_vocab_size}/{prepared.tokenizer.tgt_vocab_size}",
            "n": cfg.distill.n,
            "precision": cfg.runtime.precision,
            "autocast": hardware.dtype_name(hardware.autocast_dtype(cfg.runtime.precision, device)),
        }
        if device.type == "cpu":
            model["bf16_speedup"] = hardware.cpu_bf16_speedup(torch.get_num_threads())
    return out


def train_markdown(result: dict[str, Any]) -> str:
    setup = result["setup"]
    names = ("attnless", "torch.nn.Transformer")
    base = result[names[1]]["tokens_per_s"]
    rows = [
        [name, result[name]["tokens_per_s"], f"{result[name]['tokens_per_s'] / base:.2f}x"]
        for name in names
    ]
    return "\n\n".join(
        [
            f"The same config built twice (attnless's teacher and `torch.nn.Transformer`, "
            f"pre-LN, same embeddings and generator), trained on the same {setup['batches']} real "
            f"Multi30k batches of at most {setup['max_tokens']} tokens, same Adam, Noam schedule, "
            f"label smoothing and {setup['precision']}; {setup['rounds']} alternating "
            "rounds after a warm-up, all timed rounds counted.",
            table(["model", "target tokens/s", "speed"], rows),
        ]
    )


def limits_markdown(students: dict[str, Any]) -> str:
    """What the student step spends beyond its GEMMs."""
    sizes = {r["size"]: r for r in students["sizes"]}
    shown = [s for s in ("M", "L") if s in sizes] or list(sizes)
    parts = []
    for size in shown:
        b = sizes[size]["breakdown"]
        parts.append(
            f"ALR-{size}: GEMMs {b['GEMM']:.0%} of the step's profiled time, casts and copies "
            f"{b['casts and copies']:.0%}, padding/masking/MSE elementwise work "
            f"{b['pad, mask and MSE']:.0%}, LayerNorm {b['LayerNorm']:.0%}, Adam {b['Adam']:.0%}"
        )
    return "\n\n".join(
        [
            "What limits a student step besides its GEMMs (" + "; ".join(parts) + "):",
            "- **Autocast casts** (under bf16 autocast). Every forward casts the fp32 master "
            "weights to bf16 and every backward casts the bf16 weight gradients back to fp32: "
            "two more passes over the weights, inherent to autocast with fp32 master weights.",
            "- **Adam** reads and writes 16 bytes per parameter per step (the fused kernel: one "
            "pass, where `foreach` makes several).",
            "- **On a CPU shared with other processes**, every multi-threaded operation waits "
            "for the slowest of its threads: small operations (casts, LayerNorm, masks) then "
            "cost a scheduler time slice each and the step falls far below the GEMM ceiling; "
            "measure on an idle machine, or use `runtime.threads` below the number of free cores.",
        ]
    )


def summary_rows(result: dict[str, Any]) -> list[list[str]]:
    """The summary table's rows of one run: figure, measured, target."""
    sec = result["sections"]
    train, decode, students, distill = (sec[k] for k in ("train", "decode", "students", "distill"))
    truncation = sec.get("truncation")
    truncations = [t for t in (truncation, sec.get("truncation_fp32")) if t]
    by = {(r["mode"], r["model"]): r for r in decode["rows"]}
    teacher = decode["rows"][0]["model"]
    hybrid = decode["rows"][1]["model"]
    nocache = decode["nocache"]
    sizes = {r["size"]: r for r in students["sizes"]}
    greedy = {name: by[("greedy, cached", name)]["sentences_per_s"] for name in (teacher, hybrid)}
    summary = [
        [
            "teacher training tokens/s, attnless / torch.nn.Transformer",
            f"{train['ratio']:.2f}x",
            "",
        ],
        [
            "greedy decoding sentences/s, cached / uncached (teacher; hybrid)",
            f"{nocache['speedup'][teacher]:.1f}x; {nocache['speedup'][hybrid]:.1f}x",
            "",
        ],
        [
            "greedy decoding sentences/s, hybrid / teacher (cached)",
            f"{greedy[hybrid] / greedy[teacher]:.2f}x",
            "",
        ],
    ]
    for size in ("M", "L"):
        if size in sizes:
            bf16 = sizes[size]["bf16_ratio"]
            summary.append(
                [
                    f"ALR-{size} student step / {students['autocast']} GEMM ceiling "
                    f"(/ bf16 GEMMs of the same shapes)",
                    f"{sizes[size]['ratio']:.0%}"
                    + (" (no native bf16)" if bf16 is None else f" ({bf16:.0%})"),
                    f"≥ {student_flops.TARGET:.0%}",
                ]
            )
    summary.append(
        [
            f"{distill['layers']}-layer ALR-{distill['size']} distillation epoch, "
            "shared teacher pass / one per layer",
            f"{distill['speedup']:.2f}x faster",
            "≥ 2x",
        ]
    )
    if truncation:
        summary.append(
            [
                f"{truncation['layers']}-layer ALR-{truncation['size']} distillation, "
                f"length-truncated / padded to n = {truncation['n']}",
                "; ".join(f"{t['speedup']:.2f}x faster ({t['autocast']})" for t in truncations),
                "≥ 2.3x",
            ]
        )
    return summary


def machine_label(m: dict[str, Any]) -> str:
    """A run's machine in a few words: the GPU, else the CPU and its cores."""
    return m["gpu"] if "gpu" in m else f"{m['cpu']}, {m['cpu_cores']} cores"


def beside_markdown(result: dict[str, Any], beside: Sequence[tuple[str, dict]]) -> str:
    """The summary figures of this run and of the runs ``beside`` (file, result), side by side:
    each figure is a ratio measured within one run, so the columns compare."""
    readable, skipped = [], []
    for name, other in beside:  # a run recorded by older code may lack a section
        try:
            label, revision = machine_label(other["machine"]), other["machine"]["revision"]
            readable.append((Path(name).name, label, revision, summary_rows(other)))
        except (KeyError, IndexError, TypeError):
            skipped.append(Path(name).name)
    columns = [summary_rows(result)] + [rows for *_, rows in readable]
    figures = list(dict.fromkeys(row[0] for rows in columns for row in rows))
    measured = [{row[0]: row[1] for row in rows} for rows in columns]
    targets = {row[0]: row[2] for rows in columns for row in rows}
    header = ["figure", f"this run ({machine_label(result['machine'])})"]
    header += [f"{label} ([{name}]({name}))" for name, label, *_ in readable]
    rows = [[f, *(col.get(f, "-") for col in measured), targets[f]] for f in figures]
    commits = ", ".join(f"{name}: attnless {revision}" for name, _, revision, _ in readable)
    return (
        "## Beside other machines\n\n"
        "The summary figures of this run next to those of `make bench` runs recorded elsewhere "
        f"({commits}); each is a ratio measured side by side within its own run."
        + (f" Not readable as a result of this version: {', '.join(skipped)}." if skipped else "")
        + "\n\n"
        + table([*header, "target"], rows)
    )


def markdown(result: dict[str, Any], beside: Sequence[tuple[str, dict]] = ()) -> str:
    """``result`` as results/bench.md; ``beside``: (file, result) of runs on other machines,
    whose summary figures are tabled next to this run's."""
    m, model, sec = result["machine"], result["model"], result["sections"]
    cores = m["cpu_cores"]
    flags = ", ".join(m["cpu_flags"]) or "no AVX-512"
    device = m["device"] + (f" ({m['gpu']}, CUDA {m['cuda']})" if "gpu" in m else "")
    threads = f"{m['torch_threads']} torch thread" + ("s" if m["torch_threads"] != 1 else "")
    loads = result["load"]
    load_text = " / ".join(
        "n/a" if loads.get(k) is None else f"{loads[k]:.1f}"
        for k in ("start", "train", "decode", "students", "distill", "truncation", "end")
    )
    info = [
        ["machine", f"{m['cpu']}, {cores} cores ({flags}); {threads}"],
        ["device", device],
        ["software", f"torch {m['torch']}, Python {m['python']}, attnless {m['revision']}"],
        [
            "model",
            f"`{model['config']}`: d = {model['d_model']}, {model['layers']} layers, "
            f"{model['heads']} heads, FFN {model['ffn_dim']}, vocabulary {model['vocab']}; "
            f"students n = {model['n']}",
        ],
        [
            "precision",
            f"runtime.precision = {model['precision']} → {model['autocast']}"
            + (
                f" (a bf16 matmul measured {model['bf16_speedup']:.2f}x the speed of fp32 here)"
                if "bf16_speedup" in model
                else ""
            ),
        ],
        ["load average (1 min): start / each section / end", f"{load_text} on {cores} cores"],
        ["wall time", f"{result['seconds']['total'] / 60:.1f} min"],
    ]
    busy = loads.get("start")
    warning = ""
    if busy is not None and cores and busy > 0.25 * cores:
        warning = (
            f"\n\n> **The machine was busy** (load {busy:.1f} on {cores} cores before the "
            "benchmark started): other processes competed for the cores, so absolute numbers "
            "are low and noisy, and figures that depend on many small operations suffer most. "
            "Re-run `make bench` on an idle machine for reference numbers."
        )
    summary = summary_rows(result)
    train, decode, students, distill = (sec[k] for k in ("train", "decode", "students", "distill"))
    truncations = [t for t in (sec.get("truncation"), sec.get("truncation_fp32")) if t]
    return (
        "\n\n".join(
            [
                "# attnless benchmarks",
                "Written by `make bench` (`python -m benchmarks.bench`): every figure below comes "
                "from one run, each comparison measured side by side in the same process, so the "
                "ratios carry over to other machines better than the absolute numbers." + warning,
                table(["", ""], info),
                "## Summary",
                table(["figure", "measured", "target"], summary),
                *([beside_markdown(result, beside)] if beside else []),
                "## 1. Teacher training throughput",
                train_markdown(train),
                "## 2. Decoding speed",
                decode_speed.markdown(decode),
                "## 3. Student training efficiency",
                student_flops.markdown(students),
                limits_markdown(students),
                "## 4. Distillation epoch: one shared teacher pass",
                distill_epoch.markdown(distill),
                *(
                    [
                        "## 5. Distillation: length-truncated networks",
                        *(distill_epoch.truncation_markdown(t) for t in truncations),
                    ]
                    if truncations
                    else []
                ),
            ]
        )
        + "\n"
    )


def recorded_beside(out: Path, names: list[Path] | None) -> list[tuple[str, dict]]:
    """(file, result) of the runs to table beside this one: ``names``, else every other
    ``bench*.json`` in the folder of ``out`` (``results/bench-gpu.json``: an H200's run)."""
    own = out.with_suffix(".json").resolve()
    if names is None:
        names = sorted(p for p in out.parent.glob("bench*.json") if p.resolve() != own)
    beside = []
    for path in names:
        try:
            beside.append((str(path), json.loads(Path(path).read_text(encoding="utf-8"))))
        except (OSError, ValueError) as err:
            raise SystemExit(f"{path}: not a recorded `make bench` result ({err})") from None
    return beside


def main() -> None:
    relaunch_with_fast_allocator()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="tiny settings (seconds; tests)")
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench.md")
    parser.add_argument(
        "--beside",
        type=Path,
        action="append",
        help="a recorded result (.json) of another machine to table beside this run "
        "(default: the other bench*.json beside --out)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        help="measure nothing: write --out from this recorded result (.json), e.g. after "
        "another machine's result arrived",
    )
    args = parser.parse_args()
    if args.render:
        result = recorded_beside(args.out, [args.render])[0][1]
    else:
        overrides = list(args.set)
        if args.threads:
            overrides.append(f"runtime.threads={args.threads}")
        settings = QUICK if args.quick else FULL
        print(f"benchmarks ({'quick' if args.quick else 'full'} settings):", flush=True)
        result = run(settings, overrides)
    text = markdown(result, recorded_beside(args.out, args.beside))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, text)
    write_text(args.out.with_suffix(".json"), json.dumps(result, indent=2, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
