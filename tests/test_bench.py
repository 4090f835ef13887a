"""``make bench`` end to end with tiny settings: every section is measured and written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import bench


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
