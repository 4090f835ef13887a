#!/usr/bin/env bash
# Prepare gpu-bundle/ (git-ignored): what a GPU run (tools/gpu/run_cells.sh, docs/gpu.md) needs
# that git does not carry.
#   data/multi30k/task1/raw/{train,val,test_2016_flickr,test_2017_mscoco}.<lang>.gz  the files
#       attnless/data/multi30k.py reads, for the languages of $DIRECTIONS (from $ATTNLESS_DATA)
#   wheels/   pydantic and its needs, pyyaml, filelock, tabulate (the sweep's imports, and
#       sacrebleu's, that a GPU image may lack; pandas is for `attnless report` alone, run back
#       here: not bundled), and pip (for a Python without it), for
#       CPython $PYVERSIONS on manylinux x86_64
#   commit    the commit of this checkout (git_revision), for the ledger lines written there
# usage: tools/gpu/bundle.sh [data|wheels|commit|all]   (env: BUNDLE DIRECTIONS PYVERSIONS PYTHON)
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-all}
BUNDLE=${BUNDLE:-gpu-bundle}
DIRECTIONS=${DIRECTIONS:-de-en en-de}
PYVERSIONS=${PYVERSIONS:-3.10 3.11 3.12 3.13 3.14}
PYTHON=${PYTHON:-$(command -v .venv/bin/python || command -v python3)}
DATA=${ATTNLESS_DATA:-../shared/data}
PACKAGES="pyyaml filelock tabulate pip"
RAW=multi30k/task1/raw

if [[ $what == data || $what == all ]]; then
  rm -rf "${BUNDLE:?}/data" && mkdir -p "$BUNDLE/data/$RAW"
  langs=$(for d in $DIRECTIONS; do echo "${d%-*}" "${d#*-}"; done | tr ' ' '\n' | sort -u)
  for lang in $langs; do
    for stem in train val test_2016_flickr; do cp "$DATA/$RAW/$stem.$lang.gz" "$BUNDLE/data/$RAW/"; done
    # the second test set has no cs side
    [[ $lang == cs ]] || cp "$DATA/$RAW/test_2017_mscoco.$lang.gz" "$BUNDLE/data/$RAW/"
  done
fi

if [[ $what == wheels || $what == all ]]; then
  # pydantic (and so pydantic-core) pinned to this environment's version; the others are the
  # newest for each Python
  pin=$("$PYTHON" -c 'import importlib.metadata as m; print("pydantic==" + m.version("pydantic"))')
  rm -rf "${BUNDLE:?}/wheels" && mkdir -p "$BUNDLE/wheels"
  for v in $PYVERSIONS; do
    # pip matches each manylinux tag exactly: name them all up to 2_28 (torch's glibc)
    "$PYTHON" -m pip download -q --only-binary=:all: --implementation cp --python-version "$v" \
      $(printf -- '--platform manylinux%s_x86_64 ' _2_28 _2_27 _2_24 2014 _2_17 2010 1) \
      -d "$BUNDLE/wheels" "$pin" $PACKAGES
  done
fi
# the commit the GPU run's ledger lines name (its copy of the tree has no .git): bundle, or
# `tools/gpu/bundle.sh commit`, after committing
mkdir -p "$BUNDLE"
PYTHONPATH=$PWD "$PYTHON" -c 'from attnless.runs import git_revision; print(git_revision())' \
  >"$BUNDLE/commit"
du -sh "$BUNDLE" && find "$BUNDLE" -type f | sort | sed 's/^/  /'
