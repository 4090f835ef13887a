"""``attnless report``: the paper's tables (markdown + CSV) and figures (PNG) from a sweep.

Reads ``<sweep>/results.jsonl`` (a corrupt line is skipped with a warning naming it; the other
lines are always reported) and ``<sweep>/spec.yaml`` (for the order of rows and columns), and
writes into ``<sweep>/report/`` (every file atomically):

- ``report.md``: all tables, each stating its test set and BLEU signature, and the figures;
- ``teacher_bleu.csv`` (Table A): the teacher's BLEU per direction;
- ``bleu_by_size.csv`` (Tables B and C): BLEU and % of the teacher per variant x size, per
  direction, when the sweep replaces one set of layers;
- ``layers.csv`` (Table E): BLEU by the number of replaced layers, from the bottom and from the
  top, when the sweep varies the layers;
- ``params.csv`` (Table D): parameters per replacement network and size next to the teacher
  module it replaces, from the method registry (no runs needed);
- ``results.csv``: every result, one row per cell and split;
- ``relative_bleu.png`` (relative BLEU vs size, one panel per direction, one bar group per
  variant) and ``layers.png`` (relative BLEU vs number of replaced layers);
- ``bleu_vs_params.png`` and ``bleu_vs_params.csv`` (what it draws): BLEU vs the parameters of
  the replacement networks summed over the replaced layers (log scale), when the cells have
  parameter counts and one set of layers;
- ``length.csv`` (length generalisation): BLEU per method on test sets whose k consecutive
  pairs are joined into one (cells with ``test_group`` k > 1), next to k = 1 and the teacher.

Every other table, figure and CSV reads only the ordinary test set (``test_group`` 1).

The results are one pandas DataFrame of :class:`attnless.results.ResultRow` (one row per
teacher or cell and split); each table is a pivot of it, rendered with ``to_markdown`` and
``to_csv``. Rows and columns follow the spec (directions, variants, sizes), then the order in
which the ledger first names them; '-' marks a cell of a table not measured yet.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from attnless import config as config_mod
from attnless.config import Config, ConfigError, resolve_preset
from attnless.findings import findings_markdown
from attnless.model.sites import METHODS, SIZES, ReplacementError
from attnless.params import inference_flops, replaced_params, student_params
from attnless.replacement import LayerSet
from attnless.results import (
    SITE_SHORT,
    ResultRow,
    cross_causal_of,
    read_results,
    result_rows,
    variant_label,
)
from attnless.runs import atomic_open, read_json, write_text

log = logging.getLogger(__name__)

LAYER_KINDS = ("bottom", "top")
RESULT_COLUMNS = ["cell_id", "corpus", "direction", "variant", "replace", "size", "layers"]
RESULT_COLUMNS += ["split", "test_set", "bleu", "chrf", "teacher_bleu", "relative_bleu"]
RESULT_COLUMNS += ["student_params", "replaced_params", "params_ratio", "teacher_train_seconds"]
RESULT_COLUMNS += ["distill_seconds", "eval_seconds", "seed", "bleu_signature"]


# --------------------------------------------------------------------------- loading


def _frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    """The rows as a DataFrame of Python objects (a missing value stays None, an int an int)."""
    columns = [f.name for f in fields(ResultRow)]
    return pd.DataFrame([asdict(row) for row in rows], columns=columns, dtype=object)


def _mean_lengths(run_dir: str | None, shipped: Path | None = None) -> tuple[float, float] | None:
    """Mean source and target subword tokens per training pair of a teacher's run folder, or
    of the shipped teacher in ``shipped`` (the run folders of a committed ledger are gone on
    other machines; its shipped teachers are beside it)."""
    folders = [Path(run_dir)] if run_dir else []
    folders += [shipped] if shipped is not None else []
    path = next((f / "data.json" for f in folders if (f / "data.json").is_file()), None)
    stats = read_json(path) if path else None
    if not isinstance(stats, dict) or not stats.get("train_pairs_kept"):
        return None
    kept = stats["train_pairs_kept"]
    return stats["train_src_tokens"] / kept, stats["train_tgt_tokens"] / kept


def _spec(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / "spec.yaml"
    if not path.is_file():
        return {}
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        log.warning("%s: unreadable (%s); rows and columns in order of appearance", path, err)
        return {}
    if not isinstance(values, dict):
        return {}
    grids = values.get("grid")
    grids = [g for g in grids if isinstance(g, dict)] if isinstance(grids, list) else [grids]
    labels: list[str] = []  # the variants' report labels, in order, each grid with its own set
    for grid in grids:
        if not isinstance(grid, dict):
            continue
        try:
            own = config_mod.apply_overrides({}, [str(s) for s in grid.get("set") or []])
        except ConfigError:
            own = {}
        causal = cross_causal_of(own)
        for variant in grid.get("replace") or []:
            label = variant_label(variant if isinstance(variant, list) else [variant], causal)
            labels += [label] if label not in labels else []
    values["variants"] = labels
    if isinstance(values.get("grid"), list):  # a list of grids: each key's values, in order
        merged: dict[str, list] = {}
        for grid in grids:
            for key, items in grid.items():
                known = merged.setdefault(key, [])
                known += [v for v in items or [] if v not in known]
        values["grid"] = merged
    return values


def _model_config(results: pd.DataFrame, spec: dict[str, Any]) -> Config:
    """The teacher shape for the parameter table: from a result, else the spec's preset."""
    for values in results["config"]:
        if isinstance(values, dict):
            try:
                return config_mod.from_dict(values, "results.jsonl")
            except ConfigError:
                continue
    if spec.get("preset"):
        try:
            path = resolve_preset(str(spec["preset"]))
            values = config_mod.apply_overrides(config_mod.read_yaml(path), spec.get("set") or [])
            return config_mod.from_dict(values, str(path))
        except ConfigError as err:
            log.warning("preset %s: %s; the parameter table uses the defaults", spec["preset"], err)
    return Config()


