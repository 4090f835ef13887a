"""Tests of the corpus layer (attnless.data) against the real corpora in shared/data.

The data root is ``$ATTNLESS_DATA``, default ``../shared/data`` relative to the repository root.
No test touches the network: downloads are replaced by fakes that fail unless a test says so.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
try:
    import attnless  # noqa: F401
except ImportError:  # the package is not installed: use the checkout
    sys.path.insert(0, str(REPO))

from attnless.config import DataConfig, SplitFiles  # noqa: E402
from attnless.data import (  # noqa: E402
    DataError,
    ParallelText,
    describe_source,
    fetch,
    load_split,
    parse_train_tags,
    parse_xml_segments,
    read_lines,
    read_parallel,
    wit3,
)

DATA = Path(os.environ.get("ATTNLESS_DATA") or REPO / ".." / "shared" / "data").resolve()
needs_data = pytest.mark.usefixtures("corpora_root")  # skipped without them, failed in CI
EN_DE = DATA / "iwslt2017" / "raw" / "2017-01-trnted" / "texts" / "en" / "de" / "en-de"
M30K = DATA / "multi30k" / "task1" / "raw"
REAL_DOWNLOAD_URL = fetch.download_url


def _offline(*args, **kwargs):
    raise urllib.error.URLError("network disabled in tests")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """A private empty cache and failing downloads for every test."""
    monkeypatch.setenv("ATTNLESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetch, "download_url", _offline)
    monkeypatch.setattr(fetch, "hub_download", _offline)


def cfg(corpus: str, src: str = "de", tgt: str = "en", root: Path = DATA, **kw) -> DataConfig:
    return DataConfig(corpus=corpus, src=src, tgt=tgt, data_dir=str(root), **kw)


def gz_lines(path: Path) -> list[str]:
    return gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[:-1]


# --------------------------------------------------------------------------- IWSLT 2017


@pytest.fixture(scope="module")
def hf_export() -> dict[str, list[dict[str, str]]]:
    out = {}
    for split, name in (("valid", "validation"), ("test", "test")):
        path = DATA / "iwslt2017" / "hf_export_de_en" / f"{name}.json.gz"
        out[split] = [row["translation"] for row in json.loads(gzip.decompress(path.read_bytes()))]
    return out


@needs_data
@pytest.mark.parametrize(
    ("split", "size", "name"), [("valid", 888, "dev2010"), ("test", 8079, "tst2010-2015")]
)
def test_iwslt_de_en_matches_hf(hf_export, split, size, name):
    pairs = load_split(cfg("iwslt2017"), split)
    assert len(pairs) == size == len(hf_export[split])
    assert pairs.src == [row["de"] for row in hf_export[split]]
    assert pairs.tgt == [row["en"] for row in hf_export[split]]
    assert pairs.name == f"iwslt2017 de-en {name}"


@needs_data
@pytest.mark.parametrize("split", ["valid", "test"])
def test_iwslt_en_de_is_swapped(hf_export, split):
    pairs = load_split(cfg("iwslt2017", "en", "de"), split)
    assert pairs.src == [row["en"] for row in hf_export[split]]
    assert pairs.tgt == [row["de"] for row in hf_export[split]]


@needs_data
def test_xml_segments_match_extracted_text():
    segments = parse_xml_segments(EN_DE / "IWSLT17.TED.dev2010.en-de.de.xml")
    assert segments == read_lines(DATA / "iwslt2017" / "text" / "de-en" / "dev2010.de")
    assert segments[0].startswith("Letztes Jahr habe ich diese beiden Folien gezeigt")


# Two talks in the real train.tags layout: metadata tag rows, then text rows.
TRAIN_DE = """\
<url>http://www.ted.com/talks/lang/de/al_gore_on_averting_climate_crisis.html</url>
<keywords>talks, alternative energy, cars, climate change, culture, environment</keywords>
<speaker>Al Gore</speaker>
<talkid>1</talkid>
<title>Al Gore über die Abwendung der Klimakrise</title>
<description>TED Talk Subtitles and Transcript: Mit dem gleichen Humor ...</description>
<reviewer href="http://www.ted.com/profiles/1">Jane Doe</reviewer>
<translator href="http://www.ted.com/profiles/2">John Roe</translator>
Vielen Dank, Chris.
  Es ist mir wirklich eine Ehre, zweimal auf dieser Bühne stehen zu dürfen.\t
