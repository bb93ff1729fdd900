"""The quality-vs-FLOPs frontier: interpolation, the fewer-steps baseline, and the sweep end to end on tiny models."""
import json
import shutil
from collections import Counter

import pytest
from safetensors.torch import save_file

from conftest import run_cli
from flexi_core import bench, sampling
from flexi_core.shapes import frontier
from flexi_core.errors import FlexiDiTError
from flexi_core.shapes.judge import Judge
from flexi_core.loading import load_model
from flexi_core.schedule import fewer_steps_for

STATIC_FIELDS = {"variant", "method", "steps", "budget", "schedule", "flops", "flops_ratio", "flops_vs_static",
                 "seconds", "accuracy", "attributes", "fd", "psnr", "ssim", "same_reading"}
FLEXIBLE_FIELDS = STATIC_FIELDS | {"fewer_steps", "fewer_flops", "fewer_flops_ratio", "fewer_accuracy", "fewer_fd",
                                   "frontier_accuracy", "frontier_fd", "frontier_gain", "frontier_gain_fd"}


@pytest.fixture(scope="module")
def frontier_assets(tiny_assets, tmp_path_factory):
    """tiny_assets plus a random-weight judge and an (untrained, but present) LoRA flexify file for `shapes`."""
    import torch
    root = tmp_path_factory.mktemp("frontier-assets")
    for part in ("vae", "shapes"):
        shutil.copytree(tiny_assets / part, root / part)
    torch.manual_seed(0)
    save_file({k: v.half().contiguous() for k, v in Judge().state_dict().items()}, root / "judge.safetensors")
    model = load_model("shapes", "lora", assets=root, fresh=True)
    model.flexible.save_flexify(root / "shapes" / "flexify-lora.safetensors")
    return root


def test_frontier_gain_is_the_interpolated_difference():
    """Static points at 10 and 30 GFLOPs (80% and 90%): a FlexiDiT row at 25 sits 3/4 of the way, frontier 87.5%."""
    static = [{"method": "static", "flops": f, "accuracy": a, "fd": d} for f, a, d in
              ((30.0, 0.90, 10.0), (10.0, 0.80, 30.0), (50.0, 0.95, 5.0))]
    rows = [{"method": "real data", "flops": None}, *static,
            {"method": "FlexiDiT", "flops": 25.0, "accuracy": 0.93, "fd": 12.0},
            {"method": "FlexiDiT", "flops": 10.0, "accuracy": 0.70, "fd": 40.0},
            {"method": "FlexiDiT", "flops": 5.0, "accuracy": 0.70, "fd": 40.0}]
    frontier.add_frontier_gains(rows)
    inside, at_point, below = rows[4:]
    assert inside["frontier_accuracy"] == pytest.approx(0.875) and inside["frontier_gain"] == pytest.approx(0.055)
    assert inside["frontier_fd"] == pytest.approx(15.0) and inside["frontier_gain_fd"] == pytest.approx(-3.0)
    assert at_point["frontier_gain"] == pytest.approx(-0.10) and at_point["frontier_gain_fd"] == pytest.approx(10.0)
    assert below["frontier_gain"] is None and below["frontier_fd"] is None  # cheaper than any static run: no line
    assert "frontier_gain" not in static[0]


def test_fewer_steps_never_exceed_the_budget():
    flops_of = {"native": 10, "weak": 3}
    assert fewer_steps_for(60, flops_of, guidance=True) == 3  # 20 per static step with guidance
    assert fewer_steps_for(59.9, flops_of, guidance=True) == 2
    assert fewer_steps_for(59.9, flops_of, guidance=False) == 5
    assert fewer_steps_for(19, flops_of, guidance=True) == 0  # not even one step fits
    assert fewer_steps_for(1e9, flops_of, guidance=True, most=8) == 8
    for budget in range(0, 400, 7):
        steps = fewer_steps_for(budget, flops_of, guidance=True)
        assert 20 * steps <= budget < 20 * (steps + 1)
    with pytest.raises(FlexiDiTError, match="FLOPs budget"):
        fewer_steps_for(float("nan"), flops_of, guidance=True)