# --------------------------------------------------------------------------- formatting


def _order(values: Iterable[Any], preferred: list[Any] | None) -> list[Any]:
    """The distinct ``values``: those in ``preferred`` first, in its order, then the others in
    order of appearance."""
    seen = list(dict.fromkeys(v for v in values if v is not None))
    if not preferred:
        return seen
    first = [v for v in preferred if v in seen]
    return first + [v for v in seen if v not in first]


def _index(order: list | tuple, value: Any) -> int:
    return order.index(value) if value in order else len(order)


def _groups(frame: pd.DataFrame, keys: list[str], directions: list[str]) -> list:
    """(key, rows) per distinct value of ``keys``, sorted by corpus, then the direction's place
    in ``directions``, then split; groups that tie (other layers) in order of appearance."""

    def rank(group: tuple) -> tuple:
        key = dict(zip(keys, group[0]))
        direction = _index(directions, key["direction"])
        return (key["corpus"], direction) + ((key["split"],) if "split" in key else ())

    return sorted(frame.groupby(keys, sort=False, dropna=False), key=rank)


def _in_order(frame: pd.DataFrame, keys: list[str], combos: Iterable[tuple]) -> pd.DataFrame:
    """The rows of ``frame`` whose ``keys`` are one of ``combos``, in the order of ``combos``."""
    return pd.DataFrame(list(combos), columns=keys, dtype=object).merge(frame, on=keys)


def _grid(table: pd.DataFrame, index: Any, columns: Any) -> pd.DataFrame:
    """A pivot on exactly these rows and columns, in their order; '-' where none was measured."""
    return table.reindex(index=index, columns=columns, fill_value="-").fillna("-")


def _md(frame: pd.DataFrame) -> str:
    """A markdown table: cells as given (None empty, '|' escaped), columns not padded."""
    cells = frame.map(lambda v: "" if v is None else str(v).replace("|", "\\|"))
    options = {"stralign": None, "numalign": None, "disable_numparse": True}
    return cells.to_markdown(index=False, tablefmt="github", **options)


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def _num(value: Any, digits: int = 2) -> str:
    return "-" if pd.isna(value) else f"{value:.{digits}f}"


def _bleu_rel(bleu: Any, relative: Any) -> str:
    """``BLEU (% of the teacher)``; '-' when not measured."""
    if pd.isna(bleu):
        return "-"
    return f"{bleu:.2f}" + ("" if pd.isna(relative) else f" ({relative:.1f}%)")


def _provenance(rows: pd.DataFrame) -> str:
    """Which test set(s) and BLEU signature(s) a table's numbers come from."""
    sets = sorted({f"{t} (split {s})" for t, s in zip(rows.test_set, rows.split) if t})
    sigs = sorted({s for s in rows.bleu_signature if s})
    return (
        f"Test set: {', '.join(sets) or 'unknown'}. "
        f"BLEU: sacreBLEU, signature `{' ; '.join(sigs) or 'unknown'}`."
    )


def _teacher_bleu(rows: pd.DataFrame) -> str:
    return _num(next((b for b in rows.teacher_bleu if not pd.isna(b)), None))


def _layer_list(row: Any, site: str) -> list[int] | None:
    """The layers a result replaced at ``site`` (encoder or decoder), if it knows how many the
    teacher has and its ``layers`` names some of them."""
    count = row.encoder_layers if site.startswith("encoder") else row.decoder_layers
    if count is None:
        return None
    try:
        return LayerSet.parse(row.layers).resolve(count)
    except (ConfigError, ReplacementError):
        return None


def _layer_kind(row: Any) -> tuple[int, list[str]] | None:
    """(number of replaced layers, [bottom and/or top]) for contiguous bottom/top sets of a
    result that replaces sites of one stack."""
    sites = row.replace.split("+")
    stack = next((s for s in ("encoder", "decoder") if all(x.startswith(s) for x in sites)), None)
    layers = _layer_list(row, stack) if stack else None
    if layers is None:
        return None
    k, count = len(layers), row.encoder_layers if stack == "encoder" else row.decoder_layers
    starts = zip(LAYER_KINDS, (0, count - k))
    kinds = [kind for kind, start in starts if layers == list(range(start, start + k))]
    return (k, kinds) if kinds else None


