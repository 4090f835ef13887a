"""Online distillation from one shared teacher pass, resumable student checkpoints, hybrid
evaluation, and clear errors for students that do not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnless import checkpoint
from attnless.config import Config
from attnless.distill import Distiller, distill, parse_layers, parse_replace
from attnless.evaluate import evaluate
from attnless.model.sites import ReplacementError
from attnless.prepare import prepare
from attnless.runs import read_json, read_jsonl
from attnless.train import train
from tests.helpers import tiny_config

DISTILL = (
    "distill.n=50",
    "distill.batch_size=32",
    "distill.epochs=3",
    "distill.log_every=1",
    "distill.progress=false",
)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Config:
    """A tiny 6+6-layer teacher on a slice of Multi30k, trained for a few steps."""
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config(
        tmp,
        data_dir,
        "model.encoder_layers=6",
        "model.decoder_layers=6",
        "train.epochs=2",
        "data.train_subset=200",
        *DISTILL,
    )
    train(cfg, progress=False)
    return cfg


def _with(cfg: Config, *overrides: str) -> Config:
    from attnless import config as config_mod

    return config_mod.load(cfg.run_dir(), list(overrides))


def test_two_methods_two_sizes_six_layers_share_one_teacher_pass(
    teacher_run: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _with(
        teacher_run,
        'distill.replace=["encoder.self=alr:S,M", "encoder.self=alrr:S,M"]',
        "distill.layers=all",
        "distill.lr=3e-3",  # a few dozen steps: faster than the paper's 1e-4 / 1e-3
    )
    distiller = Distiller(cfg, prepare(cfg, record=False), progress=False)
    assert len(distiller.students) == 2 * 2 * 6
    passes = []
    real_pass = Distiller._teacher_pass
    monkeypatch.setattr(
        Distiller, "_teacher_pass", lambda self, batch: passes.append(1) or real_pass(self, batch)
    )
    steps_per_epoch = len(distiller.train_data) // 32 + (len(distiller.train_data) % 32 > 0)
    summary = distiller.fit()
    validation_passes = 3 * ((len(distiller.valid_data) + 31) // 32)  # shared by students
    assert len(passes) == 3 * steps_per_epoch + validation_passes  # one pass per batch
    records = read_jsonl(cfg.run_dir() / "students" / "metrics.jsonl")
    for method in ("alr", "alrr"):
        for size in ("S", "M"):
            curve = [
                r["mse"]
                for r in records
                if r["kind"] == "distill"
                and r["student"].startswith(f"encoder.self.{method}-{size}.")
            ]
            assert len(curve) == 6 * 3 * steps_per_epoch  # every layer, every step
            epoch = 6 * steps_per_epoch
            first, last = sum(curve[:epoch]) / epoch, sum(curve[-epoch:]) / epoch
            assert last < 0.99 * first, (method, size, first, last)  # same data each epoch
    for key, info in summary["students"].items():
        assert info["epoch"] == 3 and info["valid_mse"] > 0, key


def test_decoder_students_and_hybrid_evaluation(teacher_run: Config) -> None:
    replace = "[decoder.self=alr:S, decoder.cross=alr:S, encoder.self=alr:S]"
    cfg = _with(teacher_run, f"distill.replace={replace}", "distill.layers=0-1")
    summary = distill(cfg, progress=False)
    assert len(summary["students"]) == 6
    cfg = _with(
        teacher_run,
        "eval.replace=[encoder.self=alr:S, decoder.self=alr:S, decoder.cross=alr:S]",
        "eval.layers=0-1",
        "data.eval_subset=30",
    )
    (result,) = evaluate(cfg, ["test"], progress=False)
    assert result["variant"].startswith("encoder.self-alr-S+decoder.self-alr-S")
    assert 0 <= result["bleu"] <= 100 and result["teacher_bleu"] >= 0
    assert result["student_params"] > result["replaced_params"] > 0
    from attnless.data import load_split
    from attnless.data.tokenizer import Tokenizer

    sources = Tokenizer.load(cfg.run_dir()).encode_src(load_split(cfg.data, "test").src)
    assert result["teacher_fallback"] == sum(len(s) > 50 for s in sources)
    assert "relative_bleu" in result and result["sentences_per_s"] > 0
    out = cfg.run_dir() / "eval" / result["variant"]
    hyps = (out / "test.first30.greedy.hyp.txt").read_text().splitlines()
    assert len(hyps) == 30
    assert (out / "test.first30.greedy.scores.json").is_file()


def test_distillation_resumes_where_it_stopped(teacher_run: Config) -> None:
    args = ("distill.replace=[encoder.self=elr:XS]", "distill.layers=2")
    first = _with(teacher_run, *args, "distill.epochs=1")
    distill(first, progress=False)
    path = first.run_dir() / "students" / "encoder.self" / "elr-XS" / "layer2.pt"
    after_one = checkpoint.load(path)
    assert after_one["position"][0] == 1
    second = _with(teacher_run, *args, "distill.epochs=2")
    distill(second, progress=False)
    after_two = checkpoint.load(path)
    assert after_two["position"][0] == 2
    assert after_two["position"][2] == 2 * after_one["position"][2]
    assert len(after_two["history"]) == 2


def test_students_that_do_not_fit_are_refused(teacher_run: Config, tmp_path: Path) -> None:
    args = ("distill.replace=[encoder.self=alr:XS]", "distill.layers=3", "distill.epochs=1")
    cfg = _with(teacher_run, *args)
    distill(cfg, progress=False)
    students = cfg.run_dir() / "students" / "encoder.self"
    good = students / "alr-XS" / "layer3.pt"
    # a student saved under another size's name: shapes and method do not match the request
    wrong = students / "alr-S" / "layer3.pt"
    wrong.parent.mkdir(parents=True, exist_ok=True)
    wrong.write_bytes(good.read_bytes())
    before = wrong.read_bytes()
    bad = _with(teacher_run, "eval.replace=[encoder.self=alr:S]", "eval.layers=3")
    with pytest.raises(ReplacementError, match="size is 'XS' but the request needs 'S'"):
        evaluate(bad, ["test"], progress=False)
    assert wrong.read_bytes() == before
    # a student built for another fixed length n
    with pytest.raises(ReplacementError, match="n is 50 but the request needs 40"):
        evaluate(
            _with(cfg, "eval.replace=[encoder.self=alr:XS]", "eval.layers=3", "distill.n=40"),
            ["test"],
        )
    # distilling again into a folder with a mismatching student refuses to overwrite it
    with pytest.raises(ReplacementError, match="size is 'XS'"):
        distill(_with(teacher_run, "distill.replace=[encoder.self=alr:S]", "distill.layers=3"))
    assert wrong.read_bytes() == before
    # missing student
    with pytest.raises(ReplacementError, match="no student for"):
        evaluate(_with(teacher_run, "eval.replace=[encoder.self=aslr:M]", "eval.layers=3"))
    # a student distilled from another teacher checkpoint
    payload = checkpoint.load(good)
    payload["meta"]["teacher"]["step"] = -1
    checkpoint.save(good, payload)
    with pytest.raises(ReplacementError, match="distilled from the teacher at step -1"):
        evaluate(_with(teacher_run, "eval.replace=[encoder.self=alr:XS]", "eval.layers=3"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("encoder.self=alr", "expected site=method:size"),
        ("encoder.self=foo:M", "unknown replacement encoder.self=foo"),
        ("decoder.self=elr:M", "unknown replacement decoder.self=elr"),
        ("encoder.self=alr:XXL", "unknown size 'XXL'"),
        ("encoder.cross=alr:M", "unknown replacement encoder.cross=alr"),
    ],
)
def test_bad_replace_specs(text: str, message: str) -> None:
    with pytest.raises(ReplacementError, match=message):
        parse_replace(text)


def test_layer_ranges() -> None:
    assert parse_layers("all", 6) == [0, 1, 2, 3, 4, 5]
    assert parse_layers("0-2,5", 6) == [0, 1, 2, 5]
    with pytest.raises(ReplacementError, match="layer 6 is out of range.*6 layers"):
        parse_layers("4-6", 6)
    with pytest.raises(ReplacementError, match="expected all, 0-5 or 0,2,4"):
        parse_layers("first", 6)


def test_masked_mse_ignores_padding() -> None:
    from attnless.distill import masked_mse

    prediction = torch.zeros(2, 3, 4)
    target = torch.ones(2, 3, 4)
    target[1, 2] = 100.0  # a padded position: must not count
    keep = torch.tensor([[True, True, True], [True, True, False]])
    sse, count = masked_mse(prediction, target, keep)
    assert float(sse / count) == pytest.approx(1.0)


def test_hybrid_fine_tuning_is_reported_separately(teacher_run: Config) -> None:
    cfg = _with(teacher_run, "distill.replace=[encoder.self=alr:XS]", "distill.layers=4-5")
    distill(cfg, progress=False)
    tuned = _with(
        teacher_run,
        "eval.replace=[encoder.self=alr:XS]",
        "eval.layers=4-5",
        "eval.finetune_epochs=1",
        "data.eval_subset=10",
    )
    (result,) = evaluate(tuned, ["test"], progress=False)
    assert result["variant"] == "encoder.self-alr-XS.L4-5.ft1"
    assert result["finetune_epochs"] == 1 and result["finetune_final_loss"] > 0
    plain = cfg.run_dir() / "eval" / "encoder.self-alr-XS.L4-5"
    assert not plain.exists()  # the fine-tuned hybrid does not overwrite the distilled one
    student = cfg.run_dir() / "students" / "encoder.self" / "alr-XS" / "layer4.pt"
    assert checkpoint.load(student)["position"][0] == 3  # students on disk are untouched


def test_teacher_checkpoints_keep_separate_scores(teacher_run: Config) -> None:
    cfg = _with(teacher_run, "data.eval_subset=30")
    (best,) = evaluate(cfg, ["test"], progress=False)
    (last,) = evaluate(_with(cfg, "eval.checkpoint=last"), ["test"], progress=False)
    assert (best["variant"], last["variant"]) == ("teacher", "teacher.last")
    scores = cfg.run_dir() / "eval" / "teacher" / "test.first30.greedy.scores.json"
    assert read_json(scores)["checkpoint"] == "best"  # not overwritten by the last one


def test_parameter_free_students_skip_training_and_still_evaluate(teacher_run: Config) -> None:
    replace = '["encoder.self=fnet:M", "encoder.self=meanpool:M", "encoder.self=toeplitz:XS"]'
    cfg = _with(teacher_run, f"distill.replace={replace}", "distill.layers=0-1", "distill.epochs=1")
    distiller = Distiller(cfg, prepare(cfg, record=False), progress=False)
    free = [s for s in distiller.students if s.spec.method != "toeplitz"]
    assert len(free) == 4 and all(s.optimizer is None for s in free)
    summary = distiller.fit()  # the toeplitz students train in the same call
    for key, info in summary["students"].items():
        if ".toeplitz-" in key:
            assert info["params"] > 0 and info["step"] > 0 and info["epoch"] == 1, key
        else:
            assert info["params"] == 0 and info["step"] == 0 and info["valid_mse"] > 0, key
    path = cfg.run_dir() / "students" / "encoder.self" / "fnet-M" / "layer0.pt"
    payload = checkpoint.load(path)
    assert payload["optimizer"] is None and payload["position"] == (0, 0, 0)
    before = path.read_bytes()
    distill(cfg, progress=False)  # nothing left to do: the checkpoint stays as it is
    assert path.read_bytes() == before
    evaluated = _with(
        teacher_run,
        "eval.replace=[encoder.self=fnet:M]",
        "eval.layers=0-1",
        "data.eval_subset=10",
    )
    (result,) = evaluate(evaluated, ["test"], progress=False)
    assert result["student_params"] == 0 and result["replaced_params"] > 0
    assert result["teacher_fallback"] == 0 and 0 <= result["bleu"] <= 100


def test_grouped_test_set_reports_the_fallback_of_length_capped_students(
    teacher_run: Config,
) -> None:
    """Length generalisation: on test pairs joined in groups of 4, the length-capped mixer
    hands sources over n to the teacher (counted); the Toeplitz mixer reads them all."""
    from attnless.data import load_split
    from attnless.data.tokenizer import Tokenizer

    n = 150  # the tiny vocabulary makes long sentences: a group of 4 has 100-200 subwords
    replace = '["encoder.self=mixer:XS", "encoder.self=toeplitz:S"]'
    cfg = _with(
        teacher_run,
        f"distill.replace={replace}",
        "distill.layers=all",
        "distill.epochs=1",
        f"distill.n={n}",
    )
    distill(cfg, progress=False)
    grouped = ("data.test_group=4", "data.eval_subset=12", f"distill.n={n}")
    text = load_split(_with(teacher_run, *grouped).data, "test")
    assert len(text) == 12 and text.name.endswith("(groups of 4)")
    lengths = [len(s) for s in Tokenizer.load(cfg.run_dir()).encode_src(text.src)]
    over = sum(length > n for length in lengths)
    assert 0 < over < len(lengths)  # the test needs both kinds
    for method, fallback in (("mixer:XS", over), ("toeplitz:S", 0)):
        run = _with(
            teacher_run, f"eval.replace=[encoder.self={method}]", "eval.layers=all", *grouped
        )
        (result,) = evaluate(run, ["test"], progress=False)
        assert result["teacher_fallback"] == fallback, method
        assert result["test_set"] == text.name and result["sentences"] == 12 - fallback
        out = cfg.run_dir() / "eval" / result["variant"]
        assert (out / "test.group4.first12.greedy.scores.json").is_file()
        assert len((out / "test.group4.first12.greedy.hyp.txt").read_text().splitlines()) == 12
    teacher = cfg.run_dir() / "eval" / "teacher" / "test.group4.first12.greedy.scores.json"
    assert read_json(teacher)["test_set"] == text.name  # the teacher scored on the same groups
