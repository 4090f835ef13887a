"""The paper's claims checked against hand-written rows: each verdict can go either way."""

from __future__ import annotations

from attnless.findings import findings

TEACHER = 40.0


def row(variant: str, replace: str, size: str, bleu: float, direction: str = "de-en") -> dict:
    return {
        "direction": direction,
        "variant": variant,
        "replace": replace,
        "size": size,
        "layers": "all",
        "split": "test",
        "bleu": bleu,
        "teacher_bleu": TEACHER,
        "relative_bleu": 100 * bleu / TEACHER,
    }


def alr(size: str, bleu: float) -> dict:
    return row("ALR", "encoder.self=alr", size, bleu)


def verdicts(rows: list[dict]) -> list[str]:
    return [f.verdict for f in findings(rows)]


def test_nothing_measured() -> None:
    assert verdicts([]) == ["not yet measured"] * 5


def test_rising_saturating_alr_is_competitive() -> None:
    rows = [alr("XS", 20.0), alr("S", 25.0), alr("M", 37.0), alr("L", 38.0)]
    assert verdicts(rows) == ["holds", "holds", "not yet measured"] + ["not yet measured"] * 2


def test_saturation_needs_the_largest_size() -> None:
    rows = [alr("XS", 20.0), alr("S", 25.0), alr("M", 37.0)]
    assert findings(rows)[0].verdict == "not yet measured"
    assert findings([*rows, alr("L", 39.5)])[0].verdict == "holds"
    assert findings([*rows, alr("L", 39.9)])[0].verdict == "holds"
    rows = [alr("XS", 20.0), alr("S", 21.0), alr("M", 22.0), alr("L", 37.0)]
    assert findings(rows)[0].verdict == "does not hold"


def test_falling_bleu_and_a_weak_encoder_do_not_hold() -> None:
    rows = [alr("XS", 30.0), alr("S", 25.0), alr("M", 31.0)]
    first, competitive, *_ = findings(rows)
    assert first.verdict == "does not hold" and "ALR de-en" in first.evidence
    assert competitive.verdict == "does not hold" and "77.5%" in competitive.evidence


def test_alr_best_and_the_decoder_claims() -> None:
    methods = {"ALR": 36.0, "ALRR": 30.0, "ASLR": 35.0, "ELR": 20.0}
    rows = [row(m, f"encoder.self={m.lower()}", "M", b) for m, b in methods.items()]
    rows += [
        row("ALR dec self", "decoder.self=alr", "M", 38.0),
        row("ALR cross", "decoder.cross=alr", "M", 12.0),
    ]
    _, _, best, decoder_self, cross = findings(rows)
    assert best.verdict == "holds" and "ALR 36.00" in best.evidence
    assert decoder_self.verdict == "holds" and cross.verdict == "holds"
    rows[3] = row("ELR", "encoder.self=elr", "M", 37.0)
    rows[-1] = row("ALR cross", "decoder.cross=alr", "M", 39.0)
    _, _, best, _, cross = findings(rows)
    assert best.verdict == "does not hold" and cross.verdict == "does not hold"


def test_rows_without_a_teacher_score() -> None:
    """A cell scored before its teacher (no relative BLEU) is reported, never a crash."""
    rows = [alr("XS", 20.0), alr("S", 25.0), alr("M", 37.0)]
    for r in rows:
        r["relative_bleu"] = r["teacher_bleu"] = None
    first, competitive, *_ = findings(rows)
    assert "XS 20.00, S 25.00, M 37.00" in first.evidence
    assert competitive.verdict == "not yet measured"
