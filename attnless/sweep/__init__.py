"""``attnless sweep``: expand a grid spec into cells, run them resumably, record one line each.

A **spec** (``experiments/encoder.yaml`` ...) names a preset (the teacher and distillation
settings) and a grid::

    name: encoder
    preset: paper                 # experiments/<preset>.yaml, or a path; --preset overrides
    grid:
      corpus: [multi30k]          # optional; default: the preset's data.corpus
      direction: [de-en, en-de]   # optional; default: the preset's data.src-data.tgt
      replace:                    # required: each entry is one variant, a list of sites
        - [encoder.self=alr]      #   replaced together (one site=method per site)
        - [encoder.self=alr, decoder.self=alr]
      size: [XS, S, M, L]         # required
      layers: [all]               # optional; all | 0-5 | 0,2,4 (default: all)
      test_group: [1]             # optional; k > 1: test pairs joined k at a time (default: 1)
    set: []                       # --set overrides applied to every cell

``grid`` may also be a list of such mappings: the cells are the union of their cells, in order
(a cell of an earlier grid once).

A **cell** is one combination of the grid values. Its id is a hash of its grid values and of
every setting that is not at its default in the resolved config (so a different preset or
``--set`` gives different cells, while folders, progress and logging settings do not count).

Layout. ``--out`` is the sweep folder (default ``sweeps/<name>``); teachers live in ``--runs``
(default: the folder ``runs`` beside the sweep folder, i.e. ``sweeps/runs``), one folder per
teacher configuration, ``<runs>/<corpus>.<src>-<tgt>/<preset>-<hash of the teacher settings>``,
holding the teacher, its students and their evaluations. All sweeps of one sweeps folder share
teachers and students (the encoder, decoder and layer sweeps need the same four teachers, and
the layer sweep's students are the encoder sweep's ALR students); students of other
distillation settings, or of a retrained teacher, live in other folders and are never reused
(:func:`attnless.students.student_settings`)::

    sweeps/
      runs/multi30k.de-en/paper-1a2b3c4d/   teacher run folder (+ students/, eval/)
      runs/multi30k.de-en/paper-1a2b3c4d.lock
      encoder/spec.yaml                     the spec as run (preset, grid, overrides)
      encoder/results.jsonl                 one line per teacher and per finished cell
      encoder/locks/<cell id>.lock          cells being evaluated
      encoder/report/                       ``attnless report sweeps/encoder``

Running. Cells are grouped by teacher. Per teacher: train it (a no-op when trained) and score
it, under the teacher's lock; distil the students of all its pending cells together, one
``distill`` call per distinct layer set (usually one), so teacher passes are shared; then
evaluate each cell and append its line to ``results.jsonl``. A cell that a sibling ledger
(``<out>/../*/results.jsonl``, e.g. another table of the corpus) holds is copied from it, with
``copied_from``, instead of computed. Re-running skips cells that have a line; teacher training
and distillation resume from their checkpoints, so a killed sweep loses at most the cell being
evaluated (and the unfinished epoch of a teacher or student).

Sharding. ``--shard i/n`` takes cells i, i+n, i+2n, ... (0-based). Cells are ordered with the
teacher (corpus, direction) varying fastest, so when n divides the number of teachers each
shard gets whole teachers. Shards sharing a teacher coordinate through lock files (see
:mod:`~attnless.sweep.locks`; the kernel frees the locks of a killed shard): one trains the
teacher while the others wait; each student family (site, method, size) is distilled by one
shard at a time, and a shard that finds a family locked distils its other families first.

Modules: :mod:`~attnless.sweep.spec` (the spec schema and its validation),
:mod:`~attnless.sweep.cells` (grid -> cells, ids, shards), :mod:`~attnless.sweep.runner` (the
:class:`Sweep` that runs them), :mod:`~attnless.sweep.students` (student families on disk),
:mod:`~attnless.sweep.results` (the lines of ``results.jsonl``), :mod:`~attnless.sweep.costs`
(time estimates for ``--dry-run`` and the ETA) and :mod:`~attnless.sweep.locks`. Shared with the
report, outside the package: :mod:`attnless.results` (reading ``results.jsonl``) and
:mod:`attnless.params` (parameter and FLOP counts).
"""

from attnless.config import resolve_preset
from attnless.params import replaced_params, student_params
from attnless.results import SITE_SHORT, read_results, variant_label
from attnless.sweep.cells import Cell, expand, parse_shard, shard_cells
from attnless.sweep.runner import Sweep
from attnless.sweep.spec import Spec, SpecError, load_spec, spec_from_dict

__all__ = [
    "SITE_SHORT",
    "Cell",
    "Spec",
    "SpecError",
    "Sweep",
    "expand",
    "load_spec",
    "parse_shard",
    "read_results",
    "replaced_params",
    "resolve_preset",
    "shard_cells",
    "spec_from_dict",
    "student_params",
    "variant_label",
]
