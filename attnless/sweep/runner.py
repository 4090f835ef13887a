"""Running a sweep: teachers, then their students, then one evaluation per cell, under locks."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from attnless.config import Config
from attnless.replacement import Family, LayerSet, Replacement
from attnless.results import read_results
from attnless.rundir import RunDir, StudentFolder
from attnless.runs import write_text
from attnless.sweep import shipped
from attnless.sweep.cells import Cell, expand, filter_cells, shard_cells
from attnless.sweep.costs import CostModel, Plan, family_key, fmt_seconds, make_plan
from attnless.sweep.locks import Lock
from attnless.sweep.results import append_result, cell_record, teacher_record, timestamp
from attnless.sweep.spec import Spec
from attnless.sweep.students import (
    distill_calls,
    family_done,
    family_folder,
    family_lock,
    lock_beside,
)

# The package's logger, as before the package was split into modules (log lines name it).
log = logging.getLogger(__package__)


class Sweep:
    """Runs the cells of one shard of a spec; see :mod:`attnless.sweep`."""

    def __init__(
        self,
        spec: Spec,
        out: str | Path | None = None,
        runs: str | Path | None = None,
        shard: tuple[int, int] = (0, 1),
        progress: bool = True,
        poll: float | None = None,
        say: Callable[[str], None] | None = None,
        teachers: str | Path | None = None,
        only: list[str] | None = None,
        together: bool = False,
        students_only: bool = False,
    ) -> None:
        self.spec = spec
        self.out = Path(out) if out is not None else Path("sweeps") / spec.name
        self.runs = Path(runs) if runs is not None else self.out.parent / "runs"
        # shipped teachers (see attnless.sweep.shipped): beside the tables of one corpus
        self.teachers = Path(teachers) if teachers is not None else self.out.parent / "teachers"
        self.shard = shard
        self.progress = progress
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.cells = expand(spec, self.runs)
        # seconds between looks at work other processes hold (runtime.sweep_poll_s)
        self.poll = poll if poll is not None else spec.base_config().runtime.sweep_poll_s
        self.mine = filter_cells(shard_cells(self.cells, shard), only or [])
        self.results_path = self.out / "results.jsonl"
        # distil the students of all of a teacher's pending cells first, in shared calls
        self.together = together or students_only
        # distil the students of the selected cells (scored or not) and score none: to prepare
        # them, e.g. in processes that share one GPU, for a later sweep that scores the cells
        self.students_only = students_only

    # ---------------------------------------------------------------- state

    def records(self) -> list[dict[str, Any]]:
        return read_results(self.results_path, warn=log.warning)

    def done_ids(self, records: list[dict] | None = None) -> set[str]:
        records = self.records() if records is None else records
        return {r.get("cell_id") for r in records if r.get("kind") == "cell"}

    def finished(self, records: list[dict] | None = None) -> tuple[set[str], dict]:
        """The ids of the cells this ledger scored, and :meth:`copies`; with ``students_only``
        neither (every selected cell's students are wanted, scored or not)."""
        if self.students_only:
            return set(), {}
        done = self.done_ids(records)
        return done, self.copies(done)

    def teacher_records(self, records: list[dict] | None = None) -> dict[str, dict]:
        records = self.records() if records is None else records
        return {r.get("teacher_id"): r for r in records if r.get("kind") == "teacher"}

    def teacher_steps(self, records: list[dict] | None = None) -> dict[str, int | None]:
        return {tid: r.get("step") for tid, r in self.teacher_records(records).items()}

    def shipped_teacher_steps(self) -> dict[str, int | None]:
        """Teacher id -> step of the shipped teachers this shard's cells would install rather
        than train (:meth:`teacher`: same id, with scores)."""
        directions = sorted({cell.direction for cell in self.mine})
        metas = {d: shipped.read(self.teachers / d) for d in directions}
        return {
            cell.teacher: (metas[cell.direction].get("summary") or {}).get("step")
            for cell in self.mine
            if shipped.installable(metas[cell.direction], cell.teacher)
        }

    def cost_model(self) -> CostModel:
        return CostModel.for_machine(self.cells[0].config.runtime.device if self.cells else "auto")

    def plan(
        self, model: CostModel | None = None, copies: dict[str, tuple[dict, Path]] | None = None
    ) -> Plan:
        """The work left: the cells of this shard neither in the ledger nor to be copied from a
        sibling ledger (``copies``, default :meth:`copies`)."""
        records = self.records()
        model = model or self.cost_model()
        done = self.done_ids(records)
        copies = self.copies(done) if copies is None else copies
        if self.students_only:  # scored or not, every selected cell's students
            done, copies = set(), {}
        steps = self.shipped_teacher_steps() | self.teacher_steps(records)
        return make_plan(self.mine, done | set(copies), steps, model, self.together)

    # ---------------------------------------------------------------- sibling ledgers

    def sibling_ledgers(self) -> list[Path]:
        """The ledgers beside this one (``<out>/../*/results.jsonl``: the other tables of the
        corpus), in name order."""
        own = self.results_path.resolve()
        paths = sorted(self.out.parent.glob("*/results.jsonl"))
        return [path for path in paths if path.resolve() != own]

    def copies(self, done: set[str] | None = None) -> dict[str, tuple[dict, Path]]:
        """Cell id -> (its line, the sibling ledger holding it) for this shard's cells that are
        not in this ledger (``done``) but finished in a sibling ledger: the same id is the same
        grid values and settings, so they are copied instead of computed. The first ledger (in
        name order) that computed the cell gives its line; a copied line only when none did."""
        done = self.done_ids() if done is None else done
        wanted = {c.id for c in self.mine if c.id not in done}
        found: dict[str, tuple[dict, Path]] = {}
        if not wanted:
            return found
        for path in self.sibling_ledgers():
            for record in read_results(path, warn=log.debug):
                cid = record.get("cell_id")
                if record.get("kind") != "cell" or cid not in wanted:
                    continue
                old = found.get(cid)
                if old is None or ("copied_from" in old[0] and "copied_from" not in record):
                    found[cid] = (record, path)
        return found

    def _copy(self, cell: Cell, record: dict[str, Any], ledger: Path) -> None:
        """Append ``record``, a sibling ledger's line of ``cell``, to this ledger."""

        def line() -> dict[str, Any]:
            copied = {**record, "sweep": self.spec.name, "index": cell.index}
            return {**copied, "copied_from": _relative(ledger)}

        if self._append_once(cell, line) is None:
            return
        self.counts["copied"] += 1
        self.say(f"cell {cell.id} ({cell.title()}): copied from {_relative(ledger)}")

    # ---------------------------------------------------------------- dry run

    def dry_run(self, model: CostModel | None = None) -> str:
        model = model or self.cost_model()
        done, copies = self.finished()
        plan = self.plan(model, copies)
        grouped = any(c.test_group != 1 for c in self.mine)
        i, n = self.shard
        lines = [
            f"sweep {self.spec.name}: {len(self.cells)} cells, preset {self.spec.preset} "
            f"({self.spec.preset_path})"
            + (f", shard {i}/{n}: {len(self.mine)} cells" if n > 1 else ""),
            f"results: {self.results_path}   teachers: {self.runs}",
        ]
        if self.spec.overrides:
            lines.append("overrides: " + " ".join(f"--set {o}" for o in self.spec.overrides))
        header = f"{'#':>4}  {'cell':12}  {'status':7}  {'corpus':9}  {'dir':5}  "
        header += f"{'replace':32}  {'size':4}  {'layers':8}  "
        header += f"{'group':>5}  " * grouped + f"{'est.':>8}"
        lines += ["", header]
        for cell in self.mine:
            status = "done" if cell.id in done else "copied" if cell.id in copies else "pending"
            est = fmt_seconds(plan.cell_seconds[cell.id]) if status == "pending" else "-"
            group = f"{cell.test_group:>5}  " * grouped  # test pairs joined k at a time
            lines.append(
                f"{cell.index:>4}  {cell.id:12}  {status:7}  {cell.corpus:9}  "
                f"{cell.direction:5}  {cell.described:32}  {cell.size:4}  "
                f"{str(cell.layers):8}  {group}{est:>8}"
            )
        to_train = [d for d, s in plan.teachers.items() if s > 0]
        to_distill = list(plan.students)  # pending families (parameter-free ones cost ~0 s)
        students = sum(plan.students.values())
        copied = f", {len(copies)} to copy from sibling ledgers" if copies else ""
        lines += [
            "",
            f"done {len(self.mine) - len(plan.pending) - len(copies)}/{len(self.mine)}{copied}; "
            "to do: "
            f"{len(to_train)} teacher(s) to train, {len(to_distill)} student families "
            f"({students} students) to distil, {len(plan.pending)} cells to evaluate",
            f"estimate: teachers {fmt_seconds(sum(plan.teachers.values()))}, distillation "
            f"{fmt_seconds(sum(plan.families.values()))} (+ teacher passes "
            f"{fmt_seconds(sum(plan.passes.values()))}), evaluation "
            f"{fmt_seconds(sum(plan.evals.values()))}; total {fmt_seconds(plan.total())}",
            f"(an estimate from FLOP counts, not a measurement; cost model: {model.describe()})",
        ]
        if len({(c.corpus, c.direction) for c in self.mine}) > 1:
            lines.append("by direction: " + _by_direction(self.mine, done | set(copies), plan))
        return "\n".join(lines)

    # ---------------------------------------------------------------- run

    def run(self) -> dict[str, Any]:
        """Run every pending cell of this shard; returns counts."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_text(self.out / "spec.yaml", yaml.safe_dump(self.spec.to_dict(), sort_keys=False))
        previous = _install_sigterm()
        try:
            return self._run()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def _run(self) -> dict[str, Any]:
        records = self.records()
        done, copies = self.finished(records)
        pending = [c for c in self.mine if c.id not in done and c.id not in copies]
        skipped = len(self.mine) - len(pending) - len(copies)
        i, n = self.shard
        where = f" (shard {i}/{n})" if n > 1 else ""
        if self.students_only:
            self.say(
                f"sweep {self.spec.name}{where}: the students of {len(pending)} cells, none "
                "scored; students in " + str(self.runs)
            )
        else:
            self.say(
                f"sweep {self.spec.name}{where}: {len(self.mine)} cells, {skipped} finished "
                "(skipped), "
                + (f"{len(copies)} to copy from sibling ledgers, " if copies else "")
                + f"{len(pending)} to run; results in {self.results_path}"
            )
        self.counts = {"cells": len(self.mine), "skipped": skipped}
        self.counts.update(evaluated=0, copied=0, busy=0)
        if self.students_only:
            self.counts["prepared"] = 0
        for cell in self.mine:  # no teacher, no students: their line is in a sibling ledger
            if cell.id in copies:
                self._copy(cell, *copies[cell.id])
        if not pending:
            return self.counts
        steps = self.teacher_steps(records)
        plan = make_plan(self.mine, done | set(copies), steps, self.cost_model(), self.together)
        self._clock = {"start": time.monotonic(), "estimated_done": 0.0, "plan": plan}
        self._finished = len(self.mine) - len(pending)
        groups: dict[Path, list[Cell]] = {}
        for cell in pending:
            groups.setdefault(cell.teacher_dir, []).append(cell)
        _in_turn(
            list(groups.values()),
            lambda group: self._teacher_lock(group[0]),
            self._run_group,
            self.poll,
        )
        return self.counts

    def _teacher_lock(self, cell: Cell) -> Lock:
        return lock_beside(cell.teacher_dir, f"teacher {cell.teacher_dir}")

    def _run_group(self, group: list[Cell], lock: Lock) -> None:
        cell = group[0]
        teacher = self._ensure_teacher(cell)
        lock.release()
        if self.together:
            # the students of every cell first, in calls that share each batch's teacher pass
            # (bit-identical students; a decoder-side call spends most of its time in teacher
            # passes), one call per grid "set" (other distill settings, other students)
            by_settings: dict[tuple[str, ...], list[Cell]] = {}
            for cell in group:
                by_settings.setdefault(cell.overrides, []).append(cell)
            for cells in by_settings.values():
                self._ensure_students(cells, teacher)
        if self.students_only:
            self.counts["prepared"] += len(group)
            return
        # then one cell at a time, scored and appended to the ledger as soon as its students
        # exist (a long run that is stopped keeps every finished cell)
        for cell in group:
            students = self._ensure_students([cell], teacher)
            self._evaluate(cell, teacher, students)

    # ---------------------------------------------------------------- teacher

    def _ensure_teacher(self, cell: Cell) -> dict[str, Any]:
        from attnless.evaluate import teacher_scores
        from attnless.train import train

        known = self.teacher_records().get(cell.teacher)
        cell = _ungrouped(cell)  # whichever cell of the teacher comes first
        cfg = cell.config
        which = cfg.distill.teacher_checkpoint
        # a ledger from another machine records the teacher, but this machine's run folder may
        # not hold it yet: install (or train) it then, keeping the ledger's record
        if known is not None and RunDir.of(cfg).checkpoint(which).exists():
            return known
        folder = self.teachers / cell.direction
        meta = shipped.read(folder)
        start = time.perf_counter()
        if shipped.installable(meta, cell.teacher):
            self.say(f"teacher {cell.corpus} {cell.direction}: shipped, {folder}")
            shipped.install(folder, cfg.run_dir(), which)
            summary, trained = meta["summary"], meta["train_wall_seconds"]
            scores = meta["scores"]
        else:
            if meta is not None:
                self.say(
                    f"teacher {cell.corpus} {cell.direction}: {folder} holds a teacher with "
                    "other settings (or no scores); training one"
                )
            self.say(f"teacher {cell.corpus} {cell.direction}: {cfg.run_dir()}")
            summary = train(cfg, progress=self.progress)
            trained = time.perf_counter() - start
            summary = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
            meta = {"teacher_id": cell.teacher, "summary": summary, "train_wall_seconds": trained}
            shipped.ship(cfg.run_dir(), which, folder, meta)
            scores = {s: teacher_scores(cfg, s, which, self.progress) for s in cfg.eval.splits}
            shipped.write_scores(folder, scores)
            self.say(f"teacher {cell.corpus} {cell.direction}: shipped to {folder}")
        if known is not None:
            return known
        wall_seconds = time.perf_counter() - start
        record = teacher_record(self.spec, cell, summary, scores, wall_seconds, trained)
        record["shipped"] = _relative(folder)
        if cell.teacher not in self.teacher_records():  # we hold the teacher lock
            append_result(self.results_path, record)
        self.say(
            f"teacher {cell.corpus} {cell.direction}: BLEU {record['bleu']:.2f} on "
            f"{record['test_set']} (trained {fmt_seconds(record['train_seconds'])})"
        )
        self._advance_estimate(self._clock["plan"].teachers.get(cfg.run_dir(), 0.0))
        return record

    # ---------------------------------------------------------------- students

    def _ensure_students(self, group: list[Cell], teacher: dict[str, Any]) -> dict:
        """Distil every student the cells of ``group`` need; returns the family markers."""
        cfg = group[0].config
        run = RunDir.of(cfg)
        which = cfg.distill.teacher_checkpoint
        sha = run.teacher_fingerprint(which)
        if sha is None:
            raise FileNotFoundError(
                f"{run.checkpoint(which)}: the teacher checkpoint "
                f"distill.teacher_checkpoint={which} names does not exist"
            )
        needed: dict[Family, set[int]] = {}
        for cell in group:
            for fam, layers in cell.families().items():
                needed.setdefault(fam, set()).update(layers)
        folders = {fam: family_folder(cfg, fam, sha) for fam in needed}
        remaining = {fam: sorted(layers) for fam, layers in needed.items()}
        announced: set[Family] = set()
        while remaining:
            taken: dict[Family, Lock] = {}
            try:
                for fam in list(remaining):
                    if family_done(folders[fam], remaining[fam]):
                        del remaining[fam]
                        continue
                    lock = family_lock(folders[fam], fam)
                    if not lock.try_acquire():
                        if fam not in announced:
                            self.say(
                                f"students {'/'.join(fam)}: being distilled by another process"
                            )
                            announced.add(fam)
                        continue
                    taken[fam] = lock
                    if family_done(folders[fam], remaining[fam]):
                        lock.release()
                        del taken[fam], remaining[fam]
                if taken:
                    chosen = {fam: remaining[fam] for fam in taken}
                    self._distill(cfg, chosen, folders, teacher.get("step"))
                    for fam in taken:
                        del remaining[fam]
            finally:
                for lock in taken.values():
                    lock.release()
            if remaining and not taken:
                time.sleep(self.poll)
        return {fam: folders[fam].read_marker() for fam in needed}

    def _distill(
        self,
        cfg: Config,
        families: dict[Family, list[int]],
        folders: dict[Family, StudentFolder],
        teacher_step: int | None,
    ) -> None:
        from attnless.distill import distill

        for layers, fams in distill_calls(cfg, families, self.say):
            sizes: dict[tuple[str, str], list[str]] = {}
            for site, method, size in fams:
                sizes.setdefault((site, method), []).append(size)
            replacements = [Replacement(site, m, tuple(s)) for (site, m), s in sizes.items()]
            chosen = LayerSet(tuple(layers))
            count = len(fams) * len(layers)
            self.say(
                f"distilling {count} students ({', '.join(map(str, replacements))}; layers "
                f"{chosen}) in {cfg.run_dir()}"
            )
            call = uuid.uuid4().hex[:12]
            start = time.perf_counter()
            summary = distill(cfg, self.progress, replacements=replacements, layers=chosen)
            seconds = time.perf_counter() - start
            for fam in fams:
                folder = folders[fam]
                old = folder.read_marker()
                folder.write_marker(
                    {
                        "family": list(fam),
                        "folder": str(folder.path),
                        "layers": sorted(set(layers) | set(old.get("layers", []))),
                        "teacher_step": teacher_step,
                        "call": call,
                        "seconds": seconds,
                        "students_in_call": count,
                        "precision": summary.get("precision"),
                        "finished_at": timestamp(),
                    },
                )
                cost = self._clock["plan"].families.get(family_key(cfg, fam), 0.0)
                self._advance_estimate(cost)
            plan = self._clock["plan"]
            for fam in fams:  # the passes of this call (and of calls it replaced)
                call = plan.call_of.get(family_key(cfg, fam))
                self._advance_estimate(plan.passes.pop(call, 0.0))

    # ---------------------------------------------------------------- cells

    def _cell_lock(self, cell: Cell) -> Lock:
        return Lock(self.out / "locks" / f"{cell.id}.lock", f"cell {cell.id}")

    def _append_once(self, cell: Cell, make: Callable[[], dict[str, Any]]) -> dict | None:
        """Under the cell's lock, append the line ``make()`` computes unless the cell is done
        (None then, or when another process holds the cell: counted as busy)."""
        lock = self._cell_lock(cell)
        if not lock.try_acquire():
            self.say(f"cell {cell.id} ({cell.title()}): being run by another process; skipped")
            self.counts["busy"] += 1
            return None
        try:
            if cell.id in self.done_ids():
                return None
            record = make()
            append_result(self.results_path, record)
            return record
        finally:
            lock.release()

    def _evaluate(self, cell: Cell, teacher: dict[str, Any], students: dict) -> None:
        from attnless.evaluate import evaluate

        def line() -> dict[str, Any]:
            start = time.perf_counter()
            results = evaluate(
                cell.config,
                progress=self.progress,
                replacements=cell.replacements,
                layers=cell.layers,
            )
            seconds = time.perf_counter() - start
            return cell_record(self.spec, self.shard, cell, teacher, students, results, seconds)

        record = self._append_once(cell, line)
        if record is None:
            return
        self.counts["evaluated"] += 1
        self._finished += 1
        self._advance_estimate(self._clock["plan"].evals.get(cell.id, 0.0))
        elapsed = time.monotonic() - self._clock["start"]
        eta = self._eta(elapsed)
        rel = record.get("relative_bleu")
        self.say(
            f"[{self._finished}/{len(self.mine)}] {cell.title()}: BLEU {record['bleu']:.2f}"
            + (f" ({rel:.1f}% of the teacher's {record['teacher_bleu']:.2f})" if rel else "")
            + f"  elapsed {fmt_seconds(elapsed)}, eta {eta}"
        )

    # ---------------------------------------------------------------- ETA

    def _advance_estimate(self, seconds: float) -> None:
        self._clock["estimated_done"] += seconds

    def _eta(self, elapsed: float) -> str:
        plan: Plan = self._clock["plan"]
        remaining = max(plan.total() - self._clock["estimated_done"], 0.0)
        done = self._clock["estimated_done"]
        factor = elapsed / done if done > 0 else 1.0
        return fmt_seconds(remaining * factor)


def _in_turn(items: list, lock_for: Callable, work: Callable, poll: float) -> None:
    """Do ``work(item, lock)`` for every item once its lock is ours; busy items wait their turn
    (other items go first), and each holder we wait for is named once."""
    pending = list(items)
    announced: set[str] = set()
    while pending:
        took = False
        for item in list(pending):
            lock = lock_for(item)
            if not lock.try_acquire():
                continue
            took = True
            pending.remove(item)
            try:
                work(item, lock)
            finally:
                lock.release()
        if pending and not took:
            for item in pending:
                lock = lock_for(item)
                if lock.what not in announced:
                    announced.add(lock.what)
                    log.warning(
                        "waiting for %s: locked by another process (%s)", lock.what, lock.path
                    )
            time.sleep(poll)


def _install_sigterm():
    """Turn SIGTERM (SLURM's time limit, ``kill``) into SystemExit, so a stopped sweep unwinds
    like Ctrl-C (its locks the kernel frees however it ends)."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _ungrouped(cell: Cell) -> Cell:
    """``cell`` with the test split as it is (``data.test_group`` 1): a teacher is trained,
    shipped and scored with it, also when the first cell of its group tests grouped pairs (its
    own scores on those are :func:`attnless.evaluate.teacher_scores`' for the cell)."""
    if cell.config.data.test_group == 1:
        return cell
    cfg = cell.config.model_copy(deep=True)
    cfg.data.test_group = 1
    return dataclasses.replace(cell, config=cfg, test_group=1)


def _by_direction(cells: list[Cell], finished: set[str], plan: Plan) -> str:
    """Per corpus and direction: cells finished (or copied) of all, and the estimate of the rest,
    e.g. ``multi30k de-en 15/16 (1h48m left)``."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.corpus, cell.direction), []).append(cell)
    parts = []
    for (corpus, direction), group in groups.items():
        left = [c for c in group if c.id not in finished]
        est = sum(plan.cell_seconds[c.id] for c in left)
        rest = f" ({fmt_seconds(est)} left)" if left else ""
        parts.append(f"{corpus} {direction} {len(group) - len(left)}/{len(group)}{rest}")
    return "; ".join(parts)


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when inside it (ledgers travel in git)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