Text mit a < b und <i>Kursiv</i> &amp; „Anführungszeichen“.
<url>http://www.ted.com/talks/lang/de/second_talk.html</url>
<keywords>talks, science</keywords>
<speaker>Erika Mustermann</speaker>
<talkid>2</talkid>
 <title>Zweiter Vortrag</title>
<description>TED Talk Subtitles and Transcript: Zweiter.</description>
<reviewer></reviewer>
<translator href="http://www.ted.com/profiles/3">Max Muster</translator>
Ich bin wirklich begeistert.
"""
TRAIN_EN = """\
<url>http://www.ted.com/talks/al_gore_on_averting_climate_crisis.html</url>
<keywords>talks, alternative energy, cars, climate change, culture, environment</keywords>
<speaker>Al Gore</speaker>
<talkid>1</talkid>
<title>Al Gore on averting climate crisis</title>
<description>TED Talk Subtitles and Transcript: With the same humor ...</description>
<reviewer href="http://www.ted.com/profiles/1">Jane Doe</reviewer>
<translator href="http://www.ted.com/profiles/2">John Roe</translator>
Thank you so much, Chris.
  And it's truly a great honor to have the opportunity to come to this stage twice.\t
Text with a < b and <i>italics</i> &amp; "quotes".
<url>http://www.ted.com/talks/second_talk.html</url>
<keywords>talks, science</keywords>
<speaker>Erika Mustermann</speaker>
<talkid>2</talkid>
 <title>Second talk</title>
