"""The paper's claims, checked against a sweep's results: holds, does not hold, not yet measured.

Each check reads the per-cell rows of a report (direction, variant, size, layers, BLEU, % of
the teacher) and says which numbers it used, so a reader can see why a claim holds or not.
Thresholds are stated in the text of each finding. The paper's claims read the ordinary test
set (``test_group`` 1); when a ledger has methods beyond the paper (the registry's ``paper``
flag), claims about them follow, one of which also reads the grouped test sets (k > 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attnless.model.sites import METHODS, Method
from attnless.results import variant_label

SIZE_ORDER = ("XS", "S", "M", "L", "XL")
COMPETITIVE = 90.0  # % of the teacher's BLEU that counts as "competitive"
TOLERANCE = 0.5  # BLEU: a drop smaller than this does not break "rises with size"
# Beyond the paper:
LEARNED_GAP = 5.0  # points of % of the teacher between the best learned and parameter-free
MATCH = 2.0  # BLEU below ALR's best that still "keeps ALR's quality"
FEWER = 0.1  # "far fewer parameters": at most this fraction of ALR's
KEEP = 5.0  # points of % of the teacher a length-free network may lose at the largest k

Row = dict[str, Any]
CROSS = variant_label(["decoder.cross=alr"])  # causal: students see decoder positions <= i
CROSS_PAPER = variant_label(["decoder.cross=alr"], cross_causal=False)


@dataclass
class Finding:
    claim: str
    verdict: str  # "holds", "does not hold", "not yet measured"
    evidence: str

    def markdown(self) -> str:
        return f"- **{self.claim}**: {self.verdict}. {self.evidence}"


def _all_layers(rows: list[Row]) -> list[Row]:
    return [r for r in rows if str(r.get("layers")) == "all" and r.get("bleu") is not None]


def _by_size(rows: list[Row], variant: str, direction: str) -> dict[str, Row]:
    return {r["size"]: r for r in rows if r["variant"] == variant and r["direction"] == direction}


def _pct(row: Row) -> str:
    """``M 37.56 (97.1%)``; the share is left out when no teacher score was recorded."""
    rel = row.get("relative_bleu")
    share = "" if rel is None else f" ({rel:.1f}%)"
    return f"{row['size']} {row['bleu']:.2f}{share}"


def rises_and_saturates(rows: list[Row]) -> Finding:
    claim = "BLEU rises with the network size and saturates"
    seen, broken = [], []
    saturating: dict[str, bool] = {}
    for direction in sorted({r["direction"] for r in rows}):
        for variant in sorted({r["variant"] for r in rows}):
            sizes = _by_size(rows, variant, direction)
            measured = [sizes[s] for s in SIZE_ORDER if s in sizes]
            if len(measured) < 3:
                continue
            seen.append(f"{variant} {direction}: " + ", ".join(_pct(r) for r in measured))
            bleu = [r["bleu"] for r in measured]
            if any(b < a - TOLERANCE for a, b in zip(bleu, bleu[1:])):
                broken.append(f"{variant} {direction}")
            if "L" in sizes:  # saturation is judged on the step to the largest paper size
                # a gain within TOLERANCE is noise: a variant flat from XS on has saturated
                gains = [b - a for a, b in zip(bleu, bleu[1:])]
                saturating[f"{variant} {direction}"] = gains[-1] <= max(*gains[:-1], TOLERANCE)
    evidence = "; ".join(seen) + "."
    if not seen:
        return Finding(claim, "not yet measured", "No variant has three sizes measured yet.")
    if broken:
        why = f"BLEU falls by more than {TOLERANCE} with size for {', '.join(broken)}. "
        return Finding(claim, "does not hold", why + evidence)
    if not saturating:
        return Finding(
            claim, "not yet measured", f"Rises so far; saturation needs size L. {evidence}"
        )
    rising = [label for label, saturated in saturating.items() if not saturated]
    if rising:
        why = (
            f"The step to L gains more than {TOLERANCE} BLEU and more than any earlier step "
            f"for {', '.join(rising)}. "
        )
        return Finding(claim, "does not hold", why + evidence)
    return Finding(claim, "holds", evidence)


def _best(rows: list[Row], keep: Callable[[Row], bool]) -> Row | None:
    chosen = [r for r in rows if keep(r) and r.get("relative_bleu") is not None]
    return max(chosen, key=lambda r: r["relative_bleu"]) if chosen else None


def _encoder_only(row: Row) -> bool:
    return all(part.startswith("encoder.self=") for part in str(row.get("replace")).split("+"))


def _competitive(claim: str, best: Row | None, missing: str, word: str) -> Finding:
    """Whether the best hybrid ``best`` keeps at least COMPETITIVE % of the teacher's BLEU."""
    if best is None:
        return Finding(claim, "not yet measured", missing)
    verdict = "holds" if best["relative_bleu"] >= COMPETITIVE else "does not hold"
    return Finding(
        claim,
        verdict,
        f"Best: {best['variant']} {best['direction']} {_pct(best)} of a teacher at "
        f"{best['teacher_bleu']:.2f} ({word}: at least {COMPETITIVE:.0f}%).",
    )


