"""Time estimates for ``--dry-run`` and the ETA: a cost model, an estimator and a sweep's plan."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from attnless.config import Config
from attnless.params import student_params, student_shape, student_work, teacher_params
from attnless.replacement import Family
from attnless.rundir import RunDir
from attnless.runs import fingerprint, read_json
from attnless.students import student_settings
from attnless.sweep.cells import Cell
from attnless.sweep.students import family_done, family_folder

# Corpus sizes for estimates before a teacher's run folder exists (then data.json is used).
# Token counts per sentence are for an 8k joint BPE (measured on Multi30k de-en; IWSLT assumed).
CORPUS_SIZES = {
    "multi30k": {"train": 29_000, "valid": 1_014, "test": 1_000, "src": 14.8, "tgt": 14.3},
    "iwslt2017": {"train": 206_112, "valid": 888, "test": 8_079, "src": 24.0, "tgt": 23.0},
    "text": {"train": 100_000, "valid": 1_000, "test": 1_000, "src": 25.0, "tgt": 25.0},
}
IWSLT_FR = {"train": 232_825, "valid": 890, "test": 8_597}
MULTI30K_TESTS = {"test": 1_000, "test_2016_flickr": 1_000, "test_2017_mscoco": 461}

# The paper's teacher (6+6 layers, d 128, 8k vocabulary): decoding rates refer to its size.
REFERENCE_TEACHER_PARAMS = 3_809_600


@dataclass(frozen=True)
class CostModel:
    """Seconds from FLOP counts and effective rates: an estimate, not a measurement.

    - teacher training: ``6 x params x tokens`` FLOPs per epoch (encoder params x source tokens,
      decoder + generator params x target tokens) at ``teacher_flops``, plus 3% validation;
    - distillation: per distill call and epoch, one teacher forward pass (``2 x params x
      tokens``) at ``forward_flops``; per student, 3 x its forward FLOPs on a sentence of the
      batches' longest length (the network's ``flops``; the networks multiply only the
      positions present) per training sentence at ``student_flops``, ``hidden_seconds`` per
      hidden activation of the networks that run once per position (decoder self-attention,
      causal cross-attention: length x H per sentence), ``vector_seconds`` per element of its
      LayerNorm/bias vectors per sentence (the elementwise work that dominates the XS and S
      students), ``adam_seconds`` per parameter per optimizer step, and a third of the
      per-sentence cost per validation sentence;
    - evaluation: greedy decoding of the test set at ``decode_sentences`` per second for a
      teacher of the paper's size (scaled by teacher parameters), per cell and once per teacher;
    - ``step_overhead`` seconds per optimizer step (kernel launches; matters on GPUs).

    The rates are assumptions, not measurements of the machine running the estimate: the CPU
    rates are rounded from one 2-core AMD EPYC (AVX512-BF16, bf16 autocast; the paper's
    teacher trained at 4,170 target tokens/s there, 9.6e10 FLOP/s; students' forward +
    backward at about 3e11 FLOP/s; elementwise work about 1.2 ns per vector element and
    sentence; 7.5 ns per per-position hidden activation (fitted to the measured steps of
    decoder self-attention L and cross-attention M, L and paper-mode M students within 5%,
    tcmalloc); Adam 2.1 ns per parameter and step; greedy decoding about 200 sentences/s on
    Multi30k) and scaled linearly by the number of threads (optimistic beyond a few cores);
    an Intel Xeon without fast bf16 runs about 0.8x these, an AMD Zen 3 without AVX512 about
    0.45x. The GPU rates are assumptions for one H100-class GPU except three, fitted to one
    NVIDIA H200 (2026-12-04, bf16, one process): ``step_overhead`` 5.5 ms per student and step
    and ``hidden_seconds`` 0.8 ns per per-position hidden value (kernel launches of the
    networks that run once per position) reproduce the distillation of de-en cross-attention L
    (6 students, 423 s measured) and of encoder + decoder self-attention L together (12
    students, about 325 s from 17 of 21 epochs measured); the teacher decoded 2,541 sentences/s.
    Compare an estimate with the measured wall times a sweep records in its results before
    planning long runs.
    """

    device: str
    threads: int
    teacher_flops: float
    forward_flops: float
    student_flops: float
    vector_seconds: float
    adam_seconds: float
    decode_sentences: float
    step_overhead: float
    hidden_seconds: float

    @classmethod
    def for_machine(cls, device: str = "auto", threads: int | None = None) -> CostModel:
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            return cls("cuda", 0, 1.0e12, 5.0e12, 2.0e14, 5e-12, 1e-11, 2500.0, 0.0055, 8e-10)
        threads = threads or torch.get_num_threads()
        k = threads / 2
        teacher, forward, students, vector, adam, decode = 9.6e10, 8e10, 2.5e11, 1.5e-9, 2.1e-9, 200
        hidden = 7.5e-9
        return cls(
            "cpu",
            threads,
            teacher * k,
            forward * k,
            students * k,
            vector / k,
            adam / k,
            decode * k,
            0.0,
            hidden / k,
        )

    def describe(self) -> str:
        where = f"cpu, {self.threads} threads"
        if self.device != "cpu":
            where = "one GPU (overheads fitted to an H200)"
        return (
            f"{where}: teacher training {self.teacher_flops:.2g} FLOP/s, teacher forward "
            f"{self.forward_flops:.2g} FLOP/s, students {self.student_flops:.2g} FLOP/s + "
            f"{self.vector_seconds:.2g} s per vector element + {self.hidden_seconds:.2g} s per "
            f"per-position hidden value + Adam {self.adam_seconds:.2g} s "
            "per parameter and step, decoding "
            f"{self.decode_sentences:.0f} sentences/s (paper-size teacher)"
        )


def corpus_sizes(cfg: Config, run_dir: Path | None = None) -> dict[str, float]:
    """Train/valid/test sentence counts and tokens per sentence for ``cfg``'s data."""
    d = cfg.data
    sizes = dict(CORPUS_SIZES.get(d.corpus, CORPUS_SIZES["text"]))
    if d.corpus == "iwslt2017" and "fr" in (d.src, d.tgt):
        sizes.update(IWSLT_FR)
    if d.corpus == "multi30k":
        sizes["test"] = MULTI30K_TESTS.get(d.test_set, 1_000)
    stats = read_json(RunDir(run_dir).data_file) if run_dir is not None else None
    if isinstance(stats, dict) and stats.get("train_pairs_kept"):
        kept = stats["train_pairs_kept"]
        sizes.update(
            train=kept,
            valid=stats.get("valid_pairs", sizes["valid"]),
            src=stats.get("train_src_tokens", 0) / kept or sizes["src"],
            tgt=stats.get("train_tgt_tokens", 0) / kept or sizes["tgt"],
        )
    else:
        if d.train_subset:
            sizes["train"] = min(sizes["train"], d.train_subset)
        if d.eval_subset:
            sizes["valid"] = min(sizes["valid"], d.eval_subset)
    sizes["test"] //= d.test_group
    if d.eval_subset:
        sizes["test"] = min(sizes["test"], d.eval_subset)
    return sizes


