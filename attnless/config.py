"""Typed configuration: one pydantic model per section, YAML loading, dotted overrides, validation.

A config file is a YAML mapping whose top-level keys are the sections below (plus ``name``,
``seed`` and ``run_root``). Every key is optional; missing keys take the defaults here, which
are the paper's teacher hyperparameters (paper-spec.md §1). Unknown keys, ill-typed values and
numbers out of range (``RANGES``) are rejected with an error that names the key, the value and
what was expected, and where the value came from: the file, or the ``--set`` override or
command-line option that gave it.

Why pydantic: typed attribute access (``cfg.train.epochs``), strict validation with an error
per field, and already a dependency of the ecosystem; OmegaConf would add interpolation we do
not need. Its errors are translated into one line naming the key (:func:`error_line`).

The ``runtime`` section says where and how a job runs (device, precision, threads, sweep
polling, memory budget), not what it computes; it is never part of a teacher's or a cell's id.
Configs written before it existed keep ``train.device``, ``train.precision`` and
``train.threads``; they are read as the ``runtime`` keys, with a one-line note.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]  # the repository (experiments/ holds the presets)


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range.

    ``keys`` are the dotted keys the error is about (used to name the override that set them).
    """

    def __init__(self, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


def _error(key: str, text: str, *others: str) -> ConfigError:
    """``ConfigError("key: text")`` about ``key`` (and ``others``)."""
    return ConfigError(f"{key}: {text}", (key, *others))


# --------------------------------------------------------------------------- value types


def _number(value: Any) -> Any:
    """Integers as floats, and numbers YAML 1.1 reads as strings (``3e-3``, without a dot)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def _text(value: Any) -> Any:
    """Numbers as their text, e.g. ``layers: 2``, ``name: 2024``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


# Strict: no silent conversions (true is not 1, "3" is not 3) besides the two above.
Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_number), Strict()]
Bool = Annotated[bool, Strict()]
Text = Annotated[str, BeforeValidator(_text), Strict()]
Key = Annotated[str, BeforeValidator(str)]  # a mapping's key
Pair = Annotated[tuple[Float, ...], Field(min_length=2, max_length=2)]  # Adam's betas