def test_frontier_sweep_in_process(frontier_assets, tmp_path, monkeypatch):
    """DPM-Solver++ reaches every `sample` call; each static N is sampled once; the fields and gains add up."""
    samplers, steps_sampled = [], []
    make_scheduler, sample = sampling.make_scheduler, sampling.sample

    def spy_scheduler(model, sampler="ddim"):
        samplers.append(sampler)
        return make_scheduler(model, sampler)

    def spy_sample(model, condition, schedule, *args, **kwargs):
        if schedule.native_cond == schedule.native_uncond == schedule.steps:
            steps_sampled.append(schedule.steps)
        return sample(model, condition, schedule, *args, **kwargs)

    monkeypatch.setattr(sampling, "make_scheduler", spy_scheduler)
    monkeypatch.setattr("flexi_core.shapes.evaluate.sample", spy_sample)
    result = frontier.frontier("shapes", n=4, steps=(4,), frontier_steps=(1, 2, 4), budgets=(0.55, 1.0),
                               sampler="dpm", chunk=2, assets=frontier_assets)
    assert set(samplers) == {"dpm"}
    assert set(Counter(steps_sampled).values()) == {2}  # each static N once: 4 seeds in chunks of 2
    rows = result["rows"]
    static = {r["steps"]: r for r in rows if r["method"] == "static"}
    flexible = [r for r in rows if r["method"] == "FlexiDiT"]
    assert {1, 2, 4} <= set(static) and [r["steps"] for r in flexible] == [4]  # the 100% budget is static
    assert result["reference"] == {"steps": 25, "sampler": "dpm", "flops": pytest.approx(25 * static[1]["flops"])}
    for r in static.values():
        assert STATIC_FIELDS <= set(r) and r["flops_ratio"] == pytest.approx(r["steps"] / 25)
    for r in flexible:
        assert FLEXIBLE_FIELDS <= set(r)
        assert r["fewer_steps"] in static and r["fewer_flops"] <= r["flops"] < r["fewer_flops"] + static[1]["flops"]
        assert r["flops_vs_static"] == pytest.approx(r["flops"] / static[r["steps"]]["flops"]) and r["budget"] == 0.55
        line = sorted((s["flops"], s["accuracy"]) for s in static.values())
        (x0, y0), (x1, y1) = next((a, b) for a, b in zip(line, line[1:]) if a[0] <= r["flops"] <= b[0])
        assert r["frontier_gain"] == pytest.approx(r["accuracy"] - (y0 + (y1 - y0) * (r["flops"] - x0) / (x1 - x0)))
        assert 0 <= r["same_reading"] <= 1 and r["psnr"] > 0
    table = frontier.markdown_table(result)
    assert table.startswith("**shapes, DPM-Solver++ — 4 samples") and "| frontier gain |" in table.splitlines()[2]
    saved = tmp_path / "frontier.json"  # what `bench --quality-json` reads: the frontier's own table and plot
    saved.write_text(json.dumps(result, default=float))
    entry, = bench.quality([saved], models=[], quick=True, out=tmp_path, samples=None)["models"]
    assert entry["plot"] == "quality-frontier-shapes-dpm.png" and entry["rows"] == json.loads(saved.read_text())["rows"]
    assert (tmp_path / entry["plot"]).stat().st_size > 10_000


@pytest.mark.slow
def test_frontier_cli_quick(frontier_assets, tmp_path):
    report, png = tmp_path / "f.json", tmp_path / "f.png"
    r = run_cli(["evaluate", "--model", "shapes", "--frontier", "--quick", "--samples", "4", "--variants", "lora",
                 "--sampler", "ddpm", "--weak-guidance", "off", "--threads", "1", "--json", str(report),
                 "--plot", str(png)], frontier_assets)
    assert r.returncode == 0, r.stderr
    data = json.loads(report.read_text())
    assert data["weak_guidance"] is False and "--weak-guidance off" in frontier.command(data)
    assert all(r["schedule"].endswith(", weak unguided") for r in data["rows"] if r["method"] == "FlexiDiT")
    assert data["kind"] == "frontier" and data["sampler"] == "ddpm" and data["steps"] == [4, 6]
    assert [r["steps"] for r in data["rows"] if r["method"] == "static"][:5] == [1, 2, 3, 4, 6]
    assert all(FLEXIBLE_FIELDS <= set(r) for r in data["rows"] if r["method"] == "FlexiDiT")
    assert png.stat().st_size > 10_000 and "frontier gain" in r.stdout


def test_budget_table_has_its_baselines(frontier_assets):
    """`evaluate`'s budget table on a flexified model: static, FlexiDiT, and per budget the reverse schedule and the
    static model with fewer steps at no more FLOPs, each scored against the static run of the same seeds."""
    from flexi_core.shapes.evaluate import evaluate
    result = evaluate("shapes", n=2, steps=4, budgets=(1.0, 0.55), variants=("lora",), chunk=2,
                      assets=frontier_assets)
    methods = [r["method"] for r in result["rows"]]
    assert methods[:3] == ["real data", "static", "FlexiDiT"] and "reverse (weak last)" in methods
    fewer = [r for r in result["rows"] if r["method"].startswith("static, ")]
    assert fewer and all(r["flops_ratio"] <= 0.55 + 1e-9 and r["psnr"] is not None for r in fewer), fewer


@pytest.mark.parametrize("args,message", [(["--sweep-steps", "4,0"], "from 1 to 1000"),
                                          (["--frontier", "--steps", "8"], "--sweep-steps"),
                                          (["--plot", "f.png"], "add --frontier")])
def test_frontier_flags_fail_in_one_line(args, message, capsys):
    from flexi_core.cli import main
    try:
        code = main(["evaluate", "--model", "shapes", *args])
    except SystemExit as e:  # argparse's own check of a flag's value
        code = e.code
    assert code == 2 and message in capsys.readouterr().err


def test_a_model_not_yet_flexified_is_scored_statically(tiny_assets, tmp_path):
    """A freshly trained transformer (no flexify file) gets its static rows and its static frontier, and is told
    that FlexiDiT's rows need `flexify`; nothing is scored through untrained weak layers."""
    result = frontier.frontier("shapes", n=2, steps=(2,), frontier_steps=(1, 2), budgets=(0.55,), chunk=2,
                               assets=tiny_assets)
    assert result["variants"] == [] and "--variants" not in frontier.command(result)
    assert frontier.command(result).endswith("--sweep-steps 2 --frontier-steps 1,2 --budgets 0.55")  # not the defaults
    assert [r["steps"] for r in result["rows"] if r["method"] == "static"] == [1, 2]
    assert {r["method"] for r in result["rows"]} == {"real data", "static"}
    frontier.plot(result, tmp_path / "static-only.png")
    assert (tmp_path / "static-only.png").stat().st_size > 10_000
    report = tmp_path / "e.json"
    r = run_cli(["evaluate", "--model", "shapes", "--quick", "--samples", "2", "--threads", "1", "--json", str(report)],
                tiny_assets)
    assert r.returncode == 0, r.stderr
    data = json.loads(report.read_text())
    assert data["variants"] == [] and [row["method"] for row in data["rows"]] == ["real data", "static"]
    assert "no flexify weights" in r.stderr and "flexify --model shapes" in r.stderr