def computed_fraction(sizes: dict[str, float], n: int, site: str) -> float:
    """The share of a fixed-length network's weights a distillation step multiplies: the
    networks compute only the positions of each batch's longest sentence (exact length
    truncation), and length-sorted batches have a longest sentence about 1.1x their mean
    length (Multi30k, batches of 256: 33% of n = 50)."""
    tokens = sizes["src"] if site == "encoder.self" else (sizes["src"] + sizes["tgt"]) / 2
    return min(1.0, 1.1 * tokens / max(n, 1))


class Estimator:
    """Estimated seconds of teachers, student families and cell evaluations."""

    def __init__(self, model: CostModel) -> None:
        self.model = model

    def _teacher_params(self, cfg: Config) -> dict[str, int]:
        m = cfg.model
        return teacher_params(
            m.d_model,
            m.heads,
            m.ffn_dim,
            m.encoder_layers,
            m.decoder_layers,
            cfg.tokenizer.vocab_size,
        )

    def teacher(self, cfg: Config, run_dir: Path | None = None) -> float:
        """Training the teacher of ``cfg``, then scoring it."""
        s = corpus_sizes(cfg, run_dir)
        p = self._teacher_params(cfg)
        per_sentence = 6 * (p["encoder"] * s["src"] + (p["decoder"] + p["generator"]) * s["tgt"])
        steps = s["train"] * s["tgt"] / max(cfg.train.max_tokens / 1.6, 1)  # padding, batch fn
        epochs = cfg.train.epochs
        if cfg.train.max_steps is not None:
            epochs = min(epochs, cfg.train.max_steps / max(steps, 1))
        seconds = 1.03 * epochs * (s["train"] * per_sentence / self.model.teacher_flops)
        seconds += epochs * steps * self.model.step_overhead
        return seconds + self.evaluation(cfg, run_dir)

    def _distill_epochs(self, cfg: Config, sentences: float) -> float:
        d = cfg.distill
        epochs = float(d.epochs)
        if d.max_steps is not None:
            epochs = min(epochs, d.max_steps / max(math.ceil(sentences / d.batch_size), 1))
        return epochs

    def teacher_passes(self, cfg: Config, decoder: bool, run_dir: Path | None = None) -> float:
        """The teacher forward passes of one distillation call (shared by its students)."""
        s = corpus_sizes(cfg, run_dir)
        p = self._teacher_params(cfg)
        per_sentence = 2 * p["encoder"] * s["src"]
        if decoder:
            per_sentence += 2 * p["decoder"] * s["tgt"]
        sentences = s["train"] + (s["valid"] if cfg.distill.validate_every_epoch else 0)
        epochs = self._distill_epochs(cfg, s["train"])
        return epochs * sentences * per_sentence / self.model.forward_flops

    def family(
        self, cfg: Config, family: Family, layers: int, run_dir: Path | None = None
    ) -> float:
        """Distilling one (site, method, size) at ``layers`` layers, without teacher passes."""
        s = corpus_sizes(cfg, run_dir)
        m, n = cfg.model, cfg.distill.n
        params, vectors = student_shape(family.key, family.size, n, m.d_model, m.heads)
        length = max(1, round(computed_fraction(s, n, family.site) * n))  # longest in a batch
        causal = cfg.distill.cross_causal
        flops, hidden = student_work(family.key, family.size, length, n, m.d_model, m.heads, causal)
        per_sentence = (
            3 * flops / self.model.student_flops
            + hidden * self.model.hidden_seconds
            + vectors * self.model.vector_seconds
        )
        epochs = self._distill_epochs(cfg, s["train"])
        valid = s["valid"] if cfg.distill.validate_every_epoch else 0
        steps = epochs * math.ceil(s["train"] / cfg.distill.batch_size) * layers
        per_step = self.model.step_overhead + params * self.model.adam_seconds
        return epochs * layers * per_sentence * (s["train"] + valid / 3) + steps * per_step

    def evaluation(self, cfg: Config, run_dir: Path | None = None, flops: float = 0) -> float:
        """Greedy decoding of the test set(s), plus ``flops`` per sentence for students."""
        s = corpus_sizes(cfg, run_dir)
        p = self._teacher_params(cfg)
        rate = self.model.decode_sentences * REFERENCE_TEACHER_PARAMS / max(sum(p.values()), 1)
        sentences = s["test"] * len(cfg.eval.splits)
        return sentences / rate + sentences * flops / self.model.student_flops

    def cell_eval(self, cell: Cell) -> float:
        """Evaluating one cell: decoding with its students in place."""
        cfg = cell.config
        m = cfg.model
        flops = 0.0
        for fam, layers in cell.families().items():
            p = student_params(fam.key, fam.size, cfg.distill.n, m.d_model, m.heads)
            # decoder-side students also run one position per decoding step
            flops += 2 * p * len(layers) * (1.0 if fam.site == "encoder.self" else 1.4)
        return self.evaluation(cfg, None, flops)