class Section(BaseModel):
    """A config section: unknown keys are errors, and so are ill-typed assignments."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# --------------------------------------------------------------------------- sections


class SplitFiles(Section):
    """Source and target file of one split of a ``text`` corpus."""

    src: Text = ""
    tgt: Text = ""


class DataConfig(Section):
    corpus: Text = "multi30k"  # multi30k | iwslt2017 | text
    src: Text = "de"
    tgt: Text = "en"
    data_dir: Text | None = None  # default: $ATTNLESS_DATA, else ./data
    test_set: Text = "test"  # multi30k: test (= test_2016_flickr) or test_2017_mscoco
    train_subset: Int | None = None  # keep the first N training pairs (CPU demos, tests)
    eval_subset: Int | None = None  # keep the first N valid/test pairs (tests only)
    test_group: Int = 1  # test split: join each k consecutive pairs into one (length tests)
    max_len: Int = 50  # drop training pairs longer than this (subword tokens), the paper's MAX_LEN
    files: dict[Key, SplitFiles] = Field(default_factory=dict)  # text corpus: split -> files


class TokenizerConfig(Section):
    vocab_size: Int = 8000
    joint: Bool = True  # one model over both languages (else one per side)
    model_type: Text = "bpe"  # bpe | unigram
    character_coverage: Float = 1.0
    max_sentences: Int = 2_000_000  # sentencepiece input_sentence_size


class ModelConfig(Section):
    d_model: Int = 128
    heads: Int = 8
    encoder_layers: Int = 6
    decoder_layers: Int = 6
    ffn_dim: Int = 512
    dropout: Float = 0.1
    attention_dropout: Float = 0.1
    max_positions: Int = 1024
    tie_embeddings: Bool = False


class TrainConfig(Section):
    epochs: Int = 20
    max_steps: Int | None = None  # stop after this many updates (tests, smoke runs)
    max_tokens: Int = 1500  # token budget per batch (per process), like the paper's batch_size_fn
    accumulate: Int = 1  # batches per update and process (fairseq's --update-freq)
    lr_scale: Float = 1.0  # Noam factor
    warmup: Int = 4000
    betas: Pair = (0.9, 0.98)
    eps: Float = 1e-9
    weight_decay: Float = 0.0
    clip_norm: Float = 0.0  # 0 = no clipping (the paper)
    label_smoothing: Float = 0.1
    validate_every_epoch: Bool = True
    log_every: Int = 50  # steps between metrics.jsonl lines
    save_every: Int = 0  # extra checkpoint every N steps (0: only at epoch ends)
    average_last: Int = 0  # write checkpoints/average.pt, the mean of the last N epochs' weights
    progress: Bool = True


class DecodeConfig(Section):
    beam: Int = 1  # 1 = greedy
    length_penalty: Float = 1.0  # GNMT-style alpha; 0 disables
    max_len_a: Float = 1.2  # output length cap = a * src_len + b
    max_len_b: Int = 10
    batch_tokens: Int = 6000  # source tokens per decoding batch
    use_cache: Bool = True


class DistillConfig(Section):
    """Students: which attention blocks to replace, and how to train the replacements."""

    replace: list[Text] = Field(default_factory=lambda: ["encoder.self=alr:M"])  # site=method:sizes
    layers: Text = "all"  # all | 0-5 | 0,2,4
    n: Int = 50  # fixed sentence length of the replacement networks (the paper's MAX_LEN)
    epochs: Int = 21
    max_steps: Int | None = None
    batch_size: Int = 2000  # sentences per batch and process (the paper's); YAML: or per corpus
    accumulate: Int = 1  # batches per student update and process
    lr: Float | None = None  # default: the method's learning rate from the paper
    betas: Pair = (0.9, 0.98)
    eps: Float = 1e-9
    teacher_checkpoint: Text = "best"  # best | last | average
    cross_causal: Bool = True  # cross-attention students see decoder positions <= i only
    validate_every_epoch: Bool = True
    log_every: Int = 10
    progress: Bool = True


class EvalConfig(Section):
    splits: list[Text] = Field(default_factory=lambda: ["test"])
    checkpoint: Text = "best"  # best | last | average
    chrf: Bool = True
    replace: list[Text] = Field(default_factory=list)  # site=method:size; empty = the teacher
    layers: Text = "all"
    finetune_epochs: Int = 0  # fine-tune the hybrid end to end after insertion (not the paper)


class RuntimeConfig(Section):
    """Where and how a job runs, not what it computes (never part of a teacher's or cell's id)."""

    device: Text = "auto"  # auto | cpu | cuda | cuda:N
    # auto | bf16 | fp32. auto: bf16 where measured faster, decided once when the teacher is
    # trained and recorded in its run folder; distillation and evaluation keep that choice
    precision: Text = "auto"
    threads: Int | None = None  # torch intra-op threads; default: all cores
    sweep_poll_s: Float = 5.0  # seconds between looks at work another sweep process holds
    distill_memory_gb: Float | None = None  # students per distill call; default: half the memory
    # a hybrid's evaluation times its greedy decoding against its teacher's on the same sources,
    # alternating, best of this many passes each (0: no timing, no teacher speed recorded)
    speed_rounds: Int = 2


class Config(Section):
    name: Text = "run"
    seed: Int = 1
    run_root: Text = "runs"
    dir: Text | None = None  # explicit run folder (default: <run_root>/<corpus>.<src>-<tgt>/<name>)
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    def run_dir(self) -> Path:
        """Folder of this run: ``dir`` if set, else ``<run_root>/<corpus>.<src>-<tgt>/<name>``."""
        if self.dir:
            return Path(self.dir)
        d = self.data
        return Path(self.run_root) / f"{d.corpus}.{d.src}-{d.tgt}" / self.name

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self.model_dump())


CHECKPOINTS = ("best", "last", "average")
SPLITS = ("valid", "test")  # the splits evaluate scores


# Settings a config may give per corpus, as a mapping {corpus: value}, resolved for data.corpus
# when the config is built (experiments/paper.yaml: the distillation batch of each corpus).
PER_CORPUS = ("distill.batch_size",)

# Keys that moved to the runtime section; older configs (run folders, presets) still give them.
MOVED = {f"train.{key}": f"runtime.{key}" for key in ("device", "precision", "threads")}

CHOICES: dict[str, tuple[str, ...]] = {
    "data.corpus": ("multi30k", "iwslt2017", "text"),
    "tokenizer.model_type": ("bpe", "unigram"),
    "distill.teacher_checkpoint": CHECKPOINTS,
    "eval.checkpoint": CHECKPOINTS,
    "runtime.precision": ("auto", "bf16", "fp32"),
}


@dataclass(frozen=True)
class Range:
    """The allowed values of a numeric setting: ``low``..``high`` (None: unbounded), each end
    included unless ``open_low`` / ``open_high``; ``text`` describes it in errors instead of the
    bounds. NaN and infinities are never allowed."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    text: str = ""

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def describe(self) -> str:
        if self.text:
            return self.text
        if self.high is None:
            return f"greater than {self.low:g}" if self.open_low else f"at least {self.low:g}"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