<description>TED Talk Subtitles and Transcript: Second.</description>
<reviewer></reviewer>
<translator></translator>
I'm extremely grateful.
"""
EXPECTED_DE = [
    "Vielen Dank, Chris.",
    "Es ist mir wirklich eine Ehre, zweimal auf dieser Bühne stehen zu dürfen.",
    "Text mit a < b und <i>Kursiv</i> &amp; „Anführungszeichen“.",
    "Ich bin wirklich begeistert.",
]
EXPECTED_EN = [
    "Thank you so much, Chris.",
    "And it's truly a great honor to have the opportunity to come to this stage twice.",
    'Text with a < b and <i>italics</i> &amp; "quotes".',
    "I'm extremely grateful.",
]


def release_files(pair: str, sets: tuple[str, ...] = ("dev2010",)) -> dict[str, bytes]:
    """Files of a synthetic ``pair`` release: train.tags plus the real en-de XML, renamed."""
    text = {"de": TRAIN_DE, "en": TRAIN_EN}
    files = {f"train.tags.{pair}.{lang}": text[lang].encode() for lang in ("de", "en")}
    for s in sets:
        for lang in ("de", "en"):
            real = EN_DE / f"IWSLT17.TED.{s}.en-de.{lang}.xml"
            files[f"IWSLT17.TED.{s}.{pair}.{lang}.xml"] = real.read_bytes()
    return files


def test_train_tags_single_file(tmp_path):
    path = tmp_path / "train.tags.de-en.de"
    path.write_text(TRAIN_DE, encoding="utf-8")
    assert parse_train_tags(path) == EXPECTED_DE


@needs_data
def test_iwslt_release_folder(tmp_path, hf_export):
    folder = tmp_path / "data" / "iwslt2017" / "de-en"
    folder.mkdir(parents=True)
    sets = ("dev2010", *(f"tst{y}" for y in range(2010, 2016)))
    for name, data in release_files("de-en", sets).items():
        (folder / name).write_bytes(data)
    config = cfg("iwslt2017", root=tmp_path / "data")
    train = load_split(config, "train")
    assert (train.src, train.tgt) == (EXPECTED_DE, EXPECTED_EN)
    test = load_split(config, "test")  # the exact HF de-en file names
    assert test.src == [row["de"] for row in hf_export["test"]]
    assert test.tgt == [row["en"] for row in hf_export["test"]]
    assert str(folder) in describe_source(config, "train")


@needs_data
@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_iwslt_release_archive(tmp_path, hf_export, kind):
    root = tmp_path / "data"
    folder = root / "iwslt2017" / "downloads" / "2017-01-trnted"
    folder.mkdir(parents=True)
    files = release_files("de-en")
    if kind == "zip":
        archive = folder / "de-en.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for name, data in files.items():
                out.writestr(f"de-en/{name}", data)
    else:
        archive = folder / "de-en.tgz"
        with tarfile.open(archive, "w:gz") as out:
            for name, data in files.items():
                info = tarfile.TarInfo(f"de-en/{name}")
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    config = cfg("iwslt2017", root=root)
    train = load_split(config, "train")
    assert (train.src, train.tgt) == (EXPECTED_DE, EXPECTED_EN)
    valid = load_split(config, "valid")
    assert valid.src == [row["de"] for row in hf_export["valid"]]
    assert str(archive) in describe_source(config, "valid")


@needs_data
def test_iwslt_reverse_release(tmp_path):
    folder = tmp_path / "data" / "iwslt2017" / "en-de"
    folder.mkdir(parents=True)
    for name, data in release_files("en-de").items():
        (folder / name).write_bytes(data)
    train = load_split(cfg("iwslt2017", root=tmp_path / "data"), "train")
    assert (train.src, train.tgt) == (EXPECTED_DE, EXPECTED_EN)
    back = load_split(cfg("iwslt2017", "en", "de", root=tmp_path / "data"), "train")
    assert (back.src, back.tgt) == (EXPECTED_EN, EXPECTED_DE)


@needs_data
def test_iwslt_hub_download_then_cache(tmp_path, monkeypatch, hf_export):
    calls = []

    def fake_hub(repo_id, filename, local_dir):
        calls.append((repo_id, filename))
        path = Path(local_dir) / filename
        path.parent.mkdir(parents=True)
        with zipfile.ZipFile(path, "w") as out:
            for name, data in release_files("de-en").items():
                out.writestr(f"de-en/{name}", data)
        return path

    monkeypatch.setattr(fetch, "hub_download", fake_hub)
    config = cfg("iwslt2017", root=tmp_path / "empty")
    assert load_split(config, "train").src == EXPECTED_DE
    assert calls == [("IWSLT/iwslt2017", "data/2017-01-trnted/texts/de/en/de-en.zip")]
    monkeypatch.setattr(fetch, "hub_download", _offline)  # now served from the cache
    assert load_split(config, "valid").tgt == [row["en"] for row in hf_export["valid"]]


def test_iwslt_offline_without_files(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DataError) as err:
        load_split(cfg("iwslt2017", root=root), "valid")
    message = str(err.value)
    for part in (
        "IWSLT17.TED.dev2010.de-en.{de,en}.xml",
        "IWSLT17.TED.dev2010.en-de.{de,en}.xml",
        str(root / "iwslt2017"),
        str(tmp_path / "cache" / "iwslt2017"),
        "de-en.zip",
        "IWSLT/iwslt2017",
        "network disabled in tests",
    ):
        assert part in message


@needs_data
def test_iwslt_local_release_without_train_files():
    with pytest.raises(DataError, match=r"train\.tags\.de-en\.\{de,en\}"):
        load_split(cfg("iwslt2017"), "train")


def test_wit3_source_row_decides():
    src = ['<seg id="1"> a  b </seg>', "<url>x</url>", "  plain  ", "", "<seg id=2>c</seg>"]
    tgt = ["<seg id='1'>B</seg>", "<url>y</url>", "<odd>", "  ", "<seg>>d"]
    assert wit3.extract_pairs(src, tgt, "s", "t") == (
        ["a  b", "plain", "", "c"],
        ["B", "<odd>", "", ""],
    )


def test_wit3_rows_are_universal_newlines():
    assert wit3.rows("a\r\nb\rc\n\nd\n") == ["a", "b", "c", "", "d"]


def test_wit3_bad_rows():
    with pytest.raises(DataError, match=r"t\.xml: row 1: .*no '>'"):
        wit3.extract_pairs(["<seg id=1>a</seg>"], ["<seg id=1"], "s.xml", "t.xml")
    with pytest.raises(DataError, match=r"s\.xml has 2 rows but t\.xml has 1"):
        wit3.extract_pairs(["a", "b"], ["a"], "s.xml", "t.xml")


# --------------------------------------------------------------------------- Multi30k


@needs_data
@pytest.mark.parametrize("src", ["de", "fr"])
def test_multi30k_splits(src):
    sizes = {"train": 29000, "valid": 1014, "test": 1000}
    stems = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
    for split, size in sizes.items():
        pairs = load_split(cfg("multi30k", src, "en"), split)
        assert len(pairs) == size
        assert pairs.src[0] == gz_lines(M30K / f"{stems[split]}.{src}.gz")[0]
        assert pairs.tgt[0] == gz_lines(M30K / f"{stems[split]}.en.gz")[0]
    mscoco = load_split(cfg("multi30k", src, "en", test_set="test_2017_mscoco"), "test")
    assert len(mscoco) == 461
    assert mscoco.src == gz_lines(M30K / f"test_2017_mscoco.{src}.gz")
    flickr = load_split(cfg("multi30k", src, "en", test_set="test_2016_flickr"), "test")
    assert flickr.tgt == gz_lines(M30K / "test_2016_flickr.en.gz")


@needs_data
def test_subsets():
    config = cfg("multi30k", train_subset=7, eval_subset=3)
    assert len(load_split(config, "train")) == 7
    assert len(load_split(config, "valid")) == len(load_split(config, "test")) == 3
    with pytest.raises(DataError, match="data.train_subset: must be a positive"):
        load_split(cfg("multi30k", train_subset=0), "train")


@needs_data
@pytest.mark.parametrize("k", [2, 3, 4])
def test_grouped_test_set_joins_consecutive_flickr_pairs(k):
    """data.test_group=k: each k consecutive test_2016_flickr pairs joined into one (length
    generalisation); the last incomplete group is dropped; valid and train are untouched."""
    src = gz_lines(M30K / "test_2016_flickr.de.gz")
    tgt = gz_lines(M30K / "test_2016_flickr.en.gz")
    grouped = load_split(cfg("multi30k", test_group=k), "test")
    assert len(grouped) == 1000 // k
    for i in (0, 1, len(grouped) - 1):
        assert grouped.src[i] == " ".join(src[i * k : (i + 1) * k])
        assert grouped.tgt[i] == " ".join(tgt[i * k : (i + 1) * k])
    assert grouped.name.endswith(f"test_2016_flickr (groups of {k})")
    assert len(load_split(cfg("multi30k", test_group=k), "valid")) == 1014
    # data.eval_subset keeps the first N groups
    first = load_split(cfg("multi30k", test_group=k, eval_subset=5), "test")
    assert first.src == grouped.src[:5]


def test_grouping_keeps_only_whole_groups():
    from attnless.data import group_pairs

    text = ParallelText(["a", "b", "c"], ["A", "B", "C"], "t")
    assert group_pairs(text, 1) is text
    assert group_pairs(text, 2).src == ["a b"] and group_pairs(text, 2).tgt == ["A B"]
    with pytest.raises(DataError, match="fewer than one group of 4"):
        group_pairs(text, 4)


def test_test_group_is_checked_and_names_the_scores_file():
    from attnless.config import Config, ConfigError, from_dict
    from attnless.evaluate import output_tag

    with pytest.raises(ConfigError, match="data.test_group"):
        from_dict({"data": {"test_group": 0}})
    config = Config()
    config.data.test_group = 4
    assert output_tag(config, "test") == "test.group4.greedy"
    assert output_tag(config, "valid") == "valid.greedy"


@needs_data
def test_multi30k_language_not_in_split():
    with pytest.raises(DataError, match=r"data.src: 'cs' is not available in multi30k "):
        load_split(cfg("multi30k", "cs", "en", test_set="test_2017_mscoco"), "test")
    with pytest.raises(DataError, match="data.test_set: 'test_2018'"):
        load_split(cfg("multi30k", test_set="test_2018"), "test")


def test_multi30k_download_to_cache(tmp_path, monkeypatch):
    def fake_download(url, dest, **kwargs):
        name = url.rsplit("/", 1)[-1]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(gzip.compress(f"{name} 1\n{name} 2\n".encode()))
        return dest

    monkeypatch.setattr(fetch, "download_url", fake_download)
    config = cfg("multi30k", root=tmp_path / "empty")
    pairs = load_split(config, "valid")
    assert pairs.src == ["val.de.gz 1", "val.de.gz 2"]
    assert (tmp_path / "cache" / "multi30k" / "task1" / "raw" / "val.en.gz").is_file()
    monkeypatch.setattr(fetch, "download_url", _offline)  # now served from the cache
    assert load_split(config, "valid").tgt == ["val.en.gz 1", "val.en.gz 2"]


def test_multi30k_offline_missing(tmp_path):
    root = tmp_path / "empty"
    with pytest.raises(DataError) as err:
        load_split(cfg("multi30k", root=root), "train")
    message = str(err.value)
    for part in (
        "train.de.gz",
        "train.en.gz",
        str(root / "multi30k" / "task1" / "raw"),
        str(tmp_path / "cache" / "multi30k" / "task1" / "raw"),
        "network disabled in tests",
    ):
        assert part in message


class _BrokenResponse(io.BytesIO):
    """A response that delivers a few bytes and then loses the connection."""

    def read(self, size=-1):
        if self.tell() >= 4:
            raise ConnectionResetError("connection lost")
        return super().read(2 if size is None or size < 0 else min(size, 2))


@pytest.mark.parametrize("body", [gzip.compress(b"x\n" * 100), b"<html>Not Found</html>"])
def test_failed_download_leaves_no_file(tmp_path, monkeypatch, body):
    monkeypatch.setattr(fetch, "download_url", REAL_DOWNLOAD_URL)
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: _BrokenResponse(body))
    with pytest.raises(DataError, match="train.de.gz"):
        load_split(cfg("multi30k", root=tmp_path / "empty"), "train")
    cache = tmp_path / "cache"
    assert [p for p in cache.rglob("*") if p.is_file()] == []


# --------------------------------------------------------------------------- text corpus


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_text_corpus(tmp_path, monkeypatch):
    write(tmp_path / "d" / "train.de", "Hallo Welt\r\n  zwei  \n")
    write(tmp_path / "d" / "train.en", "Hello world\n  two  ")
    write(tmp_path / "d" / "other.de", "x\n")
    write(tmp_path / "d" / "other.en", "y\n")
    monkeypatch.chdir(tmp_path)
    files = {
        "train": SplitFiles(src="d/train.de", tgt=str(tmp_path / "d" / "train.en")),
        "valid": SplitFiles(src="train.de", tgt="train.en"),  # relative to the data root
        "other": SplitFiles(src="other.de", tgt="other.en"),
    }
    config = cfg("text", root=tmp_path / "d", files=files, test_set="other")
    train = load_split(config, "train")
    assert (train.src, train.tgt) == (["Hallo Welt", "  zwei  "], ["Hello world", "  two  "])
    assert load_split(config, "valid").src == train.src
    assert load_split(config, "test").tgt == ["y"]
    assert str(tmp_path / "d" / "train.de") in describe_source(config, "valid")
    config.test_set = "test"
    with pytest.raises(DataError, match=r"data\.files\.test: no src/tgt files"):
        load_split(config, "test")
    config.files = {"train": files["train"]}
    with pytest.raises(DataError, match=r"data\.files\.valid: .*configured splits: train"):
        load_split(config, "valid")
    config.files = {"train": SplitFiles(src="nope.de", tgt="d/train.en")}
    with pytest.raises(DataError, match=r"data\.files\.train\.src: file not found: 'nope\.de'"):
        load_split(config, "train")


# --------------------------------------------------------------------------- bad input


def test_line_count_mismatch(tmp_path):
    src = write(tmp_path / "a.de", "1\n2\n3\n")
    tgt = write(tmp_path / "a.en", "1\n2\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt, "pair")
    assert all(part in str(err.value) for part in (str(src), str(tgt), "3 lines", "has 2"))


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.de", "")
    with pytest.raises(DataError, match=f"{path}: is empty"):
        read_lines(path)
    other = write(tmp_path / "full.en", "x\n")
    with pytest.raises(DataError, match="is empty"):
        read_parallel(path, other, "pair")
    gz = write(tmp_path / "empty.de.gz", gzip.compress(b""))
    with pytest.raises(DataError, match=f"{gz}: is empty"):
        read_lines(gz)


def test_missing_file(tmp_path):
    present = write(tmp_path / "a.en", "x\n")
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.de'}: file not found"):
        read_lines(tmp_path / "nope.de")
    with pytest.raises(DataError, match="file not found: .*nope.de"):
        read_parallel(tmp_path / "nope.de", present, "pair")


def test_undecodable_bytes(tmp_path):
    path = write(tmp_path / "bad.de", b"ok\n\xff\xfe bad\n")
    with pytest.raises(DataError) as err:
        read_lines(path)
    message = str(err.value)
    assert str(path) in message and "line 2" in message and "byte offset 3" in message
    gz = write(tmp_path / "bad.de.gz", gzip.compress(b"ok\n\xff\xfe bad\n"))
    with pytest.raises(DataError, match="line 2: invalid UTF-8 at byte offset 3 of the uncompr"):
        read_lines(gz)
    with pytest.raises(DataError, match="cannot read gzip file"):
        read_lines(write(tmp_path / "fake.gz", b"not gzip"))


def test_lines_keep_content(tmp_path):
    path = write(tmp_path / "x.txt", "\ufeffa \r\n\tb\rc\n\n  \nlast")
    assert read_lines(path) == ["\ufeffa ", "\tb\rc", "", "  ", "last"]


def test_unknown_corpus_pair_split(tmp_path):
    with pytest.raises(DataError, match=r"data\.corpus: 'wmt14' .*multi30k, iwslt2017, text"):
        load_split(cfg("wmt14"), "train")
    with pytest.raises(DataError, match=r"'de-fr'.*expected one of .*de-en, "):
        load_split(cfg("iwslt2017", "de", "fr"), "valid")
    with pytest.raises(DataError, match=r"data\.tgt: 'ja' is not available in multi30k"):
        load_split(cfg("multi30k", "de", "ja"), "valid")
    with pytest.raises(DataError, match=r"split 'dev' .*train, valid, test"):
        load_split(cfg("multi30k"), "dev")
    with pytest.raises(DataError, match=r"data\.test_set: 'test_2017_mscoco' is not an iwslt"):
        load_split(cfg("iwslt2017", test_set="test_2017_mscoco"), "test")


def test_parallel_text_checks_lengths():
    with pytest.raises(DataError, match="2 source segments but 1 target"):
        ParallelText(["a", "b"], ["a"], "x")


def test_import_is_light():
    code = (
        "import sys, attnless.data; "
        "print(sorted(m for m in ('datasets', 'huggingface_hub', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
