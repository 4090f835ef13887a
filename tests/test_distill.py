"""Online distillation from one shared teacher pass, resumable student checkpoints, hybrid
evaluation, and clear errors for students that do not fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attnless import checkpoint
from attnless import config as config_mod
from attnless.cli import app
from attnless.config import Config, ConfigError
from attnless.distill import Distiller, distill
from attnless.evaluate import evaluate
from attnless.model.sites import ReplacementError
from attnless.prepare import prepare
from attnless.replacement import LayerSet, Replacement
from attnless.rundir import RunDir
from attnless.runs import read_json, read_jsonl
from attnless.students import state_fingerprint, student_settings
from attnless.train import train
from tests.helpers import REPO, tiny_config

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
    return config_mod.load(cfg.run_dir(), list(overrides))


def _student_file(cfg: Config, family: str, layer: int) -> Path:
    """The checkpoint of ``family`` (``site=method:size``) at ``layer`` for ``cfg``'s settings."""
    (family,) = Replacement.parse(family).families()
    run = RunDir.of(cfg)
    teacher = run.teacher_fingerprint(cfg.distill.teacher_checkpoint)
    assert teacher is not None
    return run.student_folder(student_settings(cfg, family, teacher)).layer(layer)


def _fresh_run(cfg: Config, folder: Path, *overrides: str) -> Config:
    """A copy of ``cfg``'s teacher run folder without students or scores, loaded with
    ``overrides``."""
    shutil.copytree(cfg.run_dir(), folder, ignore=shutil.ignore_patterns("students", "eval"))
    return config_mod.load(folder, list(overrides))


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
    assert result["speed_rounds"] == 2 and result["teacher_sentences_per_s"] > 0
    untimed = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(update={"speed_rounds": 0})})
    (result_untimed,) = evaluate(untimed, ["test"], progress=False)
    assert "teacher_sentences_per_s" not in result_untimed
    assert result_untimed["bleu"] == result["bleu"]
    out = cfg.run_dir() / "eval" / result["variant"]
    hyps = (out / "test.first30.greedy.hyp.txt").read_text().splitlines()
    assert len(hyps) == 30
    assert (out / "test.first30.greedy.scores.json").is_file()
    # `attnless translate --replace`: the same hybrid translates raw lines the same way
    from typer.testing import CliRunner

    from attnless.cli import app

    source = cfg.run_dir().parent / "sources.txt"
    source.write_text("".join(line + "\n" for line in load_split(cfg.data, "test").src[:30]))
    replace = ["encoder.self=alr:S", "decoder.self=alr:S", "decoder.cross=alr:S"]
    args = ["translate", str(cfg.run_dir()), "-i", str(source), "--layers", "0-1"]
    done = CliRunner().invoke(app, [*args, *(a for r in replace for a in ("--replace", r))])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == hyps


# fp32 on one thread: a student's arithmetic is then the same whatever else runs beside it
EXACT = ("runtime.precision=fp32", "runtime.threads=1", "distill.lr=3e-3", "distill.layers=1")
FAMILIES = (
    "encoder.self=alr:XS",
    "encoder.self=elr:XS",
    "decoder.self=alr:XS",
    "decoder.cross=alr:XS",
)