COUNT = Range(1, text="positive")  # integers
NONNEGATIVE = Range(0)
POSITIVE = Range(0, open_low=True)
FRACTION = Range(0, 1, open_high=True)  # probabilities (dropout, smoothing), Adam's betas

# Every numeric setting, checked by ``validate`` (a null optional value is not checked; a tuple
# is checked item by item).
RANGES: dict[str, Range] = {
    "seed": NONNEGATIVE,
    "data.train_subset": COUNT,
    "data.eval_subset": COUNT,
    "data.test_group": COUNT,
    "data.max_len": COUNT,
    "tokenizer.vocab_size": Range(5),  # ids 0-3 are pad, unk, bos, eos
    "tokenizer.character_coverage": Range(0, 1, open_low=True),
    "tokenizer.max_sentences": COUNT,
    "model.d_model": COUNT,
    "model.heads": COUNT,
    "model.encoder_layers": COUNT,
    "model.decoder_layers": COUNT,
    "model.ffn_dim": COUNT,
    "model.dropout": FRACTION,
    "model.attention_dropout": FRACTION,
    "model.max_positions": COUNT,
    "train.epochs": COUNT,
    "train.max_steps": COUNT,
    "train.max_tokens": COUNT,
    "train.accumulate": COUNT,
    "train.lr_scale": POSITIVE,
    "train.warmup": COUNT,
    "train.betas": FRACTION,
    "train.eps": POSITIVE,
    "train.weight_decay": NONNEGATIVE,
    "train.clip_norm": NONNEGATIVE,
    "train.label_smoothing": FRACTION,
    "train.log_every": COUNT,
    "train.save_every": NONNEGATIVE,
    "train.average_last": NONNEGATIVE,
    "decode.beam": COUNT,
    "decode.length_penalty": NONNEGATIVE,
    "decode.max_len_a": NONNEGATIVE,
    "decode.max_len_b": NONNEGATIVE,
    "decode.batch_tokens": COUNT,
    "distill.n": COUNT,
    "distill.epochs": COUNT,
    "distill.max_steps": COUNT,
    "distill.batch_size": COUNT,
    "distill.accumulate": COUNT,
    "distill.lr": POSITIVE,
    "distill.betas": FRACTION,
    "distill.eps": POSITIVE,
    "distill.log_every": COUNT,
    "eval.finetune_epochs": NONNEGATIVE,
    "runtime.threads": COUNT,
    "runtime.sweep_poll_s": POSITIVE,
    "runtime.speed_rounds": NONNEGATIVE,
    "runtime.distill_memory_gb": POSITIVE,
}


def data_root(cfg: DataConfig) -> Path:
    """The data root: ``data.data_dir``, else ``$ATTNLESS_DATA``, else ``./data``."""
    return Path(cfg.data_dir or os.environ.get("ATTNLESS_DATA") or "data")


# --------------------------------------------------------------------------- building


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# What a value of each pydantic error type should have been.
EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
}