FamilyKey = tuple[Path, Family, str]  # teacher folder, family, hash of its distill settings


def family_key(cfg: Config, fam: Family) -> FamilyKey:
    """The students of ``fam`` that ``cfg`` distils from its teacher: cells whose distill
    settings differ (e.g. ``distill.cross_causal``) need students of their own."""
    return cfg.run_dir(), fam, fingerprint(student_settings(cfg, fam, ""))


@dataclass
class Plan:
    """What a sweep (or one shard) still has to do, with estimated seconds."""

    cells: list[Cell]
    done: set[str]
    teachers: dict[Path, float]  # run folder -> seconds (0 when trained)
    families: dict[FamilyKey, float]  # seconds (0 when distilled)
    students: dict[FamilyKey, int]  # students (layers) per family
    passes: dict[Hashable, float]  # teacher passes of each distill call (a family, or a group)
    call_of: dict[FamilyKey, Hashable]  # the call that distils a pending family
    evals: dict[str, float]  # cell id -> seconds
    cell_seconds: dict[str, float]  # each cell's share of everything it needs

    @property
    def pending(self) -> list[Cell]:
        return [c for c in self.cells if c.id not in self.done]

    def total(self) -> float:
        return (
            sum(self.teachers.values())
            + sum(self.families.values())
            + sum(self.passes.values())
            + sum(self.evals.values())
        )


