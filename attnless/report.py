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
  variant) and ``layers.png`` (relative BLEU vs number of replaced layers).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from attnless import config as config_mod
from attnless.config import Config, ConfigError, layer_indices
from attnless.findings import findings_markdown
from attnless.model.sites import METHODS, SIZES
from attnless.runs import atomic_open, read_json, write_text
from attnless.sweep import (
    SITE_SHORT,
    read_results,
    replaced_params,
    resolve_preset,
    student_params,
    variant_label,
)
from attnless.sweep.params import inference_flops

log = logging.getLogger(__name__)

LAYER_KINDS = ("bottom", "top")


# --------------------------------------------------------------------------- loading


def _mean_lengths(run_dir: str | None) -> tuple[float, float] | None:
    """Mean source and target subword tokens per training pair of a teacher's run folder."""
    stats = read_json(Path(run_dir) / "data.json") if run_dir else None
    if not isinstance(stats, dict) or not stats.get("train_pairs_kept"):
        return None
    kept = stats["train_pairs_kept"]
    return stats["train_src_tokens"] / kept, stats["train_tgt_tokens"] / kept


def _rows(records: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Flatten records into one row per (cell or teacher, split)."""
    cells: dict[str, dict] = {}
    teachers: dict[str, dict] = {}
    for record in records:
        if record.get("kind") == "cell" and record.get("cell_id"):
            cells[record["cell_id"]] = record  # a repeated cell: the last line wins
        elif record.get("kind") == "teacher" and record.get("teacher_id"):
            teachers[record["teacher_id"]] = record
    rows = []
    for record in cells.values():
        base = {
            k: record.get(k)
            for k in (
                "cell_id",
                "corpus",
                "direction",
                "variant",
                "size",
                "layers",
                "student_params",
                "replaced_params",
                "params_ratio",
                "seed",
                "teacher_id",
            )
        }
        base["replace"] = "+".join(record.get("replace") or [])
        base["n"] = record.get("n")
        base["model"] = (record.get("config") or {}).get("model")
        base["lengths"] = _mean_lengths(record.get("run_dir"))
        if not base["variant"]:
            base["variant"] = variant_label(record.get("replace") or [])
        base["layers"] = str(base["layers"])
        times = record.get("times") or {}
        base.update(
            teacher_train_seconds=times.get("teacher_train_seconds"),
            distill_seconds=times.get("distill_seconds"),
            eval_seconds=times.get("eval_seconds"),
        )
        base["encoder_layers"] = ((record.get("config") or {}).get("model") or {}).get(
            "encoder_layers"
        )
        base["decoder_layers"] = ((record.get("config") or {}).get("model") or {}).get(
            "decoder_layers"
        )
        scores = record.get("scores") or {record.get("split", "test"): record}
        for split, result in scores.items():
            row = dict(base)
            row["split"] = split
            for key in (
                "test_set",
                "bleu",
                "chrf",
                "teacher_bleu",
                "relative_bleu",
                "sentences_per_s",
                "teacher_sentences_per_s",
            ):
                row[key] = result.get(key, record.get(key))
            row["bleu_signature"] = result.get("bleu_signature")
            rows.append(row)
    teacher_rows = []
    for record in teachers.values():
        scores = record.get("scores") or {record.get("split", "test"): record}
        for split, result in scores.items():
            teacher_rows.append(
                {
                    "teacher_id": record.get("teacher_id"),
                    "corpus": record.get("corpus"),
                    "direction": record.get("direction"),
                    "preset": record.get("preset"),
                    "split": split,
                    "test_set": result.get("test_set"),
                    "bleu": result.get("bleu"),
                    "chrf": result.get("chrf"),
                    "bleu_signature": result.get("bleu_signature"),
                    "train_seconds": record.get("train_seconds"),
                    "epochs": record.get("epochs"),
                    "step": record.get("step"),
                }
            )
    return rows, teacher_rows


def _spec(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / "spec.yaml"
    if not path.is_file():
        return {}
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        log.warning("%s: unreadable (%s); rows and columns in order of appearance", path, err)
        return {}
    return values if isinstance(values, dict) else {}


def _model_config(records: list[dict], spec: dict[str, Any]) -> Config:
    """The teacher shape for the parameter table: from a result, else the spec's preset."""
    for record in records:
        values = record.get("config")
        if isinstance(values, dict):
            try:
                return config_mod.from_dict(values, "results.jsonl")
            except ConfigError:
                continue
    if spec.get("preset"):
        try:
            path = resolve_preset(str(spec["preset"]), None)
            values = config_mod.apply_overrides(config_mod.read_yaml(path), spec.get("set") or [])
            return config_mod.from_dict(values, str(path))
        except ConfigError as err:
            log.warning("preset %s: %s; the parameter table uses the defaults", spec["preset"], err)
    return Config()


# --------------------------------------------------------------------------- formatting


def _order(values: list[Any], preferred: list[Any] | None) -> list[Any]:
    seen = list(dict.fromkeys(v for v in values if v is not None))
    if not preferred:
        return seen
    first = [v for v in preferred if v in seen]
    return first + [v for v in seen if v not in first]


def _md(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _csv(headers: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue()


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _bleu_rel(row: dict | None) -> str:
    if row is None or row.get("bleu") is None:
        return "-"
    text = f"{row['bleu']:.2f}"
    if row.get("relative_bleu") is not None:
        text += f" ({row['relative_bleu']:.1f}%)"
    return text


def _provenance(rows: list[dict]) -> str:
    """Which test set(s) and BLEU signature(s) a table's numbers come from."""
    sets = sorted({f"{r['test_set']} (split {r['split']})" for r in rows if r.get("test_set")})
    sigs = sorted({r["bleu_signature"] for r in rows if r.get("bleu_signature")})
    return (
        f"Test set: {', '.join(sets) or 'unknown'}. "
        f"BLEU: sacreBLEU, signature `{' ; '.join(sigs) or 'unknown'}`."
    )


def _layer_set(text: str, count: int | None) -> list[int] | None:
    if count is None:
        return None
    if text == "all":
        return list(range(count))
    layers: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        return None
    return sorted(layers)


def _layer_kind(row: dict) -> tuple[int, list[str]] | None:
    """(number of replaced layers, [bottom and/or top]) for contiguous bottom/top sets."""
    sites = row.get("replace", "").split("+")
    count = row.get("encoder_layers") if all(s.startswith("encoder") for s in sites) else None
    if count is None:
        count = row.get("decoder_layers") if all(s.startswith("decoder") for s in sites) else None
    layers = _layer_set(row["layers"], count)
    if not layers or count is None:
        return None
    k = len(layers)
    kinds = []
    if layers == list(range(k)):
        kinds.append("bottom")
    if layers == list(range(count - k, count)):
        kinds.append("top")
    return (k, kinds) if kinds else None


# --------------------------------------------------------------------------- tables


def teacher_table(teachers: list[dict], cells: list[dict], directions: list[str]) -> tuple:
    """Table A: rows corpus (+ split), columns directions."""
    rows = list(teachers)
    if not rows:  # older results: the teacher's BLEU is in every cell
        seen = set()
        for r in cells:
            key = (r["corpus"], r["direction"], r["split"])
            if key not in seen and r.get("teacher_bleu") is not None:
                seen.add(key)
                rows.append({**r, "bleu": r["teacher_bleu"], "chrf": None, "preset": ""})
    if not rows:
        return None
    dirs = _order([r["direction"] for r in rows], directions)
    groups = _order([(r["corpus"], r["split"]) for r in rows], None)
    md_rows, csv_rows = [], []
    for corpus, split in groups:
        by_dir = {r["direction"]: r for r in rows if (r["corpus"], r["split"]) == (corpus, split)}
        md_rows.append(
            [f"Transformer ({corpus}, {split})"]
            + [
                _num(by_dir[d]["bleu"])
                + (f" / chrF {by_dir[d]['chrf']:.1f}" if by_dir[d].get("chrf") else "")
                if d in by_dir
                else "-"
                for d in dirs
            ]
        )
        for d in dirs:
            if d in by_dir:
                r = by_dir[d]
                csv_rows.append([corpus, split, d, r.get("test_set"), r["bleu"], r.get("chrf")])
    md = "\n".join(
        [
            "## Table A: teacher BLEU per direction",
            "",
            _md(["model"] + dirs, md_rows),
            "",
            _provenance(rows) + " Cells: BLEU / chrF.",
        ]
    )
    headers = ["corpus", "split", "direction", "test_set", "bleu", "chrf"]
    return md, _csv(headers, csv_rows)


def size_tables(cells: list[dict], order: dict[str, list]) -> tuple | None:
    """Tables B/C: per (corpus, direction, split, layers): rows variant, columns size."""
    if not cells:
        return None
    # every size and variant of the spec, measured or not (a growing ledger shows its gaps)
    sizes = _order([r["size"] for r in cells] + order.get("size", []), [s for s in SIZES])
    parts = ["## Tables B/C: BLEU (and % of the teacher) by replacement and size", ""]
    csv_rows = []
    groups = _order([(r["corpus"], r["direction"], r["split"], r["layers"]) for r in cells], None)
    groups.sort(key=lambda g: (g[0], _index(order["direction"], g[1]), g[2]))
    summary: dict[tuple, dict[str, float]] = {}  # -> {direction: relative BLEU}
    for corpus, direction, split, layers in groups:
        rows = [
            r
            for r in cells
            if (r["corpus"], r["direction"], r["split"], r["layers"])
            == (corpus, direction, split, layers)
        ]
        variants = _order([r["variant"] for r in rows] + order["variant"], order["variant"])
        teacher = next((r["teacher_bleu"] for r in rows if r.get("teacher_bleu") is not None), None)
        md_rows = []
        for variant in variants:
            line = [variant]
            for size in sizes:
                row = next((r for r in rows if (r["variant"], r["size"]) == (variant, size)), None)
                line.append(_bleu_rel(row))
                if row is not None:
                    csv_rows.append(
                        [corpus, direction, split, layers, variant, size, row["bleu"]]
                        + [row.get("relative_bleu"), row.get("teacher_bleu"), row.get("chrf")]
                    )
                    if row.get("relative_bleu") is not None:
                        key = (corpus, split, layers, variant, size)
                        summary.setdefault(key, {})[direction] = row["relative_bleu"]
            md_rows.append(line)
        parts += [
            f"### {corpus} {direction}, layers {layers} (teacher BLEU {_num(teacher)})",
            "",
            _md(["replaced \\ size"] + sizes, md_rows),
            "",
            _provenance(rows),
            "",
        ]
    directions = {r["direction"] for r in cells}
    if len(directions) > 1 and summary:
        md_rows = []
        keys = _order([k[:4] for k in summary], None)
        variants = _order([k[3] for k in keys], order["variant"])
        for corpus, split, layers in _order([k[:3] for k in keys], None):
            for variant in variants:
                line = [f"{variant} ({corpus}, layers {layers})"]
                for size in sizes:
                    values = summary.get((corpus, split, layers, variant, size))
                    line.append(_mean_cell(values, len(directions)))
                md_rows.append(line)
        parts += [
            f"### Mean % of the teacher's BLEU over {len(directions)} directions",
            "",
            _md(["replaced \\ size"] + sizes, md_rows),
            "",
            _provenance(cells) + " A mean over fewer directions names them.",
            "",
        ]
    headers = ["corpus", "direction", "split", "layers", "variant", "size", "bleu"]
    headers += ["relative_bleu", "teacher_bleu", "chrf"]
    return "\n".join(parts), _csv(headers, csv_rows)


def _mean_cell(by_direction: dict[str, float] | None, directions: int) -> str:
    """The mean relative BLEU over the directions measured; when some are missing, it names
    the ones it averages."""
    if not by_direction:
        return "-"
    text = f"{sum(by_direction.values()) / len(by_direction):.1f}%"
    if len(by_direction) < directions:
        text += f" ({', '.join(by_direction)} only)"
    return text


def _index(order: list, value: Any) -> int:
    return order.index(value) if value in order else len(order)


def layer_tables(cells: list[dict], order: dict[str, list]) -> tuple | None:
    """Table E: rows = number of replaced layers, columns = bottom / top per variant and size."""
    if len({r["layers"] for r in cells}) < 2:
        return None
    parts = ["## Table E: BLEU (and % of the teacher) by the number of replaced layers", ""]
    csv_rows = []
    groups = _order([(r["corpus"], r["direction"], r["split"]) for r in cells], None)
    groups.sort(key=lambda g: (g[0], _index(order["direction"], g[1]), g[2]))
    for corpus, direction, split in groups:
        rows = [
            r
            for r in cells
            if (r["corpus"], r["direction"], r["split"]) == (corpus, direction, split)
        ]
        combos = _order([(r["variant"], r["size"]) for r in rows], None)
        combos.sort(key=lambda c: (_index(order["variant"], c[0]), _index(list(SIZES), c[1])))
        table: dict[int, dict[tuple, dict]] = {}
        others = []
        for r in rows:
            kind = _layer_kind(r)
            if kind is None:
                others.append(r)
                continue
            k, kinds = kind
            for which in kinds:
                table.setdefault(k, {})[(r["variant"], r["size"], which)] = r
        headers = ["replaced layers"]
        for variant, size in combos:
            headers += [f"{variant} {size} from the bottom", f"{variant} {size} from the top"]
        md_rows = []
        for k in sorted(table):
            line = [str(k)]
            for variant, size in combos:
                for which in LAYER_KINDS:
                    row = table[k].get((variant, size, which))
                    line.append(_bleu_rel(row) + (f" [{row['layers']}]" if row else ""))
                    if row:
                        csv_rows.append(
                            [corpus, direction, split, variant, size, which, k, row["layers"]]
                            + [row["bleu"], row.get("relative_bleu"), row.get("teacher_bleu")]
                        )
            md_rows.append(line)
        for r in others:
            line = [f"layers {r['layers']}"]
            for variant, size in combos:
                hit = (r["variant"], r["size"]) == (variant, size)
                line += [_bleu_rel(r) if hit else "-", "-"]
            md_rows.append(line)
            csv_rows.append(
                [corpus, direction, split, r["variant"], r["size"], "other", None, r["layers"]]
                + [r["bleu"], r.get("relative_bleu"), r.get("teacher_bleu")]
            )
        teacher = next((r["teacher_bleu"] for r in rows if r.get("teacher_bleu") is not None), None)
        parts += [
            f"### {corpus} {direction} (teacher BLEU {_num(teacher)})",
            "",
            _md(headers, md_rows),
            "",
            _provenance(rows) + " Replaced layers in brackets (0 = the lowest layer).",
            "",
        ]
    headers = ["corpus", "direction", "split", "variant", "size", "from", "count", "layers"]
    headers += ["bleu", "relative_bleu", "teacher_bleu"]
    return "\n".join(parts), _csv(headers, csv_rows)


def params_table(
    cfg: Config, sizes: list[str] | None = None, also: list[str] | None = None
) -> tuple[str, str]:
    """Table D: parameters of one replacement network per method and size, from the registry:
    the paper's methods, and the methods ``also`` names (``site=method``, e.g. the ones a sweep
    uses beyond the paper)."""
    m = cfg.model
    n = cfg.distill.n
    sizes = sizes or ["XS", "S", "M", "L"]
    headers = ["method", "replaces", "teacher params replaced (per layer)"] + sizes
    md_rows, csv_rows = [], []
    extra = set(also or [])
    for key, method in METHODS.items():
        if not method.paper and key not in extra:
            continue
        replaced = replaced_params(key, m.d_model, m.heads, m.ffn_dim)
        line = [f"{method.name.upper()} {SITE_SHORT.get(method.site, method.site)}"]
        line += [method.summary, f"{replaced:,}"]
        for size in sizes:
            params = student_params(key, size, n, m.d_model, m.heads)
            ratio = params / replaced  # below 1 (methods beyond the paper): two decimals
            line.append(
                f"{params:,} ({ratio:,.0f}x)" if ratio >= 1 else f"{params:,} ({ratio:.2f}x)"
            )
            count = m.encoder_layers if method.site.startswith("encoder") else m.decoder_layers
            csv_rows.append([key, size, params, replaced, params / replaced, count, params * count])
        md_rows.append(line)
    md = "\n".join(
        [
            "## Table D: parameters per replacement network (one layer)",
            "",
            _md(headers, md_rows),
            "",
            f"Teacher d_model {m.d_model}, {m.heads} heads, FFN {m.ffn_dim}; fixed length "
            f"n = {n}. Counted from the method registry (no runs needed); in brackets: the ratio "
            "to the teacher parameters the network replaces. Multiply by the number of "
            f"replaced layers ({m.encoder_layers} encoder, {m.decoder_layers} decoder) for a "
            "whole stack.",
        ]
    )
    headers = ["method", "size", "params_per_layer", "replaced_per_layer", "ratio", "layers"]
    return md, _csv(headers + ["params_all_layers"], csv_rows)


def _flops_text(row: dict) -> str:
    """Network (and replaced-module) MFLOP per sentence of the hybrid (all its layers)."""
    model, lengths = row.get("model") or {}, row.get("lengths")
    if not model or not lengths:
        return ""
    network, replaced = 0.0, 0.0
    for entry in row["replace"].split("+"):
        count = model["encoder_layers" if entry.startswith("encoder") else "decoder_layers"]
        chosen = layer_indices(row["layers"])
        layers = count if chosen is None else len(chosen)
        size, d, heads = row["size"], model["d_model"], model["heads"]
        net, rep = inference_flops(entry, size, row["n"], d, heads, *lengths)
        network += layers * net
        replaced = None if rep is None or replaced is None else replaced + layers * rep
    return f"{network / 1e6:.3g} / " + ("-" if replaced is None else f"{replaced / 1e6:.3g}")


def cost_table(cells: list[dict]) -> tuple[str, str] | None:
    """What each hybrid costs at inference: parameters of its replacement networks against
    the teacher modules they replace, and measured greedy decoding speed against the
    teacher's (same machine, same run)."""
    rows = [r for r in cells if r.get("split", "test") == "test" and r.get("student_params")]
    if not rows:
        return None
    headers = [
        "direction",
        "replaced",
        "size",
        "layers",
        "network params",
        "teacher params replaced",
        "network / replaced MFLOP per sentence",
        "greedy sent/s (hybrid / teacher)",
    ]
    table = []
    for r in sorted(rows, key=lambda r: (r["direction"], r["variant"], _index(SIZES, r["size"]))):
        speed = r.get("sentences_per_s")
        teacher_speed = r.get("teacher_sentences_per_s")
        table.append(
            [
                r["direction"],
                r["variant"],
                r["size"],
                r["layers"],
                f"{r['student_params']:,}",
                f"{r['replaced_params']:,}" if r.get("replaced_params") else "",
                _flops_text(r),
                f"{speed:.1f} / {teacher_speed:.1f} ({speed / teacher_speed:.2f}x)"
                if speed and teacher_speed
                else "",
            ]
        )
    text = "\n".join(
        [
            "## Inference cost",
            "",
            _md(headers, table),
            "",
            "Parameters of every replacement network of the hybrid, against the teacher "
            "parameters they replace; FLOPs of those networks and of the teacher modules they "
            "replace for a sentence of the training set's mean lengths (2 per multiply-add of "
            "the matmuls; `attnless.sweep.params.inference_flops`); greedy decoding speed of "
            "the test set with the hybrid and with the teacher, measured in the same "
            "evaluation.",
        ]
    )
    return text, _csv(headers, table)


def results_csv(cells: list[dict]) -> str:
    headers = [
        "cell_id",
        "corpus",
        "direction",
        "variant",
        "replace",
        "size",
        "layers",
        "split",
        "test_set",
        "bleu",
        "chrf",
        "teacher_bleu",
        "relative_bleu",
        "student_params",
        "replaced_params",
        "params_ratio",
        "teacher_train_seconds",
        "distill_seconds",
        "eval_seconds",
        "seed",
        "bleu_signature",
    ]
    return _csv(headers, [[r.get(h) for h in headers] for r in cells])


# --------------------------------------------------------------------------- figures


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb", encoding=None) as handle:
        fig.savefig(handle, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _panels(count: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(count, 4)
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _legend(fig, ax) -> None:
    """One legend for all panels, right of them, where it hides no bar or line."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))


def size_figure(cells: list[dict], order: dict[str, list], path: Path) -> bool:
    """Relative BLEU vs size: one panel per (corpus, direction), one bar group per size."""
    rows = [r for r in cells if r.get("relative_bleu") is not None]
    if not rows or len({r["layers"] for r in rows}) > 1:
        return False
    split = rows[0]["split"]
    rows = [r for r in rows if r["split"] == split]
    groups = _order([(r["corpus"], r["direction"]) for r in rows], None)
    groups.sort(key=lambda g: (g[0], _index(order["direction"], g[1])))
    sizes = _order([r["size"] for r in rows], list(SIZES))
    variants = _order([r["variant"] for r in rows], order["variant"])
    fig, axes = _panels(len(groups))
    width = 0.8 / max(len(variants), 1)
    for ax, (corpus, direction) in zip(axes, groups):
        for j, variant in enumerate(variants):
            xs, ys = [], []
            for i, size in enumerate(sizes):
                row = next(
                    (
                        r
                        for r in rows
                        if (r["corpus"], r["direction"], r["variant"], r["size"])
                        == (corpus, direction, variant, size)
                    ),
                    None,
                )
                if row is not None:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(row["relative_bleu"])
            ax.bar(xs, ys, width=width, label=variant)
        ax.axhline(100, color="black", linestyle="--", linewidth=0.8)
        ax.set_xticks(range(len(sizes)), sizes)
        ax.set_title(f"{corpus} {direction}")
        ax.set_xlabel("replacement size")
        ax.set_ylabel("BLEU, % of the teacher")
    _legend(fig, axes[0])
    fig.suptitle(
        f"Relative BLEU by replacement and size ({rows[0].get('test_set')}, greedy)", y=1.03
    )
    _save(fig, path)
    return True


def layers_figure(cells: list[dict], order: dict[str, list], path: Path) -> bool:
    """Relative BLEU vs number of replaced layers, from the bottom and from the top."""
    rows = [r for r in cells if r.get("relative_bleu") is not None and _layer_kind(r)]
    if len({r["layers"] for r in rows}) < 2:
        return False
    split = rows[0]["split"]
    rows = [r for r in rows if r["split"] == split]
    groups = _order([(r["corpus"], r["direction"]) for r in rows], None)
    groups.sort(key=lambda g: (g[0], _index(order["direction"], g[1])))
    fig, axes = _panels(len(groups))
    for ax, (corpus, direction) in zip(axes, groups):
        mine = [r for r in rows if (r["corpus"], r["direction"]) == (corpus, direction)]
        for variant, size in _order([(r["variant"], r["size"]) for r in mine], None):
            for which, style in zip(LAYER_KINDS, ("-o", "--s")):
                points = sorted(
                    (_layer_kind(r)[0], r["relative_bleu"])
                    for r in mine
                    if (r["variant"], r["size"]) == (variant, size) and which in _layer_kind(r)[1]
                )
                if points:
                    ax.plot(*zip(*points), style, label=f"{variant} {size}, from the {which}")
        ax.axhline(100, color="black", linestyle=":", linewidth=0.8)
        ax.set_title(f"{corpus} {direction}")
        ax.set_xlabel("replaced layers")
        ax.set_ylabel("BLEU, % of the teacher")
    _legend(fig, axes[0])
    fig.suptitle(
        f"Relative BLEU by the number of replaced layers ({rows[0].get('test_set')})", y=1.03
    )
    _save(fig, path)
    return True


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
    records = read_results(results, warn=note)
    spec = _spec(sweep_dir)
    cells, teachers = _rows(records)
    grid = spec.get("grid") or {}
    order = {
        "direction": list(grid.get("direction") or []),
        "variant": [
            variant_label(v if isinstance(v, list) else [v]) for v in grid.get("replace") or []
        ],
        "size": [str(size) for size in grid.get("size") or []],
    }
    name = spec.get("name") or sweep_dir.name
    files: dict[str, str] = {}
    sections = [
        f"# Sweep {name}",
        "",
        f"Preset {spec.get('preset', '?')}"
        + (f"; overrides: {' '.join(spec['set'])}" if spec.get("set") else "")
        + f". {len({r['cell_id'] for r in cells})} cells, {len(teachers)} teacher(s)"
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
    if layered:
        sections += [layered[0], ""]
        files["layers.csv"] = layered[1]
    else:
        sized = size_tables(cells, order)
        if sized:
            sections += [sized[0], ""]
            files["bleu_by_size.csv"] = sized[1]
    cfg = _model_config(records, spec)
    used = {r["size"] for r in cells}
    sizes = [s for s in SIZES if s != "XL" or s in used]
    used = [e for v in grid.get("replace") or [] for e in (v if isinstance(v, list) else [v])]
    params_md, params_csv = params_table(cfg, sizes, used)
    sections += [params_md, ""]
    files["params.csv"] = params_csv
    files["results.csv"] = results_csv(cells)
    figures = []
    if size_figure(cells, order, out / "relative_bleu.png"):
        figures.append("relative_bleu.png")
    if layers_figure(cells, order, out / "layers.png"):
        figures.append("layers.png")
    if figures:
        sections += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    costs = cost_table(cells)
    if costs:
        sections += [costs[0], ""]
        files["inference_cost.csv"] = costs[1]
    sections += [findings_markdown(cells), ""]
    if not cells:
        sections += ["No finished cells yet; run `attnless sweep` first.", ""]
    markdown = "\n".join(sections)
    for file_name, text in files.items():
        write_text(out / file_name, text)
    write_text(out / "report.md", markdown)
    return {
        "out": str(out),
        "files": sorted([*files, "report.md", *figures]),
        "cells": len({r["cell_id"] for r in cells}),
        "teachers": len(teachers),
        "warnings": warnings,
        "markdown": markdown,
    }