def test_speed_is_timed_side_by_side_on_the_sources_the_hybrid_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Teacher and hybrid decode the same sources (not those an encoder-side hybrid hands to
    the teacher) in alternation; each speed is the best of its passes."""
    import types

    from attnless import evaluate as evaluate_mod

    teacher, student = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    hybrid = types.SimpleNamespace(n=3, encoder_side=True, decoder_side=True, model=student)
    seconds = {"teacher": iter([4.0, 2.0, 3.0]), "hybrid": iter([1.0, 5.0, 0.5])}
    calls = []

    def fake_translate(model, src_ids, cfg, progress=False, max_positions=None):
        name = "teacher" if model is teacher else "hybrid"
        calls.append((name, src_ids, max_positions))
        return [[]] * len(src_ids), next(seconds[name])

    monkeypatch.setattr(evaluate_mod, "translate_ids", fake_translate)
    sources = [[5, 6], [5, 6, 7, 8], [9], [1, 2, 3]]
    speed = evaluate_mod.speed_side_by_side(hybrid, teacher, sources, Config(), rounds=3)
    readable = [[5, 6], [9], [1, 2, 3]]
    assert calls == [("teacher", readable, None), ("hybrid", readable, 3)] * 3
    assert speed == {
        "sentences_per_s": 3 / 0.5,
        "teacher_sentences_per_s": 3 / 2.0,
        "speed_rounds": 3,
    }


def _assert_same_student(a: dict, b: dict) -> None:
    """Same position, history, weights and Adam state (moments and step), bit for bit."""
    assert a["position"] == b["position"]
    assert a["history"] == b["history"]
    assert a["student"].keys() == b["student"].keys()
    for name, tensor in a["student"].items():
        assert torch.equal(tensor, b["student"][name]), name
    states = a["optimizer"]["state"]
    assert states.keys() == b["optimizer"]["state"].keys() and states
    for index, state in states.items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[key], b["optimizer"]["state"][index][key]), (index, key)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("restore_threads")
def test_shared_pass_students_equal_separately_distilled_ones(
    teacher_run: Config, tmp_path: Path
) -> None:
    shared = _fresh_run(
        teacher_run,
        tmp_path / "shared",
        *EXACT,
        "distill.epochs=1",
        f"distill.replace=[{', '.join(FAMILIES)}]",
    )
    distill(shared, progress=False)
    for i, family in enumerate(FAMILIES):
        alone = _fresh_run(
            teacher_run,
            tmp_path / f"alone{i}",
            *EXACT,
            "distill.epochs=1",
            f"distill.replace=[{family}]",
        )
        distill(alone, progress=False)
        a = checkpoint.load(_student_file(shared, family, 1))
        b = checkpoint.load(_student_file(alone, family, 1))
        assert a["position"][0] == 1 and a["position"][2] > 1
        _assert_same_student(a, b)


@pytest.mark.usefixtures("restore_threads")
def test_resume_after_an_interrupted_epoch_equals_an_uninterrupted_run(
    teacher_run: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    families = ("encoder.self=alr:XS", "decoder.cross=alr:XS")
    args = (*EXACT, "distill.epochs=2", f"distill.replace=[{', '.join(families)}]")
    straight = _fresh_run(teacher_run, tmp_path / "straight", *args)
    distill(straight, progress=False)

    broken = _fresh_run(teacher_run, tmp_path / "broken", *args)
    real_step = Distiller.train_step

    def interrupted(self: Distiller, learners: list, group: list) -> dict:
        if learners[0].epoch == 1 and learners[0].batch_in_epoch == 2:  # its 3rd step
            raise KeyboardInterrupt
        return real_step(self, learners, group)

    monkeypatch.setattr(Distiller, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distill(broken, progress=False)
    monkeypatch.undo()
    for family in families:  # on disk: the end of epoch 1
        assert checkpoint.load(_student_file(broken, family, 1))["position"][:2] == (1, 0)
    distill(broken, progress=False)
    for family in families:
        a = checkpoint.load(_student_file(straight, family, 1))
        b = checkpoint.load(_student_file(broken, family, 1))
        assert a["position"][:2] == (2, 0)
        _assert_same_student(a, b)


def test_state_fingerprint_follows_every_weight() -> None:
    torch.manual_seed(0)
    state = {"a.weight": torch.randn(3, 4), "b.bias": torch.randn(4), "step": torch.tensor(7)}
    same = {k: v.clone() for k, v in reversed(state.items())}  # other order, other storage
    assert state_fingerprint(same) == state_fingerprint(state)
    nudged = dict(state, **{"a.weight": state["a.weight"].clone()})
    nudged["a.weight"][2, 3] = torch.nextafter(nudged["a.weight"][2, 3], torch.tensor(9.0))
    renamed = {("c.bias" if k == "b.bias" else k): v for k, v in state.items()}
    other_dtype = dict(state, **{"b.bias": state["b.bias"].double()})
    prints = {state_fingerprint(x) for x in (state, nudged, renamed, other_dtype)}
    assert len(prints) == 4


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    output = " ".join(result.output.split())
    assert result.exit_code == 0, output
    return output


@pytest.mark.usefixtures("restore_threads")
def test_cli_distill_with_other_settings_never_reuses_students(teacher_run: Config) -> None:
    """``attnless distill`` again with another learning rate or cross-attention masking trains
    new students in their own folders; the finished ones stay as they are."""
    run = str(teacher_run.run_dir())
    base = ["distill", run, "--replace", "decoder.cross=alr:XS", "--layers", "5", "-q"]
    base += ["--set", "distill.epochs=1", "--set", "runtime.threads=1"]
    root = teacher_run.run_dir() / "students" / "decoder.cross" / "alr-XS"
    _cli(*base)
    (first,) = [p.parent for p in root.glob("*/layer5.pt")]
    before = (first / "layer5.pt").read_bytes()
    seen = {first}
    for override, key, value in [
        ("distill.lr=3e-3", "lr", 0.003),
        ("distill.cross_causal=false", "cross_causal", False),
    ]:
        _cli(*base, "--set", override)
        (new,) = {p.parent for p in root.glob("*/layer5.pt")} - seen
        seen.add(new)
        settings = read_json(new / "settings.json")["settings"]
        assert (
            settings[key] == value and read_json(first / "settings.json")["settings"][key] != value
        )
        trained = checkpoint.load(new / "layer5.pt")
        assert trained["position"][0] == 1 and trained["meta"]["settings"] == settings
        old = checkpoint.load(first / "layer5.pt")["student"]
        assert any(not torch.equal(old[k], trained["student"][k]) for k in old)
    _cli(*base)  # the first settings again: their finished student is used as it is
    assert (first / "layer5.pt").read_bytes() == before
    assert len(seen) == 3
    # evaluating settings nobody distilled: no student, and the error says what differs
    result = CliRunner().invoke(
        app,
        ["evaluate", run, "--replace", "decoder.cross=alr:XS", "--layers", "5"]
        + ["--set", "distill.epochs=1", "--set", "distill.lr=5e-3"],
    )
    output = " ".join(result.output.split())
    assert result.exit_code == 1, output
    assert "no student for decoder.cross.alr-XS.5 distilled with these settings" in output
    assert "lr 0.003 -> 0.005" in output and "lr 0.0001 -> 0.005" in output


def test_students_of_other_settings_are_never_used(teacher_run: Config, tmp_path: Path) -> None:
    args = ("distill.replace=[encoder.self=alr:XS]", "distill.layers=3", "distill.epochs=1")
    cfg = _with(teacher_run, *args)
    distill(cfg, progress=False)
    good = _student_file(cfg, "encoder.self=alr:XS", 3)
    assert read_json(good.parent / "settings.json")["settings"]["epochs"] == 1
    # a student copied by hand into the folder of other settings (another size) is refused
    other = _with(teacher_run, "distill.replace=[encoder.self=alr:S]", *args[1:])
    wrong = _student_file(other, "encoder.self=alr:S", 3)
    wrong.parent.mkdir(parents=True, exist_ok=True)
    wrong.write_bytes(good.read_bytes())
    before = wrong.read_bytes()
    bad = _with(teacher_run, "eval.replace=[encoder.self=alr:S]", "eval.layers=3", *args[1:])
    with pytest.raises(ReplacementError, match=r"request's \(old -> new\): size 'XS' -> 'S'"):
        evaluate(bad, ["test"], progress=False)
    # distilling with the folder's settings refuses to resume or overwrite it
    with pytest.raises(ReplacementError, match=r"this job's \(old -> new\): size 'XS' -> 'S'"):
        distill(other, progress=False)
    assert wrong.read_bytes() == before
    # a student distilled by another number of processes (other batches per update)
    payload = checkpoint.load(good)
    checkpoint.save(good, {**payload, "meta": {**payload["meta"], "processes": 2}})
    with pytest.raises(ReplacementError, match="processes 2 -> 1"):
        distill(cfg, progress=False)
    checkpoint.save(good, payload)
    # settings nobody distilled: no student; the error names the others and how they differ
    (good.parent.parent / "layer3.pt").write_bytes(good.read_bytes())  # the layout before
    with pytest.raises(ReplacementError, match="alr-XS: students from before settings were"):
        evaluate(
            _with(
                cfg,
                "eval.replace=[encoder.self=alr:XS]",
                "eval.layers=3",
                *args,
                "distill.epochs=7",
            )
        )
    for override, diff in [("distill.epochs=2", "epochs 1 -> 2"), ("distill.n=40", "n 50 -> 40")]:
        request = _with(cfg, "eval.replace=[encoder.self=alr:XS]", "eval.layers=3", *args, override)
        with pytest.raises(
            ReplacementError, match=rf"(?s)no student for .*{good.parent}: .*{diff}"
        ):
            evaluate(request, ["test"])
    # a retrained teacher (other weights, same step): its students must be distilled again
    moved = tmp_path / "run"
    shutil.copytree(cfg.run_dir(), moved, ignore=shutil.ignore_patterns("eval"))
    best = moved / "checkpoints" / "best.pt"
    payload = checkpoint.load(best)
    payload["model"]["decoder.norm.bias"] += 1e-3
    checkpoint.save(best, payload)
    old_hash = RunDir.of(cfg).teacher_fingerprint("best")
    new_hash = RunDir(moved).teacher_fingerprint("best")
    assert old_hash != new_hash
    request = config_mod.load(
        moved, ["eval.replace=[encoder.self=alr:XS]", "eval.layers=3", *args[2:]]
    )
    with pytest.raises(ReplacementError, match=f"teacher '{old_hash}' -> '{new_hash}'"):
        evaluate(request, ["test"])


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
        Replacement.parse(text)


def test_layer_ranges() -> None:
    assert LayerSet.parse("all").resolve(6) == [0, 1, 2, 3, 4, 5]
    assert LayerSet.parse("0-2,5").resolve(6) == [0, 1, 2, 5]
    with pytest.raises(ReplacementError, match="layer 6 is out of range.*6 layers"):
        LayerSet.parse("4-6").resolve(6)
    with pytest.raises(ConfigError, match="expected all, 0-5 or 0,2,4"):
        LayerSet.parse("first")


def test_distillation_batch_follows_the_corpus(tmp_path: Path) -> None:
    """experiments/paper.yaml: 2,000 sentences on IWSLT2017 (the paper's), 256 on Multi30k;
    ``--set`` gives one number for every corpus, or changes one corpus's."""
    from attnless.sweep import expand, spec_from_dict

    paper = REPO / "experiments" / "paper.yaml"

    def batch(*overrides: str) -> int:
        return config_mod.load(paper, list(overrides)).distill.batch_size

    assert (batch(), batch("data.corpus=iwslt2017")) == (256, 2000)
    assert batch("data.corpus=iwslt2017", "distill.batch_size=512") == batch(
        "distill.batch_size=512"
    )
    assert batch("distill.batch_size=512") == 512
    assert batch("distill.batch_size.multi30k=300") == 300
    saved = config_mod.dump(config_mod.load(paper, ["data.corpus=iwslt2017"]))
    assert "batch_size: 2000" in saved  # a run folder records the number it used
    grid = {"corpus": ["multi30k", "iwslt2017"], "replace": [["encoder.self=alr"]], "size": ["M"]}
    spec = spec_from_dict({"name": "b", "preset": "paper", "grid": grid}, "b.yaml")
    cells = {c.corpus: c.config.distill.batch_size for c in expand(spec)}
    assert cells == {"multi30k": 256, "iwslt2017": 2000}
    partial = tmp_path / "partial.yaml"
    partial.write_text("data: {corpus: iwslt2017}\ndistill: {batch_size: {multi30k: 256}}\n")
    with pytest.raises(
        config_mod.ConfigError,
        match=(
            r"partial.yaml: distill.batch_size: no value for data.corpus 'iwslt2017'; "
            r"the mapping gives multi30k"
        ),
    ):
        config_mod.load(partial)


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
    student = _student_file(cfg, "encoder.self=alr:XS", 4)
    assert checkpoint.load(student)["position"][0] == 3  # students on disk are untouched


def test_teacher_checkpoints_keep_separate_scores(teacher_run: Config) -> None:
    cfg = _with(teacher_run, "data.eval_subset=30")
    (best,) = evaluate(cfg, ["test"], progress=False)
    (last,) = evaluate(_with(cfg, "eval.checkpoint=last"), ["test"], progress=False)
    assert (best["variant"], last["variant"]) == ("teacher", "teacher.last")
    scores = cfg.run_dir() / "eval" / "teacher" / "test.first30.greedy.scores.json"
    assert read_json(scores)["checkpoint"] == "best"  # not overwritten by the last one


def test_evaluate_scores_your_own_test_files(teacher_run: Config, tmp_path: Path) -> None:
    """`attnless evaluate RUN --src F --ref F`: the same scores as the corpus split they copy,
    for the teacher and a hybrid; misaligned files are an error naming both."""
    from typer.testing import CliRunner

    from attnless.cli import app
    from attnless.data import load_split

    cfg = _with(teacher_run, "distill.replace=[encoder.self=alr:XS]", "distill.layers=0")
    distill(cfg, progress=False)
    test = load_split(cfg.data, "test")
    src, ref = tmp_path / "mine.de", tmp_path / "mine.en"
    src.write_text("".join(line + "\n" for line in test.src[:20]))
    ref.write_text("".join(line + "\n" for line in test.tgt[:20]))
    run = str(cfg.run_dir())
    for extra in ([], ["--replace", "encoder.self=alr:XS", "--layers", "0"]):
        (expected,) = evaluate(_with(cfg, "data.eval_subset=20", *_eval_sets(extra)), ["test"])
        done = CliRunner().invoke(
            app, ["evaluate", run, "--src", str(src), "--ref", str(ref), "-q", *extra]
        )
        assert done.exit_code == 0, done.output
        variant = "teacher" if not extra else expected["variant"]
        scores = cfg.run_dir() / "eval" / variant / "files.mine.de.greedy.scores.json"
        mine = json.loads(scores.read_text())
        assert mine["bleu"] == expected["bleu"] and mine["chrf"] == expected["chrf"]
        assert mine["bleu_signature"] == expected["bleu_signature"]
        assert mine["test_set"] == f"{src} | {ref}"
    ref.write_text("".join(line + "\n" for line in test.tgt[:19]))
    bad = CliRunner().invoke(app, ["evaluate", run, "--src", str(src), "--ref", str(ref)])
    assert bad.exit_code == 1 and "20 lines" in bad.output and "19" in bad.output


def _eval_sets(extra: list[str]) -> list[str]:
    """``--replace X --layers Y`` as eval overrides."""
    if not extra:
        return []
    return [f"eval.replace=[{extra[1]}]", f"eval.layers={extra[3]}"]


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
    path = _student_file(cfg, "encoder.self=fnet:M", 0)
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
        "distill.epochs=1",  # the students' settings (their folder key)
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
    # the students' settings (their folder key) and the grouped test set
    grouped = ("data.test_group=4", "data.eval_subset=12", f"distill.n={n}", "distill.epochs=1")
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