def _by_side(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` with the number of layers each replaced (``count``) and the end they start from
    (``side``): a row per side for a contiguous set (bottom, top, or both for all layers), and
    side "other" (count None) for other sets."""
    kinds = [_layer_kind(row) for row in cells.itertuples(index=False)]
    count = pd.Series([kind[0] if kind else None for kind in kinds], cells.index, dtype=object)
    side = pd.Series([kind[1] if kind else ["other"] for kind in kinds], cells.index)
    return cells.assign(count=count, side=side).explode("side")


# --------------------------------------------------------------------------- tables


def teacher_table(
    teachers: pd.DataFrame, cells: pd.DataFrame, directions: list[str]
) -> tuple[str, str] | None:
    """Table A: rows corpus (+ split), columns directions."""
    rows = teachers
    if rows.empty:  # older results: the teacher's BLEU is in every cell
        rows = cells[cells.teacher_bleu.notna()].drop_duplicates(["corpus", "direction", "split"])
        rows = rows.assign(bleu=rows.teacher_bleu, chrf=None)
    if rows.empty:
        return None
    dirs = _order(rows.direction, directions)
    groups = _order(zip(rows.corpus, rows.split), None)
    text = [_num(b) + (f" / chrF {c:.1f}" if c else "") for b, c in zip(rows.bleu, rows.chrf)]
    last = rows.assign(text=text).drop_duplicates(["corpus", "split", "direction"], keep="last")
    table = last.pivot_table(
        index=["corpus", "split"], columns="direction", values="text", aggfunc="first"
    )
    table = _grid(table, pd.MultiIndex.from_tuples(groups), dirs)
    table.insert(0, "model", [f"Transformer ({corpus}, {split})" for corpus, split in groups])
    md = "\n".join(
        [
            "## Table A: teacher BLEU per direction",
            "",
            _md(table),
            "",
            _provenance(rows) + " Cells: BLEU / chrF.",
        ]
    )
    keys = ["corpus", "split", "direction"]
    measured = _in_order(last, keys, _product(groups, dirs))
    return md, _csv(measured[keys + ["test_set", "bleu", "chrf"]])


def size_tables(cells: pd.DataFrame, order: dict[str, list]) -> tuple[str, str] | None:
    """Tables B/C: per (corpus, direction, split, layers): rows variant, columns size."""
    if cells.empty:
        return None
    # every size and variant of the spec, measured or not (a growing ledger shows its gaps)
    sizes = _order([*cells["size"], *order["size"]], list(SIZES))
    parts = ["## Tables B/C: BLEU (and % of the teacher) by replacement and size", ""]
    measured = []
    keys = ["corpus", "direction", "split", "layers"]
    for (corpus, direction, _, layers), rows in _groups(cells, keys, order["direction"]):
        variants = _order([*rows.variant, *order["variant"]], order["variant"])
        text = [_bleu_rel(b, r) for b, r in zip(rows.bleu, rows.relative_bleu)]
        table = rows.assign(text=text).pivot_table(
            index="variant", columns="size", values="text", aggfunc="first"
        )
        table = _grid(table, variants, sizes)
        table.insert(0, "replaced \\ size", variants)
        first = rows.drop_duplicates(["variant", "size"])  # the result in the table
        measured.append(_in_order(first, ["variant", "size"], _product(variants, sizes)))
        parts += [
            f"### {corpus} {direction}, layers {layers} (teacher BLEU {_teacher_bleu(rows)})",
            "",
            _md(table),
            "",
            _provenance(rows),
            "",
        ]
    measured = pd.concat(measured)
    if cells.direction.nunique() > 1 and measured.relative_bleu.notna().any():
        parts += _mean_table(measured, sizes, order, cells)
    columns = keys + ["variant", "size", "bleu", "relative_bleu", "teacher_bleu", "chrf"]
    return "\n".join(parts), _csv(measured[columns])


def _product(first: Iterable, second: Iterable) -> list[tuple]:
    """Every combination of an item of ``first`` with one of ``second``, as flat tuples."""

    def flat(item: Any) -> tuple:
        return item if isinstance(item, tuple) else (item,)

    second = list(second)
    return [flat(a) + flat(b) for a in first for b in second]


def _mean_table(
    measured: pd.DataFrame, sizes: list[str], order: dict[str, list], cells: pd.DataFrame
) -> list[str]:
    """The mean relative BLEU over the directions, per (corpus, split, layers) and variant."""
    directions = cells.direction.nunique()
    rows = measured[measured.relative_bleu.notna()]
    keys = ["corpus", "split", "layers", "variant"]
    pairs = list(zip(rows.direction, rows.relative_bleu))
    table = rows.assign(pair=pairs).pivot_table(
        index=keys, columns="size", values="pair", aggfunc=lambda p: _mean_cell(list(p), directions)
    )
    blocks = _order(zip(rows.corpus, rows.split, rows.layers), None)
    index = _product(blocks, _order(rows.variant, order["variant"]))
    table = _grid(table, pd.MultiIndex.from_tuples(index), sizes)
    labels = [f"{variant} ({corpus}, layers {layers})" for corpus, _, layers, variant in index]
    table.insert(0, "replaced \\ size", labels)
    return [
        f"### Mean % of the teacher's BLEU over {directions} directions",
        "",
        _md(table),
        "",
        _provenance(cells) + " A mean over fewer directions names them.",
        "",
    ]


def _mean_cell(pairs: Iterable[tuple[str, float]], directions: int) -> str:
    """The mean relative BLEU over the (direction, relative BLEU) ``pairs`` measured; when some
    directions are missing, it names the ones it averages."""
    by_direction = dict(pairs)
    text = f"{sum(by_direction.values()) / len(by_direction):.1f}%"
    if len(by_direction) < directions:
        text += f" ({', '.join(by_direction)} only)"
    return text


def layer_tables(cells: pd.DataFrame, order: dict[str, list]) -> tuple[str, str] | None:
    """Table E: rows = number of replaced layers, columns = bottom / top per variant and size;
    then a row per result of another set of layers (not a contiguous bottom or top set)."""
    if cells.layers.nunique() < 2:
        return None
    cells = _by_side(cells)
    cells = cells.assign(text=[_bleu_rel(b, r) for b, r in zip(cells.bleu, cells.relative_bleu)])
    parts = ["## Table E: BLEU (and % of the teacher) by the number of replaced layers", ""]
    measured = []
    keys = ["corpus", "direction", "split"]
    for (corpus, direction, _), rows in _groups(cells, keys, order["direction"]):
        combos = _order(zip(rows.variant, rows["size"]), None)
        combos.sort(key=lambda c: (_index(order["variant"], c[0]), _index(SIZES, c[1])))
        columns = _product(combos, LAYER_KINDS)
        ranked = rows[rows.side != "other"].drop_duplicates(
            ["count", "variant", "size", "side"], keep="last"
        )
        others = rows[rows.side == "other"]
        by_count = _pivot(ranked.assign(text=ranked.text + " [" + ranked.layers + "]"), columns)
        # another set of layers: a row of its own, the result under "from the bottom"
        by_set = _pivot(others.assign(side="bottom", count=range(len(others))), columns)
        counts = list(by_count.index)
        by_count.index = [str(k) for k in counts]
        by_set.index = [f"layers {layers}" for layers in others.layers]
        table = pd.concat([by_count, by_set])
        table.columns = [f"{variant} {size} from the {side}" for variant, size, side in columns]
        table.insert(0, "replaced layers", table.index)
        keep = ["count", "variant", "size", "side"]
        measured += [_in_order(ranked, keep, _product(counts, columns)), others]
        parts += [
            f"### {corpus} {direction} (teacher BLEU {_teacher_bleu(rows)})",
            "",
            _md(table),
            "",
            _provenance(rows) + " Replaced layers in brackets (0 = the lowest layer).",
            "",
        ]
    measured = pd.concat(measured).rename(columns={"side": "from"})
    columns = keys + ["variant", "size", "from", "count", "layers"]
    return "\n".join(parts), _csv(measured[columns + ["bleu", "relative_bleu", "teacher_bleu"]])


def _pivot(rows: pd.DataFrame, columns: list[tuple]) -> pd.DataFrame:
    """The ``text`` of ``rows`` by ``count`` (rows of the table) and (variant, size, side)
    (``columns``), '-' where there is none."""
    columns = pd.MultiIndex.from_tuples(columns)
    if rows.empty:
        return pd.DataFrame(index=[], columns=columns)
    table = rows.pivot_table(
        index="count", columns=["variant", "size", "side"], values="text", aggfunc="last"
    )
    return _grid(table, table.index, columns)


LENGTH_COLUMNS = ["corpus", "direction", "split", "layers", "variant", "size", "test_group"]
LENGTH_COLUMNS += ["test_set", "sentences", "bleu", "relative_bleu", "teacher_bleu"]
LENGTH_COLUMNS += ["teacher_fallback"]


def fixed_length(replace: str) -> bool:
    """Whether a result's networks (its ``site=method`` entries joined by "+") include one that
    reads at most n positions (the registry's ``fixed_length``)."""
    return any(METHODS[e].fixed_length for e in replace.split("+") if e in METHODS)


def length_table(cells: pd.DataFrame, order: dict[str, list]) -> tuple[str, str] | None:
    """Length generalisation, per (corpus, direction, split, layers) with results on grouped
    test sets (``test_group`` k > 1): rows the teacher, then each variant and size measured
    there; columns k (k = 1: its results on the ordinary test set); cells BLEU (% of the
    teacher on the same grouped text), and for length-capped networks how many sentences the
    teacher translated (longer than n)."""
    grouped = cells[cells.test_group > 1]
    if grouped.empty:
        return None
    parts = ["## Length generalisation", ""]
    measured, capped, lengths, ordinary = [], [], set(), set()
    keys = ["corpus", "direction", "split", "layers"]
    for (corpus, direction, _, layers), rows in _groups(cells, keys, order["direction"]):
        mine = rows[rows.test_group > 1]
        if mine.empty:
            continue
        combos = _order(zip(mine.variant, mine["size"]), None)
        combos.sort(key=lambda c: (_index(order["variant"], c[0]), _index(SIZES, c[1])))
        ks = sorted({1, *rows.test_group})
        first = rows.drop_duplicates(["variant", "size", "test_group"])  # the result shown
        teacher = ["teacher"] + [_teacher_bleu(rows[rows.test_group == k]) for k in ks]
        table = [teacher]
        for variant, size in combos:
            at = first[(first.variant == variant) & (first["size"] == size)]
            line = [f"{variant} {size}"]
            for k in ks:
                row = at[at.test_group == k]
                if row.empty:
                    line.append("-")
                    continue
                row = row.iloc[0]
                text = _bleu_rel(row.bleu, row.relative_bleu)
                if fixed_length(row["replace"]):
                    capped.append(variant)
                    lengths.update({row.n} - {None})
                    if not pd.isna(row.teacher_fallback) and not pd.isna(row.sentences):
                        # ``sentences``: translated by the hybrid; the fallback on top
                        total = int(row.sentences) + int(row.teacher_fallback)
                        text += f"; fallback: {int(row.teacher_fallback)}/{total}"
                line.append(text)
            table.append(line)
            measured.append(_in_order(at, ["test_group"], [(k,) for k in ks]))
        ordinary.update(rows[rows.test_group == 1].test_set.dropna())
        frame = pd.DataFrame(table, columns=["replaced \\ k"] + [f"k = {k}" for k in ks])
        parts += [
            f"### {corpus} {direction}, layers {layers}",
            "",
            _md(frame),
            "",
            _provenance(rows[rows.test_group.isin(ks)]),
            "",
        ]
    sets = ", ".join(sorted(ordinary)) or "the test set"
    text = (
        f"k > 1: each k consecutive pairs of {sets} joined into one, sources and references "
        "each (a last partial group dropped), so sentences are about k times as long; k = 1 is "
        "the ordinary test set. Cells: BLEU (% of the teacher's BLEU on the same text)."
    )
    if capped:
        n = "/".join(str(v) for v in sorted(lengths)) or "?"
        text += (
            f" Fixed-length networks ({', '.join(_order(capped, None))}; n = {n} subwords) "
            "hand every sentence longer than n to the teacher (fallback: sentences the "
            "teacher translated / all), so their BLEU at large k is mostly the teacher's."
        )
    parts += [text, ""]
    return "\n".join(parts), _csv(pd.concat(measured)[LENGTH_COLUMNS])


def params_table(
    cfg: Config, sizes: list[str] | None = None, also: list[str] | None = None
) -> tuple[str, str]:
    """Table D: parameters of one replacement network per method and size, from the registry:
    the paper's methods, and the methods ``also`` names (``site=method``, e.g. the ones a sweep
    uses beyond the paper)."""
    m = cfg.model
    n = cfg.distill.n
    sizes = sizes or ["XS", "S", "M", "L"]
    md_rows, csv_rows = [], []
    for key, method in METHODS.items():
        if not method.paper and key not in (also or []):
            continue
        replaced = replaced_params(key, m.d_model, m.heads, m.ffn_dim)
        count = m.encoder_layers if method.site.startswith("encoder") else m.decoder_layers
        line = [f"{method.name.upper()} {SITE_SHORT.get(method.site, method.site)}"]
        line += [method.summary, f"{replaced:,}"]
        for size in sizes:
            params = student_params(key, size, n, m.d_model, m.heads)
            ratio = params / replaced  # below 1 (methods beyond the paper): two decimals
            line.append(
                f"{params:,} ({ratio:,.0f}x)" if ratio >= 1 else f"{params:,} ({ratio:.2f}x)"
            )
            csv_rows.append([key, size, params, replaced, ratio, count, params * count])
        md_rows.append(line)
    headers = ["method", "replaces", "teacher params replaced (per layer)"] + sizes
    md = "\n".join(
        [
            "## Table D: parameters per replacement network (one layer)",
            "",
            _md(pd.DataFrame(md_rows, columns=headers, dtype=object)),
            "",
            f"Teacher d_model {m.d_model}, {m.heads} heads, FFN {m.ffn_dim}; fixed length "
            f"n = {n}. Counted from the method registry (no runs needed); in brackets: the ratio "
            "to the teacher parameters the network replaces. Multiply by the number of "
            f"replaced layers ({m.encoder_layers} encoder, {m.decoder_layers} decoder) for a "
            "whole stack.",
        ]
    )
    headers = ["method", "size", "params_per_layer", "replaced_per_layer", "ratio", "layers"]
    headers += ["params_all_layers"]
    return md, _csv(pd.DataFrame(csv_rows, columns=headers, dtype=object))


def _flops_text(row: Any, lengths: tuple[float, float] | None) -> str:
    """Network (and replaced-module) MFLOP per sentence of the hybrid (all its layers), for a
    sentence of ``lengths`` (source, target tokens)."""
    if lengths is None or None in (row.n, row.d_model, row.heads):
        return ""
    network, replaced = 0.0, 0.0
    for entry in row.replace.split("+"):
        layers = _layer_list(row, entry)
        if layers is None:
            return ""
        net, rep = inference_flops(entry, row.size, row.n, row.d_model, row.heads, *lengths)
        network += len(layers) * net
        replaced = None if rep is None or replaced is None else replaced + len(layers) * rep
    return f"{network / 1e6:.3g} / " + ("-" if replaced is None else f"{replaced / 1e6:.3g}")


def _speed_text(speed: float | None, teacher: float | None, rounds: float | None) -> str:
    """``hybrid / teacher (ratio)``, starred unless both were timed side by side."""
    if not speed or not teacher or pd.isna(speed) or pd.isna(teacher):
        return ""
    star = "" if rounds and not pd.isna(rounds) else "*"
    return f"{speed:.1f} / {teacher:.1f} ({speed / teacher:.2f}x{star})"


def _machine_text(machine: str | None) -> str:
    """The machine a row was measured on, without the CPU's instruction-set list."""
    if not isinstance(machine, str):
        return ""
    return re.sub(r"(, \d+ cores) \([^()]*\)$", r"\1", machine)


def cost_table(cells: pd.DataFrame, teachers: Path | None = None) -> tuple[str, str] | None:
    """What each hybrid costs at inference: parameters of its replacement networks against
    the teacher modules they replace, and measured greedy decoding speed against the
    teacher's (same machine, same run). ``teachers``: the shipped teachers' folder."""
    known = cells.student_params.map(lambda p: p is not None and not pd.isna(p))
    rows = cells[(cells.split == "test") & known]  # parameter-free networks (0) included
    if rows.empty:
        return None
    rank = rows["size"].map(lambda size: _index(SIZES, size))
    rows = rows.assign(rank=rank).sort_values(["direction", "variant", "rank"])  # stable
    lengths = {
        (run_dir, direction): _mean_lengths(run_dir, teachers / direction if teachers else None)
        for run_dir, direction in set(zip(rows.run_dir, rows.direction))
    }
    table = pd.DataFrame(
        {
            "direction": rows.direction,
            "replaced": rows.variant,
            "size": rows["size"],
            "layers": rows.layers,
            "network params": [f"{p:,}" for p in rows.student_params],
            "teacher params replaced": [f"{p:,}" if p else "" for p in rows.replaced_params],
            "network / replaced MFLOP per sentence": [
                _flops_text(row, lengths[row.run_dir, row.direction])
                for row in rows.itertuples(index=False)
            ],
            "greedy sent/s (hybrid / teacher)": [
                _speed_text(speed, teacher, rounds)
                for speed, teacher, rounds in zip(
                    rows.sentences_per_s, rows.teacher_sentences_per_s, rows.speed_rounds
                )
            ],
            "measured on": [_machine_text(m) for m in rows.machine],
        },
        dtype=object,
    )
    text = "\n".join(
        [
            "## Inference cost",
            "",
            _md(table),
            "",
            "Parameters of every replacement network of the hybrid, against the teacher "
            "parameters they replace; FLOPs of those networks and of the teacher modules they "
            "replace for a sentence of the training set's mean lengths (2 per multiply-add of "
            "the matmuls; `attnless.params.inference_flops`); greedy decoding speed of "
            "the test set with the hybrid and with the teacher, timed in alternation in the "
            "cell's evaluation, best of `speed_rounds` passes each, on the machine named "
            "(speeds of different machines do not compare; their ratios do). Marked *: a row "
            "recorded "
            "before side-by-side timing, whose teacher speed is the teacher's stored "
            "evaluation (another process, possibly another machine), so its ratio is only "
            "indicative.",
        ]
    )
    return text, _csv(table)


def results_csv(cells: pd.DataFrame) -> str:
    """Every result of a cell, one row per cell and split."""
    return _csv(cells[RESULT_COLUMNS])


# --------------------------------------------------------------------------- figures


def _figure(
    rows: pd.DataFrame,
    order: dict[str, list],
    path: Path,
    draw: Callable[[Any, pd.DataFrame], None],
    xlabel: str,
    title: str,
    line: str | None,
    ylabel: str = "BLEU, % of the teacher",
) -> None:
    """One panel per (corpus, direction) of ``rows`` (of their first split), drawn by
    ``draw(axes, panel_rows)``, with a ``line`` (style; None: none) at 100% of the teacher and
    one legend right of all panels (where it hides no bar or line); saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows[rows.split == rows.split.iloc[0]]
    groups = _groups(rows, ["corpus", "direction"], order["direction"])
    cols = min(len(groups), 4)
    lines = (len(groups) + cols - 1) // cols
    fig, axes = plt.subplots(lines, cols, figsize=(4.2 * cols, 3.4 * lines), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, ((corpus, direction), panel) in zip(axes.flat, groups):
        draw(ax, panel)
        if line:
            ax.axhline(100, color="black", linestyle=line, linewidth=0.8)
        ax.set_title(f"{corpus} {direction}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, y=1.03)
    with atomic_open(path, "wb", encoding=None) as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def size_figure(cells: pd.DataFrame, order: dict[str, list], path: Path) -> bool:
    """Relative BLEU vs size: one panel per (corpus, direction), one bar group per size."""
    rows = cells[cells.relative_bleu.notna()]
    if rows.empty or rows.layers.nunique() > 1:
        return False
    sizes = _order(rows["size"], list(SIZES))
    variants = _order(rows.variant, order["variant"])
    width = 0.8 / max(len(variants), 1)

    def draw(ax: Any, panel: pd.DataFrame) -> None:
        panel = panel.drop_duplicates(["variant", "size"])  # the first result of each
        for j, variant in enumerate(variants):
            bars = _in_order(panel, ["variant", "size"], _product([variant], sizes))
            xs = [_index(sizes, size) - 0.4 + width * (j + 0.5) for size in bars["size"]]
            ax.bar(xs, list(bars.relative_bleu), width=width, label=variant)
        ax.set_xticks(range(len(sizes)), sizes)

    title = f"Relative BLEU by replacement and size ({rows.test_set.iloc[0]}, greedy)"
    _figure(rows, order, path, draw, "replacement size", title, line="--")
    return True


def layers_figure(cells: pd.DataFrame, order: dict[str, list], path: Path) -> bool:
    """Relative BLEU vs number of replaced layers, from the bottom and from the top."""
    rows = _by_side(cells)
    rows = rows[rows.relative_bleu.notna() & (rows.side != "other")]
    if rows.layers.nunique() < 2:
        return False

    def draw(ax: Any, panel: pd.DataFrame) -> None:
        for variant, size in _order(zip(panel.variant, panel["size"]), None):
            mine = panel[(panel.variant == variant) & (panel["size"] == size)]
            for side, style in zip(LAYER_KINDS, ("-o", "--s")):
                at = mine[mine.side == side]
                points = sorted(zip(at["count"], at.relative_bleu))
                if points:
                    ax.plot(*zip(*points), style, label=f"{variant} {size}, from the {side}")

    title = f"Relative BLEU by the number of replaced layers ({rows.test_set.iloc[0]})"
    _figure(rows, order, path, draw, "replaced layers", title, line=":")
    return True


PARAMS_COLUMNS = ["corpus", "direction", "split", "layers", "series", "size", "params", "bleu"]
PARAMS_COLUMNS += ["relative_bleu", "drawn"]


def params_data(cells: pd.DataFrame, order: dict[str, list]) -> pd.DataFrame | None:
    """What the BLEU-vs-parameters figure draws, one row per mark (``drawn``): a ``point`` per
    result of a network with parameters (``params``: its networks summed over the replaced
    layers), an ``hline`` per parameter-free variant (0 parameters: not on a log axis; at the
    mean BLEU of its results, whose sizes are the same network), a ``teacher hline`` at the
    teacher's BLEU and a ``teacher vline`` per distinct count of teacher parameters the
    networks replace (summed over the replaced layers). None without parameter counts, or
    when the sweep varies the layers (the layer figure shows those)."""
    rows = cells[cells.student_params.notna() & cells.bleu.notna()]
    if rows.empty or rows.layers.nunique() > 1:
        return None
    rows = rows[rows.split == rows.split.iloc[0]].drop_duplicates(["direction", "variant", "size"])
    marks = []
    for (corpus, direction), panel in _groups(rows, ["corpus", "direction"], order["direction"]):
        where = {"corpus": corpus, "direction": direction}
        where |= {"split": panel.split.iloc[0], "layers": panel.layers.iloc[0]}
        teacher = next((b for b in panel.teacher_bleu if not pd.isna(b)), None)
        if teacher is not None:
            marks.append(where | {"series": "teacher", "bleu": teacher, "drawn": "teacher hline"})
        for replaced in _order(panel.replaced_params, None):
            if replaced:
                by = ", ".join(_order(panel[panel.replaced_params == replaced].variant, None))
                series = f"teacher params replaced ({by})"
                marks.append(
                    where | {"series": series, "params": replaced, "drawn": "teacher vline"}
                )
        for variant in _order(panel.variant, order["variant"]):
            mine = panel[panel.variant == variant]
            mine = mine.assign(rank=mine["size"].map(lambda size: _index(SIZES, size)))
            mine = mine.sort_values("rank", kind="stable")
            free = mine[mine.student_params == 0]
            if not free.empty:
                relative = free.relative_bleu.dropna()
                marks.append(
                    where
                    | {"series": variant, "size": "/".join(free["size"]), "params": 0}
                    | {"bleu": free.bleu.mean(), "drawn": "hline"}
                    | ({"relative_bleu": relative.mean()} if len(relative) else {})
                )
            for row in mine[mine.student_params != 0].itertuples(index=False):
                marks.append(
                    where
                    | {"series": variant, "size": row.size, "params": row.student_params}
                    | {"bleu": row.bleu, "relative_bleu": row.relative_bleu, "drawn": "point"}
                )
    return pd.DataFrame(marks, columns=PARAMS_COLUMNS, dtype=object)


def params_figure(cells: pd.DataFrame, order: dict[str, list], path: Path) -> str | None:
    """BLEU vs the parameters of the replacement networks (log scale), one panel per (corpus,
    direction): a line through the sizes of each variant, parameter-free variants as dashed
    horizontal lines, the teacher's BLEU and the teacher parameters replaced for scale. The
    CSV of what it draws (:func:`params_data`), or None when there is nothing to draw."""
    data = params_data(cells, order)
    if data is None or not data.drawn.isin(["point", "hline"]).any():
        return None
    methods = data[data.drawn.isin(["point", "hline"])]
    colors = {series: f"C{i % 10}" for i, series in enumerate(_order(methods.series, None))}

    def draw(ax: Any, panel: pd.DataFrame) -> None:
        ax.set_xscale("log")
        for mark in panel[panel.drawn == "teacher vline"].itertuples(index=False):
            ax.axvline(mark.params, color="gray", linestyle=":", linewidth=1, label=mark.series)
            where = {"xycoords": ax.get_xaxis_transform(), "textcoords": "offset points"}
            where |= {"xytext": (2, 0), "rotation": 90, "va": "bottom", "fontsize": 6}
            ax.annotate(mark.series, (mark.params, 0.02), color="gray", **where)
        for mark in panel[panel.drawn == "teacher hline"].itertuples(index=False):
            ax.axhline(mark.bleu, color="black", linewidth=0.8, label="teacher")
        for series in _order(panel.series, None):
            points = panel[(panel.series == series) & (panel.drawn == "point")]
            if not points.empty:
                xs, ys = list(points.params), list(points.bleu)
                ax.plot(xs, ys, "-o", color=colors[series], label=series)
                for x, y, size in zip(xs, ys, points["size"]):
                    ax.annotate(size, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for mark in panel[panel.drawn == "hline"].itertuples(index=False):
            label = f"{mark.series} (no parameters)"
            ax.axhline(mark.bleu, color=colors[mark.series], linestyle="--", label=label)
            ax.text(
                0.01,
                mark.bleu,
                label,
                transform=ax.get_yaxis_transform(),
                fontsize=7,
                va="bottom",
                color=colors[mark.series],
            )

    test_set = cells.test_set.dropna()
    title = "BLEU by the parameters of the replacement networks"
    title += f" ({test_set.iloc[0]}, greedy)" if len(test_set) else ""
    xlabel = "network parameters, summed over the replaced layers (log)"
    _figure(data, order, path, draw, xlabel, title, line=None, ylabel="BLEU")
    return _csv(data)


# --------------------------------------------------------------------------- entry point


def report(
    sweep_dir: str | Path,
    out: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write the tables and figures of ``sweep_dir`` into ``out`` (default ``<sweep>/report``)."""
    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir / "report"
    warnings: list[str] = []

    def note(text: str) -> None:
        warnings.append(text)
        (warn or log.warning)(text)

    results = sweep_dir / "results.jsonl"
    if not results.exists() and not (sweep_dir / "spec.yaml").exists():
        raise FileNotFoundError(
            f"{sweep_dir}: no results.jsonl or spec.yaml; is it a sweep folder?"
        )
    rows = _frame(result_rows(read_results(results, warn=note)))
    every_cell = rows[rows.kind == "cell"].reset_index(drop=True)
    # the tables, figures and CSVs of the ordinary test set; grouped test sets (test_group > 1)
    # only in the length table (and the findings about them)
    cells = every_cell[every_cell.test_group == 1].reset_index(drop=True)
    teachers = rows[rows.kind == "teacher"].reset_index(drop=True)
    spec = _spec(sweep_dir)
    grid = spec.get("grid") or {}
    replace = [v if isinstance(v, list) else [v] for v in grid.get("replace") or []]
    order = {
        "direction": list(grid.get("direction") or []),
        "variant": list(spec.get("variants") or []),
        "size": [str(size) for size in grid.get("size") or []],
    }
    name = spec.get("name") or sweep_dir.name
    files: dict[str, str] = {}
    sections = [
        f"# Sweep {name}",
        "",
        f"Preset {spec.get('preset', '?')}"
        + (f"; overrides: {' '.join(spec['set'])}" if spec.get("set") else "")
        + f". {every_cell.cell_id.nunique()} cells, {teachers.teacher_id.nunique()} teacher(s)"
        + f" from {results}. Greedy decoding; BLEU and chrF are sacreBLEU on detokenized text "
        "(scale 0-100); % = BLEU relative to the teacher's on the same test set.",
        "",
    ]
    if warnings:
        sections += ["**Warnings:**", ""] + [f"- {w}" for w in warnings] + [""]
    table = teacher_table(teachers, cells, order["direction"])
    if table:
        sections += [table[0], ""]
        files["teacher_bleu.csv"] = table[1]
    layered = layer_tables(cells, order)
    sized = None if layered else size_tables(cells, order)
    if layered or sized:
        sections += [(layered or sized)[0], ""]
        files["layers.csv" if layered else "bleu_by_size.csv"] = (layered or sized)[1]
    lengths = length_table(every_cell, order)
    if lengths:
        sections += [lengths[0], ""]
        files["length.csv"] = lengths[1]
    sizes = [s for s in SIZES if s != "XL" or s in set(cells["size"])]
    params_md, params_csv = params_table(
        _model_config(rows, spec), sizes, [e for v in replace for e in v]
    )
    sections += [params_md, ""]
    files["params.csv"] = params_csv
    files["results.csv"] = results_csv(cells)
    figures = []
    if size_figure(cells, order, out / "relative_bleu.png"):
        figures.append("relative_bleu.png")
    if layers_figure(cells, order, out / "layers.png"):
        figures.append("layers.png")
    shown = [f"![{f}]({f})" for f in figures]
    by_params = params_figure(cells, order, out / "bleu_vs_params.png")
    if by_params:
        figures.append("bleu_vs_params.png")
        files["bleu_vs_params.csv"] = by_params
        shown += [
            "",
            "BLEU against the parameters of each hybrid's replacement networks, summed over "
            "its replaced layers (log scale; sizes marked), next to the teacher's BLEU and the "
            "teacher parameters those networks replace (dotted); parameter-free networks are "
            "dashed lines. Data: bleu_vs_params.csv.",
            "",
            "![bleu_vs_params.png](bleu_vs_params.png)",
        ]
    if figures:
        sections += ["## Figures", ""] + shown + [""]
    costs = cost_table(cells, sweep_dir.parent / "teachers")
    if costs:
        sections += [costs[0], ""]
        files["inference_cost.csv"] = costs[1]
    sections += [findings_markdown(every_cell.to_dict("records")), ""]
    if every_cell.empty:
        sections += ["No finished cells yet; run `attnless sweep` first.", ""]
    markdown = "\n".join(sections)
    for file_name, text in files.items():
        write_text(out / file_name, text)
    write_text(out / "report.md", markdown)
    return {
        "out": str(out),
        "files": sorted([*files, "report.md", *figures]),
        "cells": every_cell.cell_id.nunique(),
        "teachers": teachers.teacher_id.nunique(),
        "warnings": warnings,
        "markdown": markdown,
    }