def encoder_competitive(rows: list[Row]) -> Finding:
    best = _best(rows, _encoder_only)
    claim = "Replacing encoder self-attention is competitive with attention"
    return _competitive(claim, best, "No encoder-only cell yet.", "competitive")


def alr_best(rows: list[Row]) -> Finding:
    claim = "ALR is the best encoder method"
    methods = ("ALR", "ALRR", "ASLR", "ELR")
    compared = []
    for direction in sorted({r["direction"] for r in rows}):
        for size in SIZE_ORDER:
            at = {
                r["variant"]: r
                for r in rows
                if r["direction"] == direction and r["size"] == size and r["variant"] in methods
            }
            if len(at) == len(methods):
                compared.append((direction, size, at))
    if not compared:
        return Finding(
            claim, "not yet measured", "No size has all four encoder methods measured yet."
        )
    winners = [max(at.values(), key=lambda r: r["bleu"]) for _, _, at in compared]
    wins = [w["variant"] == "ALR" for w in winners]
    text = "; ".join(
        f"{d} {s}: "
        + ", ".join(f"{m} {at[m]['bleu']:.2f}" for m in methods)
        + _params_vs_alr(w, at)
        for (d, s, at), w in zip(compared, winners, strict=True)
    )
    verdict = "holds" if all(wins) else "does not hold"
    return Finding(claim, verdict, f"ALR best in {sum(wins)} of {len(wins)}: {text}.")


def _params_vs_alr(winner: Row, at: dict[str, Row]) -> str:
    """How many times ALR's network parameters a winner other than ALR spends at that size."""
    mine, alr = winner.get("student_params"), at["ALR"].get("student_params")
    if winner["variant"] == "ALR" or not mine or not alr:
        return ""
    return f" ({winner['variant']}'s networks: {mine / alr:.1f}x ALR's parameters)"


def decoder_self_replaceable(rows: list[Row]) -> Finding:
    best = _best(rows, lambda r: r.get("replace") == "decoder.self=alr")
    claim = "Decoder self-attention can be replaced"
    return _competitive(claim, best, "No decoder self-attention cell yet.", "replaceable")


