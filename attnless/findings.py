"""The paper's claims, checked against a sweep's results: holds, does not hold, not yet measured.

Each check reads the per-cell rows of a report (direction, variant, size, layers, BLEU, % of
the teacher) and says which numbers it used, so a reader can see why a claim holds or not.
Thresholds are stated in the text of each finding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SIZE_ORDER = ("XS", "S", "M", "L", "XL")
COMPETITIVE = 90.0  # % of the teacher's BLEU that counts as "competitive"
TOLERANCE = 0.5  # BLEU: a drop smaller than this does not break "rises with size"

Row = dict[str, Any]


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
    seen, broken, saturating = [], [], []
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
                gains = [b - a for a, b in zip(bleu, bleu[1:])]
                saturating.append(gains[-1] <= max(gains[:-1]))
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
    if not all(saturating):
        why = "The step to L gains more than an earlier step for some variant. "
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
    wins = [max(at.values(), key=lambda r: r["bleu"])["variant"] == "ALR" for _, _, at in compared]
    text = "; ".join(
        f"{d} {s}: " + ", ".join(f"{m} {at[m]['bleu']:.2f}" for m in methods)
        for d, s, at in compared
    )
    verdict = "holds" if all(wins) else "does not hold"
    return Finding(claim, verdict, f"ALR best in {sum(wins)} of {len(wins)}: {text}.")


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
                if r["direction"] == direction
                and r["size"] == size
                and r.get("replace") == "decoder.cross=alr"
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
    return Finding(claim, verdict, evidence)


CHECKS = (
    rises_and_saturates,
    encoder_competitive,
    alr_best,
    decoder_self_replaceable,
    cross_bottleneck,
)


def findings(rows: list[Row]) -> list[Finding]:
    """Every claim checked against ``rows`` (one per cell and split; the test split is used)."""
    test = [r for r in _all_layers(rows) if r.get("split", "test") == "test"]
    return [check(test) for check in CHECKS]


def findings_markdown(rows: list[Row]) -> str:
    lines = [
        "## Findings: the paper's claims against these numbers",
        "",
        "Cells with every layer replaced, test split; thresholds in each line.",
        "",
    ]
    return "\n".join(lines + [f.markdown() for f in findings(rows)])