def make_plan(
    cells: list[Cell],
    done: set[str],
    teacher_steps: dict[str, int | None],
    model: CostModel,
    together: bool = False,
) -> Plan:
    """Estimate the work left; ``teacher_steps``: teacher id -> step, for trained teachers.
    Each family's distill call runs its own teacher passes; ``together`` (``--together``):
    one call per teacher and grid ``set`` shares them."""
    est = Estimator(model)
    pending = [c for c in cells if c.id not in done]
    teachers: dict[Path, float] = {}
    needed: dict[FamilyKey, set[int]] = {}
    users: dict[FamilyKey, list[Cell]] = {}
    for cell in pending:
        run_dir = cell.teacher_dir
        if run_dir not in teachers:
            scored = RunDir(run_dir).eval_dir(RunDir.teacher_variant("best")).is_dir()
            trained = cell.teacher in teacher_steps or scored
            teachers[run_dir] = 0.0 if trained else est.teacher(cell.config, run_dir)
        for fam, layers in cell.families().items():
            key = family_key(cell.config, fam)
            needed.setdefault(key, set()).update(layers)
            users.setdefault(key, []).append(cell)
    families: dict[FamilyKey, float] = {}
    students: dict[FamilyKey, int] = {}
    decoder_side: dict[Hashable, bool] = {}
    call_of: dict[FamilyKey, Hashable] = {}
    config_of_call: dict[Hashable, Cell] = {}
    for key, layers in needed.items():
        run_dir, fam, _ = key
        cfg = users[key][0].config
        sha = RunDir(run_dir).teacher_fingerprint(cfg.distill.teacher_checkpoint)
        if sha and family_done(family_folder(cfg, fam, sha), sorted(layers)):
            families[key] = 0.0
            continue
        families[key] = est.family(cfg, fam, len(layers), run_dir)
        students[key] = len(layers)
        call = (run_dir, users[key][0].overrides) if together else key
        call_of[key] = call
        config_of_call.setdefault(call, users[key][0])
        decoder_side[call] = decoder_side.get(call, False) or fam.site != "encoder.self"
    passes = {
        call: est.teacher_passes(config_of_call[call].config, decoder, call[0])
        for call, decoder in decoder_side.items()
    }
    callers: dict[Hashable, set[str]] = {}
    for key, call in call_of.items():
        callers.setdefault(call, set()).update(c.id for c in users[key])
    evals = {c.id: est.cell_eval(c) for c in pending}
    per_teacher: dict[Path, int] = {}
    for c in pending:
        per_teacher[c.teacher_dir] = per_teacher.get(c.teacher_dir, 0) + 1
    cell_seconds = {}
    for c in pending:
        run_dir = c.teacher_dir
        share = evals[c.id] + teachers[run_dir] / per_teacher[run_dir]
        share += sum(passes[call] / len(ids) for call, ids in callers.items() if c.id in ids)
        for fam in c.families():
            key = family_key(c.config, fam)
            share += families[key] / len(users[key])
        cell_seconds[c.id] = share
    return Plan(cells, done, teachers, families, students, passes, call_of, evals, cell_seconds)


def fmt_seconds(seconds: float) -> str:
    """``42s``, ``4m58s``, ``1h26m`` or ``3.5 days``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours / 24:.1f} days"
