"""``make bench`` end to end with tiny settings: every section is measured and written."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import bench
from tests.helpers import REPO


@pytest.mark.slow
def test_bench_writes_every_section(tmp_path: Path, data_dir: Path) -> None:
    threads = torch.get_num_threads()
    try:
        result = bench.run(bench.QUICK, [f"data.data_dir={data_dir}"])
    finally:
        torch.set_num_threads(threads)
    text = bench.markdown(result)
    for heading in (
        "## Summary",
        "## 1. Teacher training throughput",
        "## 2. Decoding speed",
        "## 3. Student training efficiency",
        "## 4. Distillation epoch: one shared teacher pass",
        "## 5. Distillation: length-truncated networks",
    ):
        assert heading in text
    machine = result["machine"]
    assert machine["torch"] == torch.__version__ and machine["cpu_cores"] >= 1
    assert f"{machine['torch_threads']} torch thread" in text
    sections = result["sections"]
    assert sections["train"]["ratio"] > 0
    rows = sections["decode"]["rows"]
    assert {r["mode"] for r in rows} == {"greedy, cached", "beam 4, cached"}
    assert all(r["sentences_per_s"] > 0 for r in rows)
    assert set(sections["decode"]["nocache"]["speedup"]) == {r["model"] for r in rows}
    for size in sections["students"]["sizes"]:
        assert size["ratio"] > 0
        assert abs(sum(size["breakdown"].values()) - 1) < 1e-6
    distill = sections["distill"]
    assert distill["shared_s"] > 0 and distill["per_layer_s"] > 0
    truncation = sections["truncation"]
    assert truncation["truncated_s"] > 0 and truncation["padded_s"] > 0
    assert truncation["mean_longest"] <= truncation["n"]
    json.dumps(result, default=str)  # the JSON beside the markdown


def test_a_recorded_run_is_rendered_with_another_machines_beside(tmp_path: Path) -> None:
    """`--render` writes bench.md from a recorded result without measuring, and tables the
    summary of every other recorded run in the folder (an H200's) beside its own."""
    gpu = json.loads((REPO / "results" / "bench-gpu.json").read_text(encoding="utf-8"))
    cpu = copy.deepcopy(gpu)
    cpu["machine"] = {k: v for k, v in gpu["machine"].items() if k not in ("gpu", "cuda")}
    cpu["machine"] |= {"cpu": "Some CPU", "cpu_cores": 2, "device": "cpu"}
    cpu["sections"]["train"]["ratio"] = 1.29
    (tmp_path / "bench.json").write_text(json.dumps(cpu), encoding="utf-8")
    (tmp_path / "bench-gpu.json").write_text(json.dumps(gpu), encoding="utf-8")
    (tmp_path / "bench-old.json").write_text(json.dumps({"machine": {}}), encoding="utf-8")
    out = tmp_path / "bench.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--render", str(tmp_path / "bench.json")]
        + ["--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    assert "device | cpu |" in text and "## Beside other machines" in text
    section = text.split("## Beside other machines")[1].split("## 1.")[0]
    header = next(line for line in section.splitlines() if line.startswith("| figure"))
    assert "Not readable as a result of this version: bench-old.json." in section
    assert "this run (Some CPU, 2 cores)" in header and "NVIDIA H200 ([bench-gpu.json]" in header
    row = next(line for line in section.splitlines() if line.startswith("| teacher training"))
    assert [c.strip() for c in row.split("|")[2:4]] == ["1.29x", "0.69x"]
    assert json.loads((tmp_path / "bench.json").read_text(encoding="utf-8")) == cpu
