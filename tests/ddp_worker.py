"""One process of a multi-process test job: ``torchrun ... tests/ddp_worker.py PLAN.json``.

The plan names CLI commands to run one after the other in this process (``attnless`` argument
lists) and a folder to watch: every file this process opens for writing under it is listed in
``<record>/rank<RANK>.txt`` (a Python audit hook sees the temporary files of atomic writes and
every append), so a test can check which rank wrote what.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    watch = str(Path(plan["watch"]).resolve())
    rank = os.environ.get("RANK", "0")
    written: set[str] = set()

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not isinstance(args[0], (str, os.PathLike)):
            return
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS)
        full = os.path.abspath(path)
        if writing and full.startswith(watch):
            written.add(os.path.relpath(full, watch))

    sys.addaudithook(hook)
    from attnless.cli import app

    try:
        for command in plan["commands"]:
            app(command, prog_name="attnless", standalone_mode=False)
    finally:
        record = Path(plan["record"]) / f"rank{rank}.txt"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text("".join(f"{p}\n" for p in sorted(written)))


if __name__ == "__main__":
    main()
