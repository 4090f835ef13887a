"""Training tokens/s: the attnless teacher vs an identically configured ``torch.nn.Transformer``.

Both models are built from the same config (the ``paper`` preset by default), trained in one
process on the same real Multi30k batches, with the same optimizer, schedule, label smoothing
and precision. Rounds alternate between the models so drifts in machine speed hit both alike.

    python -m benchmarks.train_throughput [--config experiments/paper.yaml] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from attnless import config as config_mod
from attnless import hardware
from attnless.allocator import active_allocator, relaunch_with_fast_allocator
from attnless.config import Config
from attnless.data.batching import Batch, collate, epoch_batches
from attnless.model import build_model
from attnless.model.loss import batch_loss
from attnless.model.transformer import PAD, sinusoidal_table
from attnless.prepare import prepare
from attnless.train import make_optimizer, noam_lr


class TorchReference(nn.Module):
    """The same teacher written with ``torch.nn.Transformer`` (pre-LN, sinusoidal positions,
    separate embeddings and generator), trained with ``F.cross_entropy(label_smoothing)``."""

    def __init__(self, cfg: Config, src_vocab: int, tgt_vocab: int) -> None:
        super().__init__()
        m = cfg.model
        self.scale = math.sqrt(m.d_model)
        self.src_embed = nn.Embedding(src_vocab, m.d_model, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, m.d_model, padding_idx=PAD)
        self.register_buffer("positions", sinusoidal_table(m.max_positions, m.d_model), False)
        self.dropout = nn.Dropout(m.dropout)
        with warnings.catch_warnings():  # nested tensors do not apply to pre-LN layers
            warnings.filterwarnings("ignore", "enable_nested_tensor is True")
            self.transformer = self._transformer(m)
        self.generator = nn.Linear(m.d_model, tgt_vocab)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @staticmethod
    def _transformer(m) -> nn.Transformer:
        return nn.Transformer(
            d_model=m.d_model,
            nhead=m.heads,
            num_encoder_layers=m.encoder_layers,
            num_decoder_layers=m.decoder_layers,
            dim_feedforward=m.ffn_dim,
            dropout=m.dropout,
            batch_first=True,
            norm_first=True,
        )

    def embed(self, table: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
        return self.dropout(table(tokens) * self.scale + self.positions[: tokens.size(1)])

    def loss(self, batch: Batch, label_smoothing: float) -> torch.Tensor:
        src_pad, tgt_pad = batch.src.eq(PAD), batch.tgt_in.eq(PAD)
        causal = nn.Transformer.generate_square_subsequent_mask(
            batch.tgt_in.size(1), device=batch.src.device, dtype=torch.bool
        )
        hidden = self.transformer(
            self.embed(self.src_embed, batch.src),
            self.embed(self.tgt_embed, batch.tgt_in),
            tgt_mask=causal,
            src_key_padding_mask=src_pad,
            tgt_key_padding_mask=tgt_pad,
            memory_key_padding_mask=src_pad,
        )
        logits = self.generator(hidden)
        return F.cross_entropy(
            logits.flatten(0, 1).float(),
            batch.tgt_out.flatten(),
            ignore_index=PAD,
            label_smoothing=label_smoothing,
        )


def run_steps(step_fn, batches: list[Batch]) -> tuple[float, int]:
    """Seconds and target tokens for one pass over ``batches``."""
    tokens = sum(b.target_tokens for b in batches)
    start = time.perf_counter()
    for batch in batches:
        step_fn(batch)
    return time.perf_counter() - start, tokens


def measure(cfg: Config, steps: int, warmup: int, rounds: int) -> dict:
    device = hardware.resolve_device(cfg.runtime.device)
    dtype = hardware.autocast_dtype(cfg.runtime.precision, device)
    if device.type == "cpu":
        hardware.tune_cpu_runtime(cfg.runtime.threads)
    prepared = prepare(cfg)
    train = prepared.train
    indices = epoch_batches(train, cfg.train.max_tokens, cfg.seed, 0)[: warmup + steps]
    batches = [collate(train, i).to(device) for i in indices]
    warm, timed = batches[:warmup], batches[warmup:]
    tok = prepared.tokenizer
    torch.manual_seed(cfg.seed)
    ours = build_model(cfg, tok.src_vocab_size, tok.tgt_vocab_size).to(device).train()
    ref = TorchReference(cfg, tok.src_vocab_size, tok.tgt_vocab_size).to(device).train()
    optimizers = {
        "attnless": make_optimizer(ours, cfg),
        "torch.nn.Transformer": make_optimizer(ref, cfg),
    }
    steps_done = {name: 0 for name in optimizers}

    def step(name: str, batch: Batch) -> None:
        opt = optimizers[name]
        steps_done[name] += 1
        for group in opt.param_groups:
            group["lr"] = noam_lr(steps_done[name], cfg.model.d_model, cfg.train.warmup)
        with hardware.autocast(device, dtype):
            if name == "attnless":
                loss_sum, _, n = batch_loss(ours, batch, cfg.train.label_smoothing)
                loss = loss_sum / n
            else:
                loss = ref.loss(batch, cfg.train.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for name in optimizers:
        run_steps(lambda b, name=name: step(name, b), warm)
    totals = {name: [0.0, 0] for name in optimizers}
    for _ in range(rounds):
        for name in optimizers:
            seconds, tokens = run_steps(lambda b, name=name: step(name, b), timed)
            totals[name][0] += seconds
            totals[name][1] += tokens
        if device.type == "cuda":
            torch.cuda.synchronize()
    result = {
        name: {"tokens_per_s": tokens / seconds, "seconds": seconds, "tokens": tokens}
        for name, (seconds, tokens) in totals.items()
    }
    result["ratio"] = (
        result["attnless"]["tokens_per_s"] / result["torch.nn.Transformer"]["tokens_per_s"]
    )
    result["setup"] = {
        "config": cfg.name,
        "device": str(device),
        "precision": hardware.compute_text(dtype),
        "threads": torch.get_num_threads(),
        "allocator": active_allocator(),
        "torch": torch.__version__,
        "batches": len(timed),
        "rounds": rounds,
        "max_tokens": cfg.train.max_tokens,
    }
    return result


def main() -> None:
    relaunch_with_fast_allocator()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="experiments/paper.yaml")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--steps", type=int, default=30, help="timed batches per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_mod.load(args.config, [f"run_root={tmp}", *args.set])
        result = measure(cfg, args.steps, args.warmup, args.rounds)
    setup = result["setup"]
    print(
        f"training throughput, {setup['config']} config, {setup['device']}, {setup['precision']}, "
        f"{setup['threads']} threads, {setup['allocator']} allocator, torch {setup['torch']}, "
        f"{setup['batches']} real Multi30k batches x {setup['rounds']} rounds"
    )
    for name in ("attnless", "torch.nn.Transformer"):
        print(f"  {name:22s} {result[name]['tokens_per_s']:8.0f} target tokens/s")
    print(f"  ratio                  {result['ratio']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
