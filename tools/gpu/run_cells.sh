#!/usr/bin/env bash
# The command a GPU session's `run` tool executes in the repository root there (docs/gpu.md):
#   tools/gpu/run_cells.sh BUDGET_S 'SPEC [sweep options]' ['SPEC [sweep options]' ...]
# An item 'bench [options]' runs `python -m benchmarks.bench` there instead (at most BENCH_S
# seconds, default 300, of the budget), writing results/bench-gpu.md and .json. An item that
# starts with '& ' runs in the background, alongside the next items up to and including the next
# plain one; the item after that starts when they have all ended:
#   '& A' 'B' 'C'   runs A and B at once on the one GPU, then C.
# Installs what the sweep imports and the machine lacks from gpu-bundle/wheels (no network),
# reads the corpora from gpu-bundle/data, then runs the sweeps one after the other, each as JOBS
# processes (--shard i/JOBS) sharing the GPU, until BUDGET_S seconds after the start; then
# SIGTERM stops them (a sweep keeps every cell it finished). A sweep's --out defaults to
# results/tables/multi30k/<spec file name>, --runs to $RUNS: a temporary folder unless set (set
# RUNS=runs, git-ignored, to keep run folders on a warm machine, so that the next call resumes a
# student family a budget cut off at its last finished epoch). Leaves in $OUT:
#   log.txt, versions.txt
#   results.tar.NN   the files under results/ that the sweeps wrote (ledger lines, shipped
#                    teachers), a tar in 15 MiB parts: `cat results.tar.* | tar -xf -` here
#   runs.tgz         the small files of the run folders (configs, metrics, logs)
# env: OUT (required), PYTHON (python3), JOBS (1), BUNDLE (gpu-bundle), RUNS, ATTNLESS_COMMIT
set -uo pipefail
budget=${1:?usage: $0 BUDGET_S 'SPEC [sweep options]' ...}
shift
: "${OUT:?set OUT, the folder whose files come back}"
mkdir -p "$OUT"
start=$SECONDS
B=$PWD/${BUNDLE:-gpu-bundle}
PY=${PYTHON:-python3}
JOBS=${JOBS:-1}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RUNS=$(realpath -m "${RUNS:-$WORK/runs}")
[[ -f $B/commit ]] && export ATTNLESS_COMMIT=${ATTNLESS_COMMIT:-$(cat "$B/commit")}
export ATTNLESS_DATA=$B/data ATTNLESS_CACHE=$WORK/cache PYTHONPATH=$PWD PYTHONUNBUFFERED=1

imports() { "$PY" -c 'import pydantic, yaml, filelock, sacrebleu, attnless.cli, attnless.sweep'; }

setup() {  # install the bundle's packages that do not import here into $WORK/site
  imports 2>/dev/null && return
  local pip="$PY -m pip" missing all="pydantic pydantic-core annotated-types typing-inspection"
  all+=" typing-extensions pyyaml filelock tabulate"
  $pip --version >/dev/null 2>&1 || pip="$PY $(ls "$B"/wheels/pip-*.whl | tail -n1)/pip"
  pip+=" install -q --no-index --no-deps --no-compile --find-links $B/wheels --target $WORK/site"
  missing=$("$PY" -c 'import importlib.util as u, sys
mods = {"pyyaml": "yaml", "pydantic-core": "pydantic_core", "annotated-types": "annotated_types",
        "typing-inspection": "typing_inspection", "typing-extensions": "typing_extensions"}
print(" ".join(d for d in sys.argv[1:] if u.find_spec(mods.get(d, d)) is None))' $all)
  export PYTHONPATH=$WORK/site:$PYTHONPATH
  echo "installing from $B/wheels: ${missing:-nothing missing}"
  [[ -n $missing ]] && $pip $missing && imports 2>/dev/null && return
  echo "installing all of: $all (a version here does not do)"
  $pip --upgrade $all && imports
}

versions() {
  nvidia-smi || echo "no nvidia-smi"
  "$PY" -c 'import sys, torch, pydantic, sacrebleu
from attnless.runs import git_revision
cuda = torch.cuda.is_available()
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name(0) if cuda else "no GPU visible to torch")
print("pydantic", pydantic.VERSION, "| sacrebleu", sacrebleu.__version__, "| attnless",
      git_revision(), "| cpus", __import__("os").cpu_count())'
}

sweep() {  # one sweep: JOBS shards, stopped at the budget's end
  local left=$((budget - (SECONDS - start))) extra=() i
  ((left > 30)) || { echo "budget spent; not started: $*"; return; }
  [[ " $* " == *" --out"* ]] || extra+=(--out "results/tables/multi30k/$(basename "$1" .yaml)")
  [[ " $* " == *" --runs"* ]] || extra+=(--runs "$RUNS")
  echo "== $((SECONDS - start)) s: attnless sweep $* ${extra[*]} ($JOBS process(es), ${left} s left)"
  for ((i = 0; i < JOBS; i++)); do
    timeout --signal=TERM --kill-after=30 "$left" \
      "$PY" -m attnless sweep "$@" "${extra[@]}" --shard "$i/$JOBS" 2>&1 | sed "s/^/[$item.$i] /" &
  done
  wait
}

bench() {  # the benchmarks of results/bench.md on this machine, into results/bench-gpu.md
  local left=$((budget - (SECONDS - start)))
  ((left > 60)) || { echo "budget spent; not started: bench $*"; return; }
  ((left > ${BENCH_S:-300})) && left=${BENCH_S:-300}
  echo "== $((SECONDS - start)) s: python -m benchmarks.bench $* (${left} s at most)"
  timeout --signal=TERM --kill-after=30 "$left" \
    "$PY" -m benchmarks.bench --out results/bench-gpu.md "$@" 2>&1 | tail -n 60
}

main() {
  setup || { echo "the sweep's packages do not import; see above"; return 3; }
  versions | tee "$OUT/versions.txt"
  touch "$WORK/start"
  item=0  # log lines start [item.shard]
  for args in "$@"; do
    item=$((item + 1))
    read -ra words <<<"$args"  # split on spaces, no globbing
    if [[ ${words[0]} == '&' ]]; then
      sweep "${words[@]:1}" &
      sleep 1
    elif [[ ${words[0]} == bench ]]; then
      bench "${words[@]:1}"
      wait
    else
      sweep "${words[@]}"  # its `wait` also waits for the items started with '&' before it
    fi
  done
  wait
  echo "== $((SECONDS - start)) s: collecting results"
  find results -type f -newer "$WORK/start" ! -name '*.lock' | sort | tee "$WORK/changed"
  tar -cf - -T "$WORK/changed" | split -b 15m -d - "$OUT/results.tar."
  [[ -d $RUNS ]] && find "$RUNS" -type f -size -1024k ! -name '*.lock' ! -name '*.pt' -printf '%P\n' \
    | tar -czf "$OUT/runs.tgz" -C "$RUNS" -T -
  echo "== $((SECONDS - start)) s: done"
}

main "$@" 2>&1 | tee "$OUT/log.txt"
