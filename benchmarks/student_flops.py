"""Distillation: achieved GFLOP/s of a student's training step against a matmul ceiling.

A step is exactly the Distiller's: ``zero_grad``, :func:`attnless.distill.student_backward`
(forward under autocast, masked MSE, backward) and the student's Adam step, on inputs shaped
like the captures of the ALR site (the layer-normed input, fp32, and the attention core's
output, in the autocast dtype) for a batch of real Multi30k sentence lengths. FLOPs are
counted as ``3 * 2 * B * (in * H + H * out)`` (forward and backward of the two Linear layers),
with ``in = out = T * d`` for the T positions the length-truncated network computes.
The ceiling is the time of those six GEMMs alone (``X W1^T``, ``h W2^T``, ``dY W2``, ``dY^T h``,
``dh W1``, ``dh^T X``) on the same device, measured in the same run, alternating with the
student step: in the dtype the step computes in (the autocast dtype, else fp32) and, as a
second reference, in bf16 (the same GEMMs when the step runs under bf16 autocast). The step
needs only five of them (no gradient for the captured input), so the ratio slightly favours
the ceiling.

    python -m benchmarks.student_flops [--sizes S M L] [--batch 256]
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import torch

from attnless import hardware
from attnless.config import Config
from attnless.data.batching import Examples, sentence_batches
from attnless.distill import make_student_optimizer, student_backward
from attnless.model.sites import get_method
from attnless.model.transformer import Padding
from attnless.students import StudentSpec, build_student
from benchmarks.common import best_time, sync, table

TARGET = 0.60  # of the ceiling, for sizes M and L

# profiler op names -> what they are (self time; everything else is "other")
CATEGORIES = {
    "GEMM": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear"),
    "Adam": ("aten::_fused_adam_", "aten::_foreach_"),
    "LayerNorm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "casts and copies": ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous"),
    "pad, mask and MSE": (
        "aten::mul",
        "aten::sub",
        "aten::pow",
        "aten::sum",
        "aten::fill_",
        "aten::constant_pad_nd",
        "aten::leaky_relu",
        "aten::leaky_relu_backward",
        "aten::add",
        "aten::add_",
        "aten::div",
        "aten::zero_",
    ),
}


class StudentBench:
    """One ALR student of ``size`` and its inputs, plus tensors for the six GEMMs."""

    def __init__(
        self, cfg: Config, size: str, lengths: list[int], device: torch.device, seed: int = 0
    ) -> None:
        self.device = device
        self.dtype = hardware.autocast_dtype(cfg.runtime.precision, device)
        spec = StudentSpec("encoder.self", "alr", size, 0)
        torch.manual_seed(seed)
        self.net = build_student(spec, cfg).to(device)
        method = get_method(spec.site, spec.method)
        self.optimizer = make_student_optimizer(self.net, cfg.distill.lr or method.lr, cfg)
        b, t, d = len(lengths), max(lengths), cfg.model.d_model
        # the network computes only the T positions of the batch's longest sentence: the
        # columns of Linear1 and rows of Linear2 that belong to them (FLOPs counted over these)
        self.positions, self.hidden = t, self.net.ff.hidden
        self.in_features = self.out_features = t * d
        tokens = torch.zeros(b, t, dtype=torch.long)
        for i, length in enumerate(lengths):
            tokens[i, :length] = 4
        padding = Padding.from_tokens(tokens.to(device))
        x = torch.randn(b, t, d, device=device)
        target = torch.randn(b, t, d, device=device).to(self.dtype or torch.float32)
        self.args, self.target = (x, padding, None), target * padding.keep[..., None]
        self.count = int(padding.keep.sum()) * d
        self.batch = b
        self.flops = 6 * b * (self.in_features * self.hidden + self.hidden * self.out_features)
        self.ceiling_dtype = self.dtype or torch.float32
        # bf16 GEMMs too where bf16 is native (emulated bf16 runs ~100x slower than fp32)
        native_bf16 = device.type == "cuda" or hardware.cpu_supports_bf16()
        self.gemm_sets = {
            dtype: self._gemm_operands(dtype)
            for dtype in {self.ceiling_dtype, *([torch.bfloat16] if native_bf16 else [])}
        }

    def step(self) -> None:
        """The Distiller's update of one student on one batch."""
        self.optimizer.zero_grad(set_to_none=True)
        student_backward(self.net, self.args, self.target, self.count, self.device, self.dtype)
        self.optimizer.step()

    def _gemm_operands(self, dtype: torch.dtype) -> list[tuple[torch.Tensor, ...]]:
        """``(a, b, out)`` of the six GEMMs of one step, in ``dtype``."""
        b, i, h, o = self.batch, self.in_features, self.hidden, self.out_features
        kw = {"device": self.device, "dtype": dtype}
        x, w1, hid = torch.randn(b, i, **kw), torch.randn(h, i, **kw), torch.randn(b, h, **kw)
        w2, dy, dh = torch.randn(o, h, **kw), torch.randn(b, o, **kw), torch.randn(b, h, **kw)
        pairs = [(x, w1.t()), (hid, w2.t()), (dy, w2), (dy.t(), hid), (dh, w1), (dh.t(), x)]
        return [(a, m, torch.empty(a.size(0), m.size(1), **kw)) for a, m in pairs]

    def gemms(self, dtype: torch.dtype | None = None) -> None:
        """The six GEMMs in ``dtype`` (default: the step's compute dtype)."""
        for a, b, out in self.gemm_sets[dtype or self.ceiling_dtype]:
            torch.mm(a, b, out=out)

    def breakdown(self, steps: int = 2) -> dict[str, float]:
        """Share of the step's time per kind of operation (profiler self time; device time on
        CUDA)."""
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        cuda = self.device.type == "cuda"
        if cuda:
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            for _ in range(steps):
                self.step()
            sync(self.device)
        shares = dict.fromkeys([*CATEGORIES, "other"], 0.0)
        for event in prof.key_averages():
            spent = event.self_device_time_total if cuda else event.self_cpu_time_total
            kind = next(
                (k for k, names in CATEGORIES.items() if event.key.startswith(names)), "other"
            )
            shares[kind] += spent
        total = sum(shares.values()) or 1.0
        return {k: v / total for k, v in shares.items()}