def dotted(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a key: ``("train", "betas", 1)`` -> ``train.betas[1]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _keys_at(loc: Sequence[str | int]) -> list[str]:
    """The keys the mapping at ``loc`` of a Config may have (``()``: the sections)."""
    tp: Any = Config
    for part in loc:  # through sections and the values of mappings (data.files)
        is_model = isinstance(tp, type) and issubclass(tp, BaseModel)
        tp = tp.model_fields[part].annotation if is_model else typing.get_args(tp)[-1]
    return list(tp.model_fields)


def error_line(error: Any) -> tuple[str, str]:
    """One pydantic error about a Config value as (its dotted key, one line naming the key and
    what was expected)."""
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    key = dotted(loc)
    if kind == "extra_forbidden":
        return key, f"unknown key {key}; expected one of: {', '.join(_keys_at(loc[:-1]))}"
    if kind in ("too_short", "too_long"):  # a Pair with another number of values
        count = error["ctx"].get("min_length", error["ctx"].get("max_length"))
        return key, f"{key}: expected {count} values, got {value!r}"
    if kind in EXPECTED:
        return key, f"{key}: expected {EXPECTED[kind]}, got {value!r}"
    return key, f"{key}: {error['msg']}, got {value!r}"


def _build(values: dict[str, Any]) -> Config:
    """The Config of ``values``; its first problem (unknown keys first) as a ConfigError."""
    try:
        return Config.model_validate(values)
    except ValidationError as err:
        first = min(err.errors(), key=lambda e: e["type"] != "extra_forbidden")
        key, line = error_line(first)
        raise ConfigError(line, (key,)) from None


def _get(cfg: Config, key: str) -> Any:
    """The value of a dotted key (``train.epochs``)."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_range(key: str, value: Any) -> None:
    """Raise ConfigError unless the numeric ``value`` of ``key`` is in ``RANGES[key]`` (None
    passes: an optional setting left out; a tuple is checked item by item)."""
    if value is None:
        return
    items = value if isinstance(value, tuple) else (value,)
    allowed = RANGES[key]
    for i, item in enumerate(items):
        if item not in allowed:
            where = f"{key}[{i}]" if isinstance(value, tuple) else key
            raise _error(where, f"must be {allowed.describe()}, got {item!r}", key)


def layer_indices(text: str, where: str = "layers") -> list[int] | None:
    """The layers named by a ``layers`` setting: None for ``all``, else the sorted indices
    (:class:`attnless.replacement.LayerSet`, whose errors name ``where`` and the value)."""
    from attnless.replacement import LayerSet

    indices = LayerSet.parse(text, where).indices
    return None if indices is None else list(indices)


def resolve_per_corpus(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every :data:`PER_CORPUS` setting given as {corpus: value} replaced by
    the value for ``data.corpus``."""
    data = values.get("data")
    default = DataConfig.model_fields["corpus"].default
    corpus = data.get("corpus", default) if isinstance(data, dict) else None
    out = dict(values)
    for key in PER_CORPUS:
        section, name = key.split(".")
        node = out.get(section)
        if not isinstance(node, dict) or not isinstance(node.get(name), dict):
            continue
        by_corpus = node[name]
        if corpus not in by_corpus:
            raise ConfigError(
                f"{key}: no value for data.corpus {corpus!r}; the mapping gives "
                f"{', '.join(map(str, by_corpus))} (add {corpus}: VALUE or give one number)"
            )
        out[section] = {**node, name: by_corpus[corpus]}
    return out


_NOTED: set[str] = set()  # moved keys already noted in this process


def _note_moved(keys: Sequence[str], source: str) -> None:
    """Say once per process and key that ``keys`` (of :data:`MOVED`) are read as their new keys."""
    new = [key for key in keys if key not in _NOTED]
    if new:
        _NOTED.update(new)
        log.warning(
            "%s: %s moved to the runtime section: read as %s",
            source,
            ", ".join(new),
            ", ".join(MOVED[key] for key in new),
        )


def move_runtime_keys(values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` with the old keys of :data:`MOVED` (``train.precision`` ...) moved to the
    runtime section; where the runtime section gives the same key too, its value wins."""
    train, runtime = values.get("train"), values.get("runtime")
    if not isinstance(train, dict) or not isinstance(runtime, dict | None):
        return values
    old = [key for key in MOVED if key.split(".")[1] in train]
    if not old:
        return values
    _note_moved(old, source)
    names = [key.split(".")[1] for key in old]
    return {
        **values,
        "train": {k: v for k, v in train.items() if k not in names},
        "runtime": {**{name: train[name] for name in names}, **(runtime or {})},
    }


def validate(cfg: Config) -> Config:
    """Check choices, ranges and cross-field constraints; raise ConfigError naming the key."""
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise _error(key, f"{value!r} is not one of {', '.join(choices)}")
    for key in RANGES:
        check_range(key, _get(cfg, key))
    for key in ("distill.layers", "eval.layers"):
        layer_indices(_get(cfg, key), key)
    if not cfg.eval.splits:
        raise _error("eval.splits", f"empty; expected one or more of {', '.join(SPLITS)}")
    for split in cfg.eval.splits:
        if split not in SPLITS:
            raise _error("eval.splits", f"{split!r} is not one of {', '.join(SPLITS)}")
    if cfg.model.d_model % cfg.model.heads:
        raise _error(
            "model.d_model",
            f"{cfg.model.d_model} must be divisible by model.heads ({cfg.model.heads})",
            "model.heads",
        )
    if cfg.model.max_positions <= cfg.data.max_len:
        raise _error(
            "model.max_positions",
            f"{cfg.model.max_positions} must exceed data.max_len ({cfg.data.max_len}): the "
            "decoder reads BOS plus up to data.max_len target tokens",
            "data.max_len",
        )
    if cfg.data.src == cfg.data.tgt:
        both = ("data.src", "data.tgt")
        raise ConfigError(f"data.src and data.tgt are both {cfg.data.src!r}", both)
    if cfg.data.corpus == "text":
        if "train" not in cfg.data.files:
            raise _error("data.files.train", "the text corpus needs train files (src, tgt)")
        for split, files in cfg.data.files.items():
            if not files.src or not files.tgt:
                raise _error(f"data.files.{split}", "both src and tgt paths are required")
    return cfg


@dataclass(frozen=True)
class Override:
    """A value given on the command line: ``label`` is how it was written (``--set
    train.epochs=3``, ``--beam 4``), ``path`` the config key it sets."""

    label: str
    path: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def concerns(self, key: str) -> bool:
        """Whether an error about ``key`` (``train.betas[0]``, ``data.files.train``) is about
        the value this override set."""
        return any(
            a == b or a.startswith(f"{b}.") or a.startswith(f"{b}[")
            for a, b in ((key, self.key), (self.key, key))
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` into (path, value); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({err})") from None
    return path, value


def option(flag: str, key: str, value: Any) -> Override:
    """A command-line option that sets ``key``, e.g. ``option("--beam", "decode.beam", 4)``;
    errors about its value name the option (``--beam 0: ...``)."""
    values = value if isinstance(value, list) else [value]
    return Override(" ".join(f"{flag} {v}" for v in values), tuple(key.split(".")), value)


def _as_override(item: str | Override) -> Override:
    """``item`` as an Override; one of the old keys of :data:`MOVED` sets its new key."""
    if not isinstance(item, Override):
        path, value = parse_override(item)
        item = Override(f"--set {item}", tuple(path), value)
    if item.key in MOVED:
        _note_moved([item.key], item.label)
        item = dataclasses.replace(item, path=tuple(MOVED[item.key].split(".")))
    return item


def apply_overrides(values: dict[str, Any], overrides: Sequence[str | Override]) -> dict[str, Any]:
    """Return a copy of ``values`` with every ``section.key=value`` override applied."""
    out = _to_plain(values or {})
    for item in map(_as_override, overrides):
        node = out
        for part in item.path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{item.label}: {part} is not a section")
            node = child
        node[item.path[-1]] = item.value
    return out


def from_dict(
    values: dict[str, Any], source: str = "<dict>", overrides: Sequence[str | Override] = ()
) -> Config:
    """Build a validated Config from a plain mapping with ``overrides`` applied. An error names
    where the offending value came from: the last override that set it, else ``source``."""
    items = [_as_override(o) for o in overrides]
    try:
        merged = move_runtime_keys(apply_overrides(values or {}, items), source)
        return validate(_build(resolve_per_corpus(merged)))
    except ConfigError as err:
        culprit = next((o for o in reversed(items) if any(map(o.concerns, err.keys))), None)
        raise ConfigError(f"{culprit.label if culprit else source}: {err}", err.keys) from None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return values


def load(path: str | Path, overrides: Sequence[str | Override] | None = None) -> Config:
    """Load a YAML config file, or the config of a run folder, and apply the overrides
    (``section.key=value`` texts of ``--set``, or :func:`option` values).

    A run folder's config is bound to that folder (``dir``), wherever the folder now lives.
    """
    path = Path(path)
    if path.is_dir():
        saved = path / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"{path}: a folder without config.yaml is not a run folder")
        values = read_yaml(saved)
        values["dir"] = str(path)
        return from_dict(values, str(saved), overrides or [])
    return from_dict(read_yaml(path), str(path), overrides or [])


def dump(cfg: Config) -> str:
    """YAML text of a config (what a run folder stores as config.yaml)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def resolve_preset(preset: str, base_dir: Path | None = None) -> Path:
    """The file of a preset name (``paper``) or path: in ``base_dir`` (beside a sweep spec), then
    ./experiments, then the repository's experiments/."""
    given = Path(preset)
    candidates = []
    if given.suffix in (".yaml", ".yml") or "/" in preset:
        candidates.append(given)
        if base_dir is not None and not given.is_absolute():
            candidates.append(base_dir / given)
    else:
        if base_dir is not None:
            candidates.append(base_dir / f"{preset}.yaml")
        candidates += [
            Path("experiments") / f"{preset}.yaml",
            REPO / "experiments" / f"{preset}.yaml",
        ]
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in dict.fromkeys(candidates))
    raise ConfigError(f"preset {preset!r}: no such preset (looked for {looked})")
