"""Multi30k task 1 (image-caption translation), raw cased text from the official release.

Files: ``multi30k/task1/raw/{train,val,test_2016_flickr,test_2017_mscoco}.{lang}.gz``, the layout
of ``data/task1/raw/`` in the GitHub repository multi30k/dataset. Each file is looked up under
the data root, then in the cache (``<cache>/multi30k/task1/raw/``, cache = ``$ATTNLESS_CACHE`` or
``~/.cache/attnless``), then downloaded into the cache from the repository's raw URL.
"""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig, data_root
from . import fetch
from .errors import DataError
from .textio import ParallelText, read_parallel

URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/{name}"
SUBDIR = Path("multi30k", "task1", "raw")
LANGUAGES = ("en", "de", "fr", "cs")
TEST_SETS = {
    "test": "test_2016_flickr",
    "test_2016_flickr": "test_2016_flickr",
    "test_2017_mscoco": "test_2017_mscoco",
}
SPLIT_LANGUAGES = {"test_2017_mscoco": ("en", "de", "fr")}  # the others have all of LANGUAGES
GZIP_MAGIC = b"\x1f\x8b"


def file_stem(cfg: DataConfig, split: str) -> str:
    """Release name of a split: train, val, test_2016_flickr or test_2017_mscoco."""
    if split == "train":
        return "train"
    if split == "valid":
        return "val"
    if cfg.test_set not in TEST_SETS:
        raise DataError(
            f"data.test_set: {cfg.test_set!r} is not a multi30k test set; expected one of "
            f"{', '.join(TEST_SETS)}"
        )
    return TEST_SETS[cfg.test_set]


def _check_languages(cfg: DataConfig, stem: str) -> None:
    allowed = SPLIT_LANGUAGES.get(stem, LANGUAGES)
    for field, lang in (("data.src", cfg.src), ("data.tgt", cfg.tgt)):
        if lang not in allowed:
            raise DataError(
                f"{field}: {lang!r} is not available in multi30k {stem}; expected one of "
                f"{', '.join(allowed)}"
            )


def _locations(cfg: DataConfig, name: str) -> tuple[Path, Path]:
    return data_root(cfg) / SUBDIR / name, fetch.cache_root() / SUBDIR / name


def _fetch(cfg: DataConfig, name: str) -> tuple[Path | None, str]:
    """Local path of one file (downloading it if needed), or None and why it failed."""
    local, cached = _locations(cfg, name)
    for path in (local, cached):
        if path.is_file():
            return path, ""
    url = URL.format(name=name)
    try:
        return fetch.download_url(url, cached, magic=GZIP_MAGIC), ""
    except (OSError, DataError) as err:
        return None, f"{url}: {err}"


def load(cfg: DataConfig, split: str) -> ParallelText:
    stem = file_stem(cfg, split)
    _check_languages(cfg, stem)
    names = [f"{stem}.{lang}.gz" for lang in (cfg.src, cfg.tgt)]
    paths, failures = [], []
    for name in names:
        path, why = _fetch(cfg, name)
        paths.append(path)
        if path is None:
            failures.append((name, why))
    if failures:
        local_dir, cache_dir = (p.parent for p in _locations(cfg, names[0]))
        lines = "\n".join(f"  {name} (download failed: {why})" for name, why in failures)
        raise DataError(
            f"multi30k {split} ({stem}.{{{cfg.src},{cfg.tgt}}}.gz): missing files:\n{lines}\n"
            f"Put them in {local_dir}/ (the data root) or {cache_dir}/ (the cache); they are in "
            f"data/task1/raw/ of https://github.com/multi30k/dataset"
        )
    return read_parallel(paths[0], paths[1], f"multi30k {cfg.src}-{cfg.tgt} {stem}")


def describe(cfg: DataConfig, split: str) -> str:
    stem = file_stem(cfg, split)
    _check_languages(cfg, stem)
    out = []
    for lang in (cfg.src, cfg.tgt):
        name = f"{stem}.{lang}.gz"
        local, cached = _locations(cfg, name)
        found = next((p for p in (local, cached) if p.is_file()), None)
        out.append(str(found) if found else f"{cached} (to download from {URL.format(name=name)})")
    label = split if stem == split else f"{split} ({stem})"
    return f"multi30k {label} {cfg.src}-{cfg.tgt}: {out[0]} | {out[1]}"
