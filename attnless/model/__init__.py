"""The teacher Transformer, its loss, and the replacement networks."""

from attnless.model.transformer import BOS, EOS, PAD, UNK, Seq2SeqTransformer

__all__ = ["BOS", "EOS", "PAD", "UNK", "Seq2SeqTransformer", "build_model", "count_parameters"]


def build_model(cfg, src_vocab: int, tgt_vocab: int) -> Seq2SeqTransformer:
    """The teacher for ``cfg.model`` (a Config or a ModelConfig) and the vocabulary sizes."""
    model_cfg = getattr(cfg, "model", cfg)
    return Seq2SeqTransformer(src_vocab, tgt_vocab, model_cfg)


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())
