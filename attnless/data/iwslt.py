"""IWSLT 2017 TED bilingual track, split for split as the Hugging Face ``iwslt2017-{src}-{tgt}``.

Splits of a release for pair ``p`` (``de-en``, ``en-de``, ...), as in the HF script:
train = ``train.tags.{p}.{lang}``; valid = ``IWSLT17.TED.dev2010.{p}.{lang}.xml``;
test = ``IWSLT17.TED.tst{2010..2015}.{p}.{lang}.xml`` concatenated in year order. Text is
extracted with the HF rules in :mod:`attnless.data.wit3`.

Where the release comes from, first match wins (a candidate counts only if it holds every file
of the requested split, so e.g. a dev/test-only folder still serves valid and test):

1. The data root: the folders ``<root>/iwslt2017`` and ``<root>`` themselves, folders named
   ``{src}-{tgt}/`` and archives ``{src}-{tgt}.zip``/``.tgz``/``.tar.gz`` at any depth below
   ``<root>/iwslt2017`` or directly in ``<root>``, then the same for the reverse pair
   ``{tgt}-{src}``. The reverse release holds the same segments (for de-en, the en-de XML files
   give exactly HF's de-en validation and test); as in HF, the rows of the requested source
   language decide what is kept.
2. The cache: the same search below ``<cache>/iwslt2017`` (``$ATTNLESS_CACHE`` or
   ``~/.cache/attnless``).
3. The Hugging Face hub: ``huggingface_hub.hf_hub_download`` of
   ``data/2017-01-trnted/texts/{src}/{tgt}/{src}-{tgt}.zip`` from the dataset repository
   ``IWSLT/iwslt2017`` into ``<cache>/iwslt2017/``; this is the archive the HF loading script
   itself downloads, so parsing it with the same rules gives the same splits. The script cannot
   be run with ``datasets>=4`` (script datasets were removed), and the archive route needs only
   ``huggingface_hub``, imported lazily. Once downloaded, step 2 finds it offline.

Offline with none of these, DataError names the files expected and every place searched.
"""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig, data_root
from . import fetch, wit3
from .errors import DataError
from .textio import ParallelText

HUB_REPO = "IWSLT/iwslt2017"
HUB_FILE = "data/2017-01-trnted/texts/{src}/{tgt}/{src}-{tgt}.zip"
PAIRS = tuple(
    [f"{x}-en" for x in ("ar", "de", "fr", "ja", "ko", "zh")]
    + [f"en-{x}" for x in ("ar", "de", "fr", "ja", "ko", "zh")]
)
TEST_YEARS = (2010, 2011, 2012, 2013, 2014, 2015)


def file_pairs(pair: str, split: str, src: str, tgt: str) -> list[tuple[str, str]]:
    """(source file, target file) names of ``split`` in the release of ``pair``."""
    if split == "train":
        return [(f"train.tags.{pair}.{src}", f"train.tags.{pair}.{tgt}")]
    sets = ["dev2010"] if split == "valid" else [f"tst{year}" for year in TEST_YEARS]
    return [tuple(f"IWSLT17.TED.{s}.{pair}.{lang}.xml" for lang in (src, tgt)) for s in sets]


def _pattern(pair: str, split: str, src: str, tgt: str) -> str:
    langs = f"{{{src},{tgt}}}"
    if split == "train":
        return f"train.tags.{pair}.{langs}"
    sets = "dev2010" if split == "valid" else "tst{2010..2015}"
    return f"IWSLT17.TED.{sets}.{pair}.{langs}.xml"


def _check(cfg: DataConfig, split: str) -> tuple[str, str]:
    pair = f"{cfg.src}-{cfg.tgt}"
    if pair not in PAIRS:
        raise DataError(
            f"data.src/data.tgt: iwslt2017 has no pair {pair!r}; expected one of {', '.join(PAIRS)}"
        )
    if split == "test" and cfg.test_set != "test":
        raise DataError(
            f"data.test_set: {cfg.test_set!r} is not an iwslt2017 test set; expected 'test' "
            "(tst2010..tst2015 concatenated)"
        )
    return cfg.src, cfg.tgt


def _search_places(root: Path, cache: Path) -> list[tuple[Path, bool]]:
    """(folder, recursive) pairs, in search order."""
    return [(root / "iwslt2017", True), (root, False), (cache / "iwslt2017", True)]


