"""Merge the results a GPU run brought back (``results.tar.NN``, tools/gpu/run_cells.sh) into
this checkout without losing lines written here meanwhile.

    python tools/gpu/merge.py FOLDER_WITH_RESULTS_TAR [--dry-run]

A ledger (``*/results.jsonl``) gets the lines it lacks appended, in their order: a cell line
whose ``cell_id`` (a teacher line whose ``teacher_id``) is already in it is skipped. Any other
file (a shipped teacher, spec.yaml) is written only where this checkout has none; an existing
one that differs is reported and kept.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path


def _key(line: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return line
    kind = record.get("kind")
    ident = record.get("cell_id") if kind == "cell" else record.get("teacher_id")
    return f"{kind}:{ident}" if ident else line


def merge(parts: list[Path], root: Path, dry_run: bool = False) -> list[str]:
    """Merge the tar split into ``parts`` into ``root``; returns what was done, one line each."""
    data = b"".join(part.read_bytes() for part in sorted(parts))
    done = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            target = root / member.name
            content = tar.extractfile(member).read()
            if target.name == "results.jsonl" and target.exists():
                have = {_key(line) for line in target.read_text(encoding="utf-8").splitlines()}
                new = [ln for ln in content.decode().splitlines() if ln and _key(ln) not in have]
                done.append(f"{member.name}: {len(new)} new line(s) appended")
                if new and not dry_run:
                    with target.open("a", encoding="utf-8") as out:
                        out.write("".join(f"{line}\n" for line in new))
            elif not target.exists():
                done.append(f"{member.name}: written")
                if not dry_run:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
            elif target.read_bytes() != content:
                done.append(f"{member.name}: differs here; kept this checkout's")
    return done


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--dry-run"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    parts = sorted(Path(args[0]).glob("results.tar.*"))
    if not parts:
        print(f"no results.tar.* in {args[0]}", file=sys.stderr)
        return 1
    for line in merge(parts, Path.cwd(), dry_run="--dry-run" in argv):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
