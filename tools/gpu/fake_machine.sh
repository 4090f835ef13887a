#!/usr/bin/env bash
# Rehearse a GPU run on this machine: tools/gpu/run_cells.sh in a copy of the tree as the `run`
# tool sends it (tracked and untracked-not-ignored files, plus gpu-bundle/; no .git), with a
# Python that has this venv's torch, numpy, sacrebleu, typer, rich... but not pydantic, pyyaml,
# filelock, pandas, tabulate or pip (PIP=1 keeps pip), and no ../shared.
# usage: tools/gpu/fake_machine.sh BUDGET_S 'SPEC [sweep options]' ...   (env: VENV, PIP, JOBS)
# Prints the folder holding tree/, out/ (what would come back) and venv/.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
F=$(mktemp -d /tmp/attnless-fake-gpu.XXXX)
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
"$("$VENV/bin/python" -c 'import sys; print(sys._base_executable)')" -m venv --without-pip "$F/venv"
mkdir "$F/site" "$F/tree" "$F/out"
drop='pydantic*|annotated_types*|typing_inspection*|yaml|_yaml|PyYAML*|pyyaml*|filelock*|pandas*'
drop+='|tabulate*|attnless*|__editable__*|*.pth'
[[ ${PIP:-0} == 1 ]] || drop+='|pip|pip-*'
shopt -s extglob
for path in "$(purelib "$VENV/bin/python")"/*; do
  [[ ${path##*/} == @($drop) ]] || ln -s "$path" "$F/site/"
done
echo "$F/site" >"$(purelib "$F/venv/bin/python")/borrowed.pth"
{ git ls-files -co --exclude-standard; find gpu-bundle -type f; } \
  | tar -cf - --ignore-failed-read -T - | tar -xf - -C "$F/tree"
cd "$F/tree"
env -u PYTHONPATH -u ATTNLESS_DATA OUT="$F/out" PYTHON="$F/venv/bin/python" \
  tools/gpu/run_cells.sh "$@" && status=0 || status=$?
ls -l "$F/out"
echo "fake GPU machine: $F (exit $status)"
exit $status