def _candidates(folder: Path, deep: bool, pair: str) -> list[Path]:
    out = []
    for name in (pair, *(pair + s for s in wit3.ARCHIVE_SUFFIXES)):
        found = sorted(folder.rglob(name)) if deep else [folder / name]
        want_dir = name == pair
        out += [p for p in found if (p.is_dir() if want_dir else p.is_file())]
    return out


def find_release(
    root: Path, cache: Path, src: str, tgt: str, split: str
) -> tuple[wit3.Release | None, str, list[str]]:
    """(release, its pair, notes on incomplete candidates); the release is None if not found."""
    pairs = (f"{src}-{tgt}", f"{tgt}-{src}")
    seen: set[Path] = set()
    notes: list[str] = []
    for folder, deep in _search_places(root, cache):
        if not folder.is_dir():
            continue
        paths = [folder] + [p for pair in pairs for p in _candidates(folder, deep, pair)]
        for path in paths:
            if path in seen:
                continue
            seen.add(path)
            release = wit3.open_release(path)
            for pair in pairs:
                names = [n for fp in file_pairs(pair, split, src, tgt) for n in fp]
                if release.has(names):
                    return release, pair, notes
                held = sum(n in release.index() for n in names)
                if held:
                    notes.append(f"{path} holds only {held} of the {len(names)} {pair} files")
    return None, "", notes


def _from_hub(cfg: DataConfig, split: str, notes: list[str]) -> tuple[wit3.Release, str]:
    src, tgt = cfg.src, cfg.tgt
    root, cache = data_root(cfg), fetch.cache_root()
    filename = HUB_FILE.format(src=src, tgt=tgt)
    pair = f"{src}-{tgt}"
    try:
        path = fetch.hub_download(HUB_REPO, filename, cache / "iwslt2017")
    except Exception as err:  # any network or hub failure: report it with what was searched
        reverse = f"{tgt}-{src}"
        seen = "".join(f"\n  {note}" for note in notes)
        raise DataError(
            f"iwslt2017 {pair} {split}: no WIT3 release with the files of this split.\n"
            f"Expected {_pattern(pair, split, src, tgt)} (or the reverse release's "
            f"{_pattern(reverse, split, src, tgt)}) in a folder, e.g. {pair}/ or {reverse}/, or "
            f"in an archive {pair}.zip/.tgz or {reverse}.zip/.tgz.\n"
            f"Searched: {root / 'iwslt2017'} (all depths), {root} (top level), "
            f"{cache / 'iwslt2017'} (all depths).{seen}\n"
            f"Download of {filename} from the Hugging Face dataset {HUB_REPO} failed: {err}"
        ) from err
    release = wit3.open_release(path)
    names = [n for fp in file_pairs(pair, split, src, tgt) for n in fp]
    if not release.has(names):
        missing = [n for n in names if n not in release.index()]
        raise DataError(f"{path} (from {HUB_REPO}): missing {', '.join(missing)}")
    return release, pair


def load(cfg: DataConfig, split: str) -> ParallelText:
    src, tgt = _check(cfg, split)
    release, pair, notes = find_release(data_root(cfg), fetch.cache_root(), src, tgt, split)
    if release is None:
        release, pair = _from_hub(cfg, split, notes)
    files = file_pairs(pair, split, src, tgt)
    texts = release.read_text([name for fp in files for name in fp])
    src_out: list[str] = []
    tgt_out: list[str] = []
    for src_name, tgt_name in files:
        s, t = wit3.extract_pairs(
            wit3.rows(texts[src_name]),
            wit3.rows(texts[tgt_name]),
            release.where(src_name),
            release.where(tgt_name),
        )
        src_out += s
        tgt_out += t
    sets = {"train": "train", "valid": "dev2010", "test": "tst2010-2015"}
    return ParallelText(src_out, tgt_out, f"iwslt2017 {src}-{tgt} {sets.get(split, split)}")


def describe(cfg: DataConfig, split: str) -> str:
    src, tgt = _check(cfg, split)
    cache = fetch.cache_root()
    release, pair, _ = find_release(data_root(cfg), cache, src, tgt, split)
    head = f"iwslt2017 {split} {src}-{tgt}"
    if release is None:
        filename = HUB_FILE.format(src=src, tgt=tgt)
        return f"{head}: not found locally; would download {HUB_REPO}:{filename} into {cache}"
    return f"{head}: {release.path} [{_pattern(pair, split, src, tgt)}]"
