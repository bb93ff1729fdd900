"""`bench --quick` on tiny random-weight models: the JSON's fields, the FLOPs anchors, plots, and the verdict text."""
import json
import os
import subprocess
import sys

import pytest

from flexi_core.shapes.evaluate import quality_verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(variant, method, budget, flops, acc, fd, schedule=None):
    return {"variant": variant, "method": method, "budget": budget, "flops_ratio": flops, "accuracy": acc, "fd": fd,
            "schedule": schedule, "psnr": None, "ssim": None}


# the structure `python -m flexi_core evaluate --json` writes; numbers made up so that the verdict is known
QUALITY = {"model": "shapes", "samples": 256, "steps": 50, "guidance": 4.0, "rows": [
    _row("-", "real data", None, None, 1.0, 1.0),
    _row("-", "static", 1.0, 1.0, 0.90, 5.0, "50/50"),
    _row("lora", "FlexiDiT", 0.55, 0.54, 0.89, 5.1, "20/20"),
    _row("-", "reverse (weak last)", 0.55, 0.54, 0.60, 9.0, "20/20"),
    _row("-", "static, 28 steps", 0.55, 0.56, 0.70, 8.0, "28/28"),
    _row("lora", "FlexiDiT", 0.40, 0.39, 0.50, 12.0, "0/0"),
    _row("-", "reverse (weak last)", 0.40, 0.39, 0.50, 12.0, "0/0"),
    _row("-", "static, 20 steps", 0.40, 0.40, 0.65, 9.0, "20/20"),
    _row("-", "weak model alone", None, 0.39, 0.50, 12.0, "0/0"),
]}


def test_quality_verdict_reads_the_numbers():
    v = quality_verdict(QUALITY)
    by = {(c["flops"], c["against"]): c["verdict"] for c in v["comparisons"]}
    assert by[(0.54, "reverse (weak last)")] == "wins"
    assert by[(0.54, "static, 28 steps")] == "wins"
    assert by[(0.39, "static, 20 steps")] == "loses"
    assert (0.39, "reverse (weak last)") not in by  # 0/0 in both orders is one and the same run
    assert by[(0.54, "weak model alone")] == "wins"  # the cheapest schedule that still has native steps
    assert "wins 3 of 4" in v["summary"][0] and "loses 1" in v["summary"][0]
    assert "static, 20 steps at 39%" in v["summary"][0] and "down to 54% FLOPs" in v["summary"][0]


def test_quality_keeps_one_entry_per_weak_mode(tmp_path):
    """Two evaluations of one video model (temporal and spatial weak patch) stay two tables with their own plots."""
    from flexi_core.bench import quality
    from flexi_core.shapes.evaluate import markdown_table
    files = []
    for mode, patch in (("temporal", [2, 2, 2]), ("spatial", [1, 4, 4])):
        files.append(tmp_path / f"eval-{mode}.json")
        files[-1].write_text(json.dumps({**QUALITY, "model": "shapes-video", "weak_mode": mode, "weak_patch": patch}))
    entries = quality(files, models=[], quick=True, out=tmp_path, samples=None)["models"]
    assert [e["weak_mode"] for e in entries] == ["temporal", "spatial"]
    assert [e["source"] for e in entries] == [str(f) for f in files]
    assert {e["plot"] for e in entries} == {"quality-shapes-video-temporal.png", "quality-shapes-video-spatial.png"}
    assert all((tmp_path / e["plot"]).stat().st_size > 0 for e in entries)
    assert markdown_table(entries[1]).startswith("**shapes-video**, weak patch `spatial` (1,4,4) — 256 samples")
    assert markdown_table(QUALITY).startswith("**shapes** — 256 samples")  # one weak patch: not named
    no_baselines = {**QUALITY, "rows": [r for r in QUALITY["rows"] if r["method"] in ("static", "FlexiDiT")]}
    summary = quality_verdict(no_baselines)["summary"]
    assert summary == ["lora: no baseline rows to compare with (evaluated with --no-baselines); it matches the static "
                       "model (within noise) down to 54% FLOPs"]