def cross_bottleneck(rows: list[Row]) -> Finding:
    claim = "Cross-attention is the bottleneck"
    pairs = []
    for direction in sorted({r["direction"] for r in rows}):
        for size in SIZE_ORDER:
            cross = [
                r
                for r in rows
                if r["direction"] == direction and r["size"] == size and r["variant"] == CROSS
            ]
            others = [
                r
                for r in rows
                if r["direction"] == direction
                and r["size"] == size
                and r.get("replace") in ("decoder.self=alr", "encoder.self=alr")
            ]
            if cross and others:
                pairs.append((direction, size, cross[0], max(others, key=lambda r: r["bleu"])))
    if not pairs:
        return Finding(
            claim,
            "not yet measured",
            "Needs cross-attention and self-attention ALR cells at the same size.",
        )
    lower = [c["bleu"] < o["bleu"] for _, _, c, o in pairs]
    text = "; ".join(
        f"{d} {s}: cross {c['bleu']:.2f} vs {o['variant']} {o['bleu']:.2f}" for d, s, c, o in pairs
    )
    verdict = "holds" if all(lower) else "does not hold"
    evidence = f"Cross-attention lowest in {sum(lower)} of {len(lower)}: {text}."
    paper = {(r["direction"], r["size"]): r for r in rows if r["variant"] == CROSS_PAPER}
    modes = [
        f"{d} {s}: {paper[d, s]['bleu']:.2f} vs causal {c['bleu']:.2f}"
        for d, s, c, _ in pairs
        if (d, s) in paper
    ]
    if modes:
        evidence += " Cross-attention students that see the whole decoder input (the paper's "
        evidence += f"code): {'; '.join(modes)}."
    return Finding(claim, verdict, evidence)


CHECKS = (
    rises_and_saturates,
    encoder_competitive,
    alr_best,
    decoder_self_replaceable,
    cross_bottleneck,
)


# --------------------------------------------------------------------------- beyond the paper


def _methods(row: Row) -> list[Method | None]:
    return [METHODS.get(entry) for entry in str(row.get("replace")).split("+")]


def _beyond(row: Row) -> bool:
    """A result with a network of a method beyond the paper."""
    return any(m is not None and not m.paper for m in _methods(row))


def _length_free(row: Row) -> bool:
    """A result whose networks all read any length (none is the registry's ``fixed_length``)."""
    return all(m is not None and not m.fixed_length for m in _methods(row))


def _group(row: Row) -> int:
    return row.get("test_group") or 1


def _params(row: Row) -> int | None:
    """Parameters of the result's networks, summed over its replaced layers (as recorded)."""
    params = row.get("student_params")
    return None if params is None else int(params)


def _named(row: Row) -> str:
    return f"{row['variant']} {row['direction']} {_pct(row)}"


def learned_mixing_needed(rows: list[Row]) -> Finding:
    claim = "Learned token mixing is needed (parameter-free mixing falls short)"
    ordinary = [r for r in rows if _group(r) == 1]
    free = _best(ordinary, lambda r: _params(r) == 0)
    learned = _best(ordinary, lambda r: bool(_params(r)))
    if free is None or learned is None:
        return Finding(
            claim,
            "not yet measured",
            "Needs a parameter-free (0 parameters) and a learned result with teacher scores.",
        )
    gap = learned["relative_bleu"] - free["relative_bleu"]
    verdict = "holds" if gap > LEARNED_GAP else "does not hold"
    return Finding(
        claim,
        verdict,
        f"Best parameter-free: {_named(free)}; best learned: {_named(learned)}; the learned one "
        f"is {gap:.1f} points of the teacher's BLEU higher (holds when more than "
        f"{LEARNED_GAP:.0f}).",
    )


def length_free_keeps_alr(rows: list[Row]) -> Finding:
    claim = "A length-free mixer keeps ALR's quality at far fewer parameters"
    ordinary = [r for r in rows if _group(r) == 1]
    compared, ok = [], []
    for direction in sorted({r["direction"] for r in ordinary}):
        here = [r for r in ordinary if r["direction"] == direction]
        alr = [r for r in here if r.get("replace") == "encoder.self=alr"]
        free = [r for r in here if _length_free(r) and _params(r) is not None]
        best = max(alr, key=lambda r: r["bleu"]) if alr else None
        if not free or best is None or _params(best) is None:
            continue
        mixer = max(free, key=lambda r: r["bleu"])
        gap, ratio = best["bleu"] - mixer["bleu"], _params(mixer) / max(_params(best), 1)
        ok.append(gap <= MATCH and ratio <= FEWER)
        compared.append(
            f"{direction}: {mixer['variant']} {_pct(mixer)} with {_params(mixer):,} parameters "
            f"vs ALR {_pct(best)} with {_params(best):,}: {gap:.2f} BLEU below ALR, "
            f"{ratio:.4f}x its parameters"
        )
    if not compared:
        return Finding(
            claim,
            "not yet measured",
            "Needs ALR and a length-free method (any length: the registry's fixed_length off) "
            "with parameter counts in the same direction.",
        )
    rule = f"holds when at most {MATCH:.0f} BLEU below ALR's best size with at most "
    rule += f"{FEWER:g}x its parameters"
    verdict = "holds" if all(ok) else "does not hold"
    return Finding(claim, verdict, f"Best length-free: {'; '.join(compared)} ({rule}).")


