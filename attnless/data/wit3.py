"""IWSLT WIT3 release files, parsed exactly as the Hugging Face ``iwslt2017`` loader does.

Reference: ``_generate_examples`` in ``iwslt2017.py`` (huggingface/datasets,
``datasets/iwslt2017/iwslt2017.py``; the same function in the hub script of ``IWSLT/iwslt2017``).
It opens the source and target file of a pair in text mode (UTF-8, universal newlines: "\\n",
"\\r\\n" and a lone "\\r" all end a row), walks the rows together with ``zip`` and for each pair:

1. strips both rows with ``str.strip()``;
2. if the *source* row starts with ``"<"``: if it starts with ``"<seg"``, each row becomes
   ``row.split(">")[1].split("<")[0].strip()``; any other tag row skips the pair;
3. otherwise keeps both stripped rows (a blank row gives an empty pair).

Only the source row decides; train.tags and XML files go through the same rule. This module
differs only where the reference would fail or silently lose data: files with different row
counts (``zip`` truncates) and a ``<seg`` row without ``>`` (``IndexError``) raise DataError.

A release is an extracted folder, a ``.zip`` or a ``.tgz``/``.tar.gz`` archive; members are
found by file name at any depth and read without extracting.
"""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError
from .textio import decode_utf8, read_bytes

ARCHIVE_SUFFIXES = (".zip", ".tgz", ".tar.gz")


def rows(text: str) -> list[str]:
    """Rows as Python's text-mode file iteration yields them (universal newlines), unstripped."""
    out = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if out[-1] == "":
        out.pop()
    return out


def _segment(row: str, where: str, number: int) -> str:
    parts = row.split(">")
    if len(parts) < 2:
        raise DataError(f"{where}: row {number}: {row[:80]!r} has no '>'; expected <seg ...>text")
    return parts[1].split("<")[0].strip()


def extract_pairs(
    src_rows: list[str], tgt_rows: list[str], src_where: str, tgt_where: str
) -> tuple[list[str], list[str]]:
    """Apply the reference rule to aligned rows; the source row decides what is kept."""
    if len(src_rows) != len(tgt_rows):
        raise DataError(
            f"WIT3 row counts differ: {src_where} has {len(src_rows)} rows but {tgt_where} has "
            f"{len(tgt_rows)}; expected row-aligned files"
        )
    src_out: list[str] = []
    tgt_out: list[str] = []
    for number, (src_row, tgt_row) in enumerate(zip(src_rows, tgt_rows, strict=True), 1):
        src_row, tgt_row = src_row.strip(), tgt_row.strip()
        if src_row.startswith("<"):
            if not src_row.startswith("<seg"):
                continue
            src_row = _segment(src_row, src_where, number)
            tgt_row = _segment(tgt_row, tgt_where, number)
        src_out.append(src_row)
        tgt_out.append(tgt_row)
    return src_out, tgt_out


def extract_text(file_rows: list[str], where: str) -> list[str]:
    """The reference rule for one file on its own (the file decides for itself)."""
    return extract_pairs(file_rows, file_rows, where, where)[0]


def _parse_file(path: str | Path) -> list[str]:
    path = Path(path)
    return extract_text(rows(decode_utf8(read_bytes(path), str(path))), str(path))


def parse_train_tags(path: str | Path) -> list[str]:
    """Text lines of a ``train.tags.{a}-{b}.{lang}`` file: rows starting with "<" are dropped."""
    return _parse_file(path)


def parse_xml_segments(path: str | Path) -> list[str]:
    """Segments of an ``IWSLT17.TED.{set}.{a}-{b}.{lang}.xml`` file (text of the <seg> rows)."""
    return _parse_file(path)


# --------------------------------------------------------------------------- releases


class Release:
    """A WIT3 release: a folder or an archive whose files are looked up by name."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._index: dict[str, str] | None = None

    def _members(self) -> Iterable[str]:
        raise NotImplementedError

    def _read(self, members: list[str]) -> dict[str, bytes]:
        raise NotImplementedError

    def index(self) -> dict[str, str]:
        """File name -> member path (the shortest one where a name occurs more than once)."""
        if self._index is None:
            found: dict[str, str] = {}
            for member in sorted(self._members(), key=lambda m: (m.count("/"), m)):
                found.setdefault(member.rsplit("/", 1)[-1], member)
            self._index = found
        return self._index

    def has(self, names: Iterable[str]) -> bool:
        return all(name in self.index() for name in names)

    def where(self, name: str) -> str:
        member = self.index().get(name, name)
        return str(self.path / member) if self.path.is_dir() else f"{self.path}!{member}"

    def read_text(self, names: list[str]) -> dict[str, str]:
        """Decoded text of the named files (strict UTF-8)."""
        missing = [n for n in names if n not in self.index()]
        if missing:
            raise DataError(f"{self.path}: missing {', '.join(missing)}")
        try:
            data = self._read([self.index()[n] for n in names])
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as err:
            raise DataError(f"{self.path}: cannot read {', '.join(names)} ({err})") from None
        return {n: decode_utf8(data[self.index()[n]], self.where(n)) for n in names}


class FolderRelease(Release):
    def _members(self) -> Iterable[str]:
        return [p.name for p in self.path.iterdir() if p.is_file()]

    def _read(self, members: list[str]) -> dict[str, bytes]:
        return {m: read_bytes(self.path / m) for m in members}


class ZipRelease(Release):
    def _members(self) -> Iterable[str]:
        with self._open() as archive:
            return [i.filename for i in archive.infolist() if not i.is_dir()]

    def _read(self, members: list[str]) -> dict[str, bytes]:
        with self._open() as archive:
            return {m: archive.read(m) for m in members}

    def _open(self) -> zipfile.ZipFile:
        try:
            return zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as err:
            raise DataError(f"{self.path}: cannot open zip archive ({err})") from None


class TarRelease(Release):
    def _members(self) -> Iterable[str]:
        with self._open() as archive:
            return [m.name for m in archive.getmembers() if m.isfile()]

    def _read(self, members: list[str]) -> dict[str, bytes]:
        wanted, out = set(members), {}
        with self._open() as archive:
            for member in archive:  # one pass over the compressed stream
                if member.name in wanted:
                    handle = archive.extractfile(member)
                    if handle is not None:
                        out[member.name] = handle.read()
        return out

    def _open(self) -> tarfile.TarFile:
        try:
            return tarfile.open(self.path, "r:*")
        except (OSError, tarfile.TarError) as err:
            raise DataError(f"{self.path}: cannot open tar archive ({err})") from None


def open_release(path: str | Path) -> Release:
    """A folder, ``.zip`` or ``.tgz``/``.tar.gz`` release."""
    path = Path(path)
    if path.is_dir():
        return FolderRelease(path)
    if path.name.endswith(".zip"):
        return ZipRelease(path)
    if path.name.endswith((".tgz", ".tar.gz")):
        return TarRelease(path)
    raise DataError(f"{path}: not a folder or a {'/'.join(ARCHIVE_SUFFIXES)} archive")
