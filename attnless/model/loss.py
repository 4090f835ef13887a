"""Generator + label-smoothed cross-entropy with the paper's smoothing, fused and chunked.

The paper's target distribution puts ``1 - eps`` on the gold token and spreads ``eps`` evenly
over the other ``V - 2`` tokens, excluding the gold token and padding (paper-spec.md §1). Its
loss, KL(q || p) per token, differs from the cross-entropy ``-sum q log p`` only by the entropy
of ``q``, a constant; we report the cross-entropy and the plain NLL of the gold token.

Why fused: a plain ``Linear`` + ``F.cross_entropy(label_smoothing=...)`` materialises several
(N, V) fp32 tensors (50 MB each for a 1,600-token batch and V = 8,000); on the CPU their
allocation and page faults alone cost more than the rest of a small Transformer's step. Here
the logits are produced a chunk of rows at a time, and the gradients of the hidden states,
the weight and the bias are formed right away from ``softmax(x) - q``, so no (N, V) tensor
ever exists. Backward only scales the saved gradients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from attnless.model.transformer import PAD

if TYPE_CHECKING:
    from attnless.data.batching import Batch

CHUNK_BYTES = 16 * 2**20  # fp32 logits per chunk: cache- and allocator-friendly


def _loss_and_probs_(x: Tensor, target: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-row smoothed loss and NLL of fp32 logits ``x``; turns ``x`` into softmax(x) in place."""
    vocab = x.size(-1)
    gold_logit = x.gather(1, target[:, None]).squeeze(1)
    total_logit = x.sum(-1)
    pad_logit = x[:, PAD].clone()
    peak = x.amax(-1, keepdim=True)
    x.sub_(peak).exp_()
    norm = x.sum(-1, keepdim=True)
    x.div_(norm)
    lse = (peak + norm.log()).squeeze(1)
    gold = gold_logit - lse  # log-probability of the gold token
    if eps > 0.0:
        others = (total_logit - vocab * lse) - (pad_logit - lse) - gold
        loss = -(1.0 - eps) * gold - eps / (vocab - 2) * others
    else:
        loss = -gold
    return loss, -gold


def _probs_minus_target_(probs: Tensor, target: Tensor, eps: float) -> Tensor:
    """Turn ``softmax(x)`` into ``softmax(x) - q`` in place (the gradient of the smoothed loss)."""
    vocab = probs.size(-1)
    other = eps / (vocab - 2) if eps > 0.0 else 0.0
    if other:
        probs.sub_(other)
        probs[:, PAD] += other
    rows = torch.arange(probs.size(0), device=probs.device)
    probs[rows, target] -= 1.0 - eps - other
    return probs


class _LinearSmoothedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, eps, compute_dtype):
        n, vocab = hidden.size(0), weight.size(0)
        chunk = max(64, CHUNK_BYTES // (4 * vocab))
        want_grad = any(ctx.needs_input_grad[:3])
        h = hidden.to(compute_dtype)
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype)
        loss = hidden.new_zeros((), dtype=torch.float32)
        nll = hidden.new_zeros((), dtype=torch.float32)
        if want_grad:
            grad_h = torch.empty_like(h)
            grad_w = torch.zeros_like(weight, dtype=torch.float32)
            grad_b = torch.zeros_like(bias, dtype=torch.float32)
        for start in range(0, n, chunk):
            h_c, y_c = h[start : start + chunk], target[start : start + chunk]
            x = torch.addmm(b, h_c, w.t()).float()
            loss_c, nll_c = _loss_and_probs_(x, y_c, eps)
            loss += loss_c.sum()
            nll += nll_c.sum()
            if want_grad:
                g = _probs_minus_target_(x, y_c, eps)
                grad_b += g.sum(0)
                g = g.to(compute_dtype)
                torch.mm(g, w, out=grad_h[start : start + chunk])
                grad_w += (g.t() @ h_c).float()
        if want_grad:
            ctx.save_for_backward(grad_h, grad_w, grad_b)
            ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype)
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, _grad_nll):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        return (
            (grad_h * grad_loss).to(h_dtype),
            (grad_w * grad_loss).to(w_dtype),
            (grad_b * grad_loss).to(b_dtype),
            None,
            None,
            None,
        )


def linear_smoothed_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor,
    target: Tensor,
    eps: float,
    compute_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Summed smoothed cross-entropy and summed NLL of ``hidden @ weight.T + bias`` vs ``target``.

    ``hidden`` is (N, d) with only real (non-padding) target positions; ``compute_dtype`` is the
    matmul dtype (default: the autocast dtype when autocast is on, else the weight's dtype).
    The NLL is for logging and carries no gradient.
    """
    if compute_dtype is None:
        device = hidden.device.type
        autocast_on = torch.is_autocast_enabled(device)
        compute_dtype = torch.get_autocast_dtype(device) if autocast_on else weight.dtype
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearSmoothedCrossEntropy.apply(hidden, weight, bias, target, eps, compute_dtype)


def batch_loss(
    model: nn.Module, batch: Batch, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed smoothed loss, summed NLL and the number of target tokens of a batch.

    ``model`` may be wrapped (DDP): the forward pass goes through the wrapper, the generator is
    taken from its ``module``."""
    hidden = model(batch.src, batch.tgt_in)
    gen = getattr(model, "module", model).generator
    keep_index = getattr(batch, "keep_index", None)
    if keep_index is None:
        keep = batch.tgt_out.ne(PAD)
        hidden, target, tokens = hidden[keep], batch.tgt_out[keep], keep.sum()
    else:
        hidden = hidden.reshape(-1, hidden.size(-1)).index_select(0, keep_index)
        target = batch.tgt_out.reshape(-1).index_select(0, keep_index)
        tokens = keep_index.new_full((), keep_index.numel())
    loss, nll = linear_smoothed_cross_entropy(hidden, gen.weight, gen.bias, target, label_smoothing)
    return loss, nll, tokens
