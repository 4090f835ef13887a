"""Replacements and layer sets as values (parsed once, one canonical text), and the run-folder
layout that :class:`RunDir` owns (the paths existing run folders have)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from attnless.config import ConfigError
from attnless.model.sites import ReplacementError
from attnless.replacement import ALL, Family, LayerSet, Replacement, variant_name
from attnless.rundir import RunDir
from attnless.runs import fingerprint
from attnless.sweep import load_spec
from tests.helpers import REPO


@pytest.mark.parametrize(
    ("text", "indices", "canonical"),
    [
        ("all", None, "all"),
        (" all ", None, "all"),
        ("3", (3,), "3"),
        ("0-5", (0, 1, 2, 3, 4, 5), "0-5"),
        ("0,2,4", (0, 2, 4), "0,2,4"),
        ("0, 1,2", (0, 1, 2), "0-2"),
        ("5,0-2,2", (0, 1, 2, 5), "0-2,5"),
        ("4-5,1", (1, 4, 5), "1,4-5"),
    ],
)
def test_layer_sets_parse_to_one_canonical_text(text: str, indices, canonical: str) -> None:
    layers = LayerSet.parse(text)
    assert layers.indices == indices and str(layers) == canonical
    assert LayerSet.parse(str(layers)) == layers


def test_layer_sets_are_checked_against_the_layer_count() -> None:
    assert ALL.resolve(3) == [0, 1, 2] and LayerSet.parse("1-2").resolve(3) == [1, 2]
    with pytest.raises(ReplacementError, match=r"layer 3 is out of range: .* 3 layers \(0-2\)"):
        LayerSet.parse("2-3").resolve(3)
    with pytest.raises(ConfigError, match="eval.layers '2-1': the range 2-1 is reversed"):
        LayerSet.parse("2-1", "eval.layers")
    with pytest.raises(ValueError, match="sorted distinct"):
        LayerSet((2, 1))


def test_the_spec_layer_sets_are_canonical() -> None:
    """Cell ids hash the layers' text: the committed specs spell them canonically, so their
    ids are those of the text as written."""
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        values = yaml.safe_load(path.read_text())
        if isinstance(values, dict) and "grid" in values:
            spec = load_spec(path)
            grids = values["grid"] if isinstance(values["grid"], list) else [values["grid"]]
            assert len(spec.grids) == len(grids), path
            for grid, parsed in zip(grids, spec.grids):
                written = [str(v).replace(" ", "") for v in grid.get("layers", [])]
                assert [str(v) for v in parsed.get("layers", [])] == written, path


def test_replacements_parse_once_and_print_canonically() -> None:
    r = Replacement.parse(" encoder.self = alr : s, M")
    assert r == Replacement("encoder.self", "alr", ("S", "M"))
    assert str(r) == "encoder.self=alr:S,M" and Replacement.parse(str(r)) == r
    assert (
        r.key == "encoder.self=alr"
        and str(Replacement("decoder.cross", "alr")) == "decoder.cross=alr"
    )
    assert r.families() == [Family("encoder.self", "alr", "S"), Family("encoder.self", "alr", "M")]
    assert "/".join(r.families()[0]) == "encoder.self/alr/S"
    assert Replacement.of("decoder.self=alr") == Replacement("decoder.self", "alr")
    request = [r, Replacement("decoder.self", "alr", ("L",))]
    assert variant_name(request, LayerSet.parse("0-1,4")) == (
        "encoder.self-alr-S_M+decoder.self-alr-L.L0-1_4"
    )
    assert variant_name([Replacement("encoder.self", "alr", ("L",))], ALL) == (
        "encoder.self-alr-L.Lall"
    )


def test_run_dir_layout(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.config_file == tmp_path / "config.yaml"
    assert run.metrics_file == tmp_path / "metrics.jsonl"
    assert run.checkpoint("average") == tmp_path / "checkpoints" / "average.pt"
    assert run.epoch_weights(3) == tmp_path / "checkpoints" / "epoch3.weights.pt"
    assert run.student_metrics_file == tmp_path / "students" / "metrics.jsonl"
    settings = {"site": "decoder.cross", "method": "alr", "size": "XS", "lr": 1e-3}
    folder = run.student_folder(settings)
    key = fingerprint(settings, 10)
    assert folder.layer(5) == tmp_path / "students" / "decoder.cross" / "alr-XS" / key / "layer5.pt"
    assert folder.marker_file == folder.path / "sweep.json"
    assert run.eval_files(RunDir.teacher_variant("best"), "test.greedy") == (
        tmp_path / "eval" / "teacher" / "test.greedy.hyp.txt",
        tmp_path / "eval" / "teacher" / "test.greedy.scores.json",
    )
    assert RunDir.teacher_variant("last") == "teacher.last"


def test_run_dir_saves_students_and_refuses_other_settings(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    settings = {"site": "encoder.self", "method": "alr", "size": "M", "epochs": 2}
    payload = {"student": {"w": torch.ones(2)}, "meta": {"settings": settings, "layer": 1}}
    run.save_student(settings, 1, {**payload, "meta": {**payload["meta"], "processes": 1}})
    folder = run.student_folder(settings)
    assert folder.saved_settings() == settings and folder.has([1]) and not folder.has([0, 1])
    assert torch.equal(run.load_student(settings, 1, processes=1)["student"]["w"], torch.ones(2))
    ((spec, path),) = run.student_checkpoints()
    assert spec.key == "encoder.self.alr-M.1" and path == folder.layer(1)
    with pytest.raises(ReplacementError, match=r"this job's \(old -> new\): processes 1 -> 2"):
        run.load_student(settings, 1, processes=2, whose="this job's")
    other = {**settings, "epochs": 3}
    assert run.other_settings(other) == [f"{folder.path}: epochs 2 -> 3"]
    (run.student_folder(other).path).mkdir(parents=True)
    folder.layer(1).rename(run.student_folder(other).layer(1))  # moved by hand
    with pytest.raises(ReplacementError, match=r"request's \(old -> new\): epochs 2 -> 3"):
        run.load_student(other, 1)
