"""Line-aligned text: strict UTF-8 reading of plain or gzip files, and parallel file pairs.

Lines keep their content exactly; only the line terminator ("\\n" or "\\r\\n") is removed. A lone
"\\r" inside a line is data, not a line break, and a UTF-8 byte-order mark is kept as data.
"""

from __future__ import annotations

import gzip
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError


@dataclass(frozen=True)
class ParallelText:
    """Aligned source and target segments of one corpus split."""

    src: list[str]
    tgt: list[str]
    name: str

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise DataError(
                f"{self.name}: {len(self.src)} source segments but {len(self.tgt)} target "
                "segments; expected the same number on both sides"
            )

    def __len__(self) -> int:
        return len(self.src)

    def head(self, n: int) -> ParallelText:
        """The first ``n`` pairs (all of them if there are fewer)."""
        return ParallelText(self.src[:n], self.tgt[:n], self.name)


def read_bytes(path: str | Path) -> bytes:
    """All bytes of a file, gunzipped if its name ends in ``.gz``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file; expected a text file")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        kind = "gzip " if path.suffix == ".gz" else ""
        raise DataError(f"{path}: cannot read {kind}file ({err})") from None


def decode_utf8(data: bytes, where: str, compressed: bool = False) -> str:
    """Decode strict UTF-8; an error names ``where``, the line number and the byte offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        bad = data[err.start : err.end].hex(" ")
        of = " of the uncompressed data" if compressed else ""
        raise DataError(
            f"{where}: line {line}: invalid UTF-8 at byte offset {err.start}{of} "
            f"(byte {bad}: {err.reason}); expected UTF-8 text"
        ) from None


def split_lines(text: str) -> list[str]:
    """Split on "\\n", dropping one trailing "\\r" per line and the empty string after a final
    newline. Nothing else is stripped."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (plain or ``.gz``) without their terminators."""
    path = Path(path)
    data = read_bytes(path)
    if not data:
        raise DataError(f"{path}: is empty (0 bytes); expected one segment per line")
    return split_lines(decode_utf8(data, str(path), compressed=path.suffix == ".gz"))


def read_input_lines(path: str | Path | None) -> list[str]:
    """Lines of a UTF-8 text file (plain or ``.gz``), or of standard input when ``path`` is
    None, split as corpus files are (:func:`split_lines`); an empty input has no lines. Invalid
    UTF-8 is an error naming the file (or standard input) and the line."""
    if path is None:
        return split_lines(decode_utf8(sys.stdin.buffer.read(), "standard input"))
    path = Path(path)
    return split_lines(decode_utf8(read_bytes(path), str(path), compressed=path.suffix == ".gz"))


def read_parallel(src_path: str | Path, tgt_path: str | Path, name: str) -> ParallelText:
    """Read two line-aligned files; both must exist, be non-empty and have equal line counts."""
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    missing = [str(p) for p in (src_path, tgt_path) if not p.exists()]
    if missing:
        raise DataError(f"{name}: file not found: {', '.join(missing)}")
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{name}: line counts differ: {src_path} has {len(src)} lines but {tgt_path} has "
            f"{len(tgt)}; expected line-aligned files with the same number of lines"
        )
    return ParallelText(src, tgt, name)