def sentence_lengths(train: Examples, batch: int, seed: int, n: int) -> list[int]:
    """Source lengths of one real distillation batch (the seeded epoch order's first batch)."""
    fits = Examples(
        [s for s, t in zip(train.src, train.tgt) if 0 < len(s) <= n and len(t) < n],
        [t for s, t in zip(train.src, train.tgt) if 0 < len(s) <= n and len(t) < n],
    )
    return [len(fits.src[i]) for i in sentence_batches(fits, batch, seed, 0)[0]]


def measure(
    cfg: Config,
    train: Examples,
    sizes: tuple[str, ...] = ("S", "M", "L"),
    batch: int = 256,
    repeats: int = 3,
    rounds: int = 3,
) -> dict[str, Any]:
    device = hardware.resolve_device(cfg.runtime.device)
    lengths = sentence_lengths(train, batch, cfg.seed, cfg.distill.n)
    results = []
    for size in sizes:
        bench = StudentBench(cfg, size, lengths, device)
        timed = {"step": bench.step, "gemm": bench.gemms}
        if torch.bfloat16 in bench.gemm_sets and bench.ceiling_dtype != torch.bfloat16:
            timed["bf16"] = functools.partial(bench.gemms, torch.bfloat16)
        for run in timed.values():  # warm-up: allocator, kernel selection, optimizer state
            run()
        times: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(rounds):  # alternate, so that load changes hit all alike
            for name, run in timed.items():
                times[name].append(best_time(run, device, repeats))
        step, gemm = min(times["step"]), min(times["gemm"])
        native_bf16 = torch.bfloat16 in bench.gemm_sets
        bf16 = min(times.get("bf16", times["gemm"])) if native_bf16 else None
        results.append(
            {
                "size": size,
                "positions": bench.positions,
                "in": bench.in_features,
                "hidden": bench.hidden,
                "out": bench.out_features,
                "params": sum(p.numel() for p in bench.net.parameters()),
                "batch": bench.batch,
                "gflop": bench.flops / 1e9,
                "step_ms": step * 1e3,
                "step_gflops": bench.flops / step / 1e9,
                "ceiling_ms": gemm * 1e3,
                "ceiling_gflops": bench.flops / gemm / 1e9,
                "ratio": gemm / step,
                "bf16_ceiling_gflops": None if bf16 is None else bench.flops / bf16 / 1e9,
                "bf16_ratio": None if bf16 is None else bf16 / step,
                "breakdown": bench.breakdown(),
            }
        )
        del bench
    return {
        "sizes": results,
        "batch": batch,
        "n": cfg.distill.n,
        "d_model": cfg.model.d_model,
        "autocast": hardware.dtype_name(hardware.autocast_dtype(cfg.runtime.precision, device)),
        "optimizer": "Adam (fused)",
        "repeats": repeats,
        "rounds": rounds,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for r in result["sizes"]:
        target = ("yes" if r["ratio"] >= TARGET else "**no**") if r["size"] in ("M", "L") else ""
        rows.append(
            [
                r["size"],
                f"{r['in']} → {r['hidden']} → {r['out']}",
                r["params"],
                r["step_ms"],
                r["step_gflops"],
                r["ceiling_ms"],
                r["ceiling_gflops"],
                f"{r['ratio']:.0%}",
                target,
                r["bf16_ceiling_gflops"] or "no native bf16",
                "" if r["bf16_ratio"] is None else f"{r['bf16_ratio']:.0%}",
            ]
        )
    header = [
        "ALR size",
        "in → H → out",
        "params",
        "step ms",
        "step GFLOP/s",
        "6 GEMMs ms",
        "GEMM GFLOP/s",
        "step / ceiling",
        f"≥ {TARGET:.0%}",
        "bf16 GEMM GFLOP/s",
        "step / bf16 GEMMs",
    ]
    kinds = list(result["sizes"][0]["breakdown"]) if result["sizes"] else []
    shares = [[r["size"], *(f"{r['breakdown'][k]:.0%}" for k in kinds)] for r in result["sizes"]]
    return "\n\n".join(
        [
            f"Batch of {result['batch']} sentences (source lengths of a real Multi30k batch), "
            f"n = {result['n']}, d = {result['d_model']}; student step = the Distiller's "
            f"(forward in {result['autocast']}, masked MSE, backward, "
            f"{result['optimizer']}); ceiling = the six GEMMs of forward + backward of the "
            f"two Linear layers in {result['autocast']} (the step's compute dtype), same shapes, "
            "same run; the bf16 columns time the same GEMMs in bf16; FLOPs counted as "
            "3 × 2 × B × (in·H + H·out) over the computed positions only (in = out = T·d, T "
            f"= {result['sizes'][0]['positions'] if result['sizes'] else '?'}, the batch's "
            f"longest source; the padded form would multiply n = {result['n']}); best of "
            f"{result['repeats']} in each of {result['rounds']} alternating rounds.",
            table(header, rows),
            "Where a step's time goes (profiler self time, two steps):",
            table(["ALR size", *kinds], shares),
        ]
    )


def main() -> None:
    import tempfile

    from attnless import config as config_mod
    from attnless.prepare import prepare

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/paper.yaml")
    parser.add_argument("--sizes", nargs="+", default=["S", "M", "L"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_mod.load(args.config, [f"run_root={tmp}"])
        device = hardware.resolve_device(cfg.runtime.device)
        if device.type == "cpu":
            hardware.tune_cpu_runtime(cfg.runtime.threads)
        result = measure(cfg, prepare(cfg).train, tuple(args.sizes), args.batch, 3, args.rounds)
    print(markdown(result))


if __name__ == "__main__":
    main()