def long_inputs(rows: list[Row]) -> Finding:
    claim = "Length-free mixers keep their share of the teacher on long inputs"
    same: dict[tuple, dict[int, Row]] = {}
    for r in rows:
        if r.get("relative_bleu") is not None:
            key = (r["direction"], r["variant"], r["size"], str(r.get("layers")))
            same.setdefault(key, {}).setdefault(_group(r), r)
    kept, seen = [], []
    for (direction, variant, size, _), by_k in same.items():
        k = max(by_k)
        if k > 1 and 1 in by_k and _length_free(by_k[k]):
            first, last = by_k[1]["relative_bleu"], by_k[k]["relative_bleu"]
            kept.append(first - last <= KEEP)
            seen.append(
                f"{variant} {size} {direction}: {first:.1f}% at k=1, {last:.1f}% at k={k} "
                f"({last - first:+.1f} points)"
            )
    alr = [
        (k, r)
        for by_k in same.values()
        for k, r in by_k.items()
        if k > 1 and r.get("replace") == "encoder.self=alr"
    ]
    fallback = "ALR has no result on a grouped test set"
    if alr:
        k, r = max(alr, key=lambda pair: pair[0])
        # ``sentences``: those the hybrid translated itself; the fallback ones come on top
        fell, own = r.get("teacher_fallback"), r.get("sentences")
        fallback = f"ALR {r['size']} at k={k}: fallback not recorded"
        if fell is not None and own is not None and fell + own:
            total = fell + own
            fallback = (
                f"ALR {r['size']} at k={k}: {fell}/{total} sentences ({100 * fell / total:.0f}%) "
                f"longer than its n, translated by the teacher ({_pct(r)})"
            )
    if not seen:
        return Finding(
            claim,
            "not yet measured",
            f"Needs a length-free method on a grouped test set (k > 1) and at k = 1. {fallback}.",
        )
    verdict = "holds" if all(kept) else "does not hold"
    rule = f"holds when each loses at most {KEEP:.0f} points from k=1 to the largest k"
    return Finding(claim, verdict, f"{'; '.join(seen)} ({rule}). {fallback}.")


BEYOND_CHECKS = (learned_mixing_needed, length_free_keeps_alr, long_inputs)


def findings(rows: list[Row]) -> list[Finding]:
    """Every claim checked against ``rows`` (one per cell and split; the test split is used):
    the paper's on the ordinary test set, then, when a result uses a method beyond the paper,
    the claims about those (:data:`BEYOND_CHECKS`)."""
    test = [r for r in _all_layers(rows) if r.get("split", "test") == "test"]
    ordinary = [r for r in test if _group(r) == 1]
    checked = [check(ordinary) for check in CHECKS]
    if any(_beyond(r) for r in test):
        checked += [check(test) for check in BEYOND_CHECKS]
    return checked


def findings_markdown(rows: list[Row]) -> str:
    lines = [
        "## Findings: the paper's claims against these numbers",
        "",
        "Cells with every layer replaced, test split; thresholds in each line.",
        "",
    ]
    checked = findings(rows)
    lines += [f.markdown() for f in checked[: len(CHECKS)]]
    if checked[len(CHECKS) :]:
        lines += [
            "",
            "Beyond the paper (token mixers next to ALR; the last claim also reads the grouped "
            "test sets of the length table):",
            "",
        ]
        lines += [f.markdown() for f in checked[len(CHECKS) :]]
    return "\n".join(lines)