def test_bench_quick(tmp_path, tiny_assets):
    quality = tmp_path / "quality-shapes.json"
    quality.write_text(json.dumps(QUALITY))
    out = tmp_path / "bench"
    env = {**os.environ, "FLEXIDIT_ASSETS": str(tiny_assets)}
    r = subprocess.run([sys.executable, "-m", "flexi_core", "bench", "--quick", "--models", "shapes,dit-xl-2-256",
                        "--out", str(out), "--quality-json", str(quality)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    assert {"meta", "flops", "wallclock", "quality", "memory"} <= set(report)
    assert report["meta"]["quick"] and report["meta"]["left_out"] and report["meta"]["machine"]["cpu"]

    # 1. the anchors: DiT paper's GMACs within 1%, the counter agrees with the formula, the paper's targets
    anchors = {row["patch"]: row for row in report["flops"]["dit_xl2"]}
    assert set(anchors) == {2, 4, 8}
    for row in anchors.values():
        assert abs(row["rel_error"]) < 0.01
        assert row["counted_gflops"] == pytest.approx(row["gflops"], rel=0.01)
    assert anchors[2]["gflops"] == pytest.approx(237.3, rel=0.01)
    assert anchors[4]["gflops"] == pytest.approx(58.2, rel=0.01)
    for row in report["flops"]["flexible_counted"]:
        assert abs(row["rel_error"]) < 0.01
    schedules = report["flops"]["schedules"]
    for target in (0.64, 0.46, 0.29):
        for guidance in (False, True):
            row = next(s for s in schedules if s["target"] == target and s["guidance"] == guidance
                       and s["kind"] == "x/x")
            assert abs(row["ratio"] - target) < 0.005 and 0 < row["t_weak"] < 250
    assert {s["schedule"] for s in report["flops"]["paper_schedules"]} == {"70/70", "90/50"}
    assert all(abs(s["ratio"] - 0.46) < 0.01 for s in report["flops"]["paper_schedules"])

    # 2. wall-clock: the embedded model swept over the budgets at batch 1 and 8, DiT-XL/2 per step
    rows = report["wallclock"]["rows"]
    shapes = [row for row in rows if row["model"] == "shapes"]
    assert {row["batch"] for row in shapes} == {1, 8}
    for row in shapes:
        assert {"native_step_s", "weak_step_s", "wrapper_overhead", "step_efficiency", "budgets"} <= set(row)
        budgets = {b["budget"]: b for b in row["budgets"]}
        assert set(budgets) == {1.0, 0.75, 0.55, 0.40, 0.25}
        assert budgets[1.0]["flops_ratio"] == 1.0
        for b in budgets.values():
            if "unreachable" not in b:
                assert b["flops_ratio"] <= b["budget"] + 1e-9 and b["seconds"] > 0
                assert b["efficiency"] == pytest.approx(b["speedup"] / b["ideal_speedup"])
    dit = next(row for row in rows if row["model"] == "dit-xl-2-256")
    assert not dit["full_depth"] and dit["step_ideal_speedup"] > 3.5 and "wrapper_overhead" in dit
    assert (out / "wallclock.png").stat().st_size > 0

    # 3. quality from the evaluate JSON: plot and verdict
    entry = report["quality"]["models"][0]
    assert entry["model"] == "shapes" and (out / entry["plot"]).stat().st_size > 0
    assert entry["verdict"]["summary"]

    # 4. memory: fresh processes, merged copies cost a model's worth of parameters
    mem = {row["config"]: row for row in report["memory"]["rows"]}
    assert set(mem) == {"static", "lora", "lora-merged"}  # quick mode leaves the shared variant out
    assert all(row["peak_rss_bytes"] > 0 and row["param_bytes"] > 0 for row in mem.values())
    assert mem["lora-merged"]["param_bytes"] > 1.9 * mem["static"]["param_bytes"]
    assert mem["static"]["param_bytes"] < mem["lora"]["param_bytes"] < mem["lora-merged"]["param_bytes"]

    text = (out / "bench.md").read_text()
    for heading in ("## 1. FLOPs anchors", "## 2. Wall-clock", "## 3. Quality", "## 4. Memory"):
        assert heading in text
