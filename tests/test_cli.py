"""The command line contract: flags, JSON fields, files, and one-line errors."""
import json
import os
import re

import pytest
from conftest import run_cli, run_cli_many
from flexi_core.registry import get_spec
from PIL import Image

FIELDS = {"model", "modality", "steps", "budget", "schedule", "flops_static", "flops_flexible", "flops_ratio",
          "seconds_static", "seconds_flexible", "files", "device", "agreement"}


@pytest.mark.parametrize("name,cond", [("shapes", ["--class-label", "red circle"]),
                                       ("shapes-video", ["--prompt", "a red circle moving left"])])
def test_generate_compare_json(tmp_path, tiny_assets, name, cond):
    report = tmp_path / "r.json"
    budget = "0.5" if name == "shapes" else "0.8"
    r = run_cli(["generate", "--model", name, *cond, "--budget", budget, "--steps", "6", "--seed", "3", "--compare",
             "--out-dir", str(tmp_path), "--json", str(report)], tiny_assets)
    assert r.returncode == 0, r.stderr
    data = json.loads(report.read_text())
    assert FIELDS <= set(data)
    assert data["sampler"] == get_spec(name).sampler  # no --sampler: the model's default, as the report says
    assert len(data["schedule"]) == 6 and data["flops_flexible"] <= float(budget) * data["flops_static"]
    assert data["flops_ratio"] == pytest.approx(data["flops_flexible"] / data["flops_static"])
    assert set(data["files"]) == {"static", "flexible", "fewer_steps"}
    assert 1 <= data["steps_fewer"] < 6 and data["flops_fewer_steps"] <= data["flops_flexible"]  # never more FLOPs
    assert data["flops_fewer_steps"] + data["flops_static"] / 6 > data["flops_flexible"]  # the most steps that fit
    assert set(data["judge"]) == set(data["files"]) and all(" on " in text for text in data["judge"].values())
    native, weak = ([1, 1, 1], [1, 2, 2]) if name == "shapes" else ([1, 2, 2], [2, 2, 2])
    assert data["schedule"][-1] == native and data["schedule"][0] == weak  # weak first, native last
    for path in data["files"].values():
        assert os.path.getsize(path) > 0
        if name == "shapes":
            assert Image.open(path).size == (32, 32)
        else:
            import imageio.v3 as iio
            assert iio.imread(path).shape == (8, 32, 32, 3)
    assert {"psnr", "ssim"} <= set(data["agreement"])
    verdict = re.fullmatch(r"saves (\d+)% of the time|took (\d+)% more time|about the same time", data["time_verdict"])
    change = data["seconds_flexible"] / data["seconds_static"] - 1
    assert verdict and (verdict[1] is None or change < -0.1) and (verdict[2] is None or change > 0.1)
    assert f"flexible {data['time_verdict']} (steps alternated)" in r.stdout


def test_generate_leads_with_native_steps(tmp_path, tiny_assets):
    """--lead N puts N native steps before the weak ones (both passes); shapes-video's spatial mode has a default."""
    def schedule(*extra):
        report = tmp_path / "r.json"
        r = run_cli(["generate", "--model", "shapes-video", "--prompt", "a red circle moving left", "--weak-mode",
                 "spatial", "--budget", "0.75", "--steps", "12", "--sampler", "ddim", "--out-dir", str(tmp_path),
                 "--json", str(report), *extra], tiny_assets)
        assert r.returncode == 0, r.stderr
        return json.loads(report.read_text())
    native, weak = [1, 2, 2], [1, 4, 4]
    led = schedule("--lead", "2")
    assert led["lead_steps"] == 2 and led["schedule"][:3] == [native, native, weak]
    assert led["schedule_uncond"][:3] == [native, native, weak] and led["schedule"][-2:] == [native, native]
    assert schedule("--lead", "0")["schedule"][0] == weak
    assert schedule()["lead_steps"] == 1  # the model's share, 3 of 25 steps, rounded for 12
    r = run_cli(["generate", "--model", "shapes-video", "--prompt", "a red circle", "--lead", "-1",
             "--out-dir", str(tmp_path)], tiny_assets)
    assert r.returncode == 2 and "lead must be" in r.stderr and "Traceback" not in r.stderr


def test_flops_command_needs_no_weights(tmp_path):
    r = run_cli(["flops", "--model", "dit-xl-2-256", "--patch-size", "4"], assets=tmp_path / "nothing")
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.strip().splitlines()[-1]) == pytest.approx(58.2, rel=0.01)


ONE_LINE_ERRORS = [
    (["generate", "--model", "nope", "--class-label", "1"], "unknown model"),
    (["generate", "--model", "shapes", "--class-label", "purple cube"], "unknown class"),
    (["generate", "--model", "shapes", "--class-label", "red circle", "--budget", "0"], "budget"),
    (["generate", "--model", "shapes-text", "--prompt", "   "], "prompt is empty"),
    (["generate", "--model", "shapes", "--class-label", "red circle", "--steps", "0"], "steps"),
    (["generate", "--model", "dit-xl-2-256", "--class-label", "207"], "not available offline"),
    (["evaluate", "--model", "shapes", "--budgets", "0.5,2"], "every budget"),
    (["evaluate", "--model", "shapes", "--paraphrase", "trained"], "class-conditioned"),
    (["train", "--model", "shapes", "--paraphrase", "0.5"], "no procedural captions"),
    (["flexify", "--model", "shapes", "--paraphrase", "0.5"], "no procedural captions"),
    (["flexify", "--model", "shapes", "--min-timestep", "1000"], "--min-timestep must lie in [0, 999]"),
    (["train", "--model", "shapes-text", "--paraphrase", "1.5"], "in [0, 1]"),
    (["generate", "--model", "shapes", "--class-label", "red circle", "--weak-guidance", "half"], "invalid choice"),
]


def test_errors_are_one_line(tiny_assets):
    """Each bad command exits 2 with its one-line message and no traceback (all cases in one process)."""
    argvs = [[*args, *(["--out-dir", "/tmp/flexi-cli-errors"] if args[0] == "generate" else [])]
             for args, _ in ONE_LINE_ERRORS]
    for (args, message), (code, stderr) in zip(ONE_LINE_ERRORS, run_cli_many(argvs, tiny_assets)):
        assert code == 2 and message in stderr and "Traceback" not in stderr, (args, code, stderr)


def test_missing_assets_say_how_to_get_them(tmp_path):
    r = run_cli(["generate", "--model", "shapes", "--class-label", "red circle"], assets=tmp_path / "missing")
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["train", "generate", "flops", "flexify", "evaluate", "bench", "card"])
def test_every_command_has_help(command):
    """`--help` prints every flag (argparse formats help strings with %, so a stray % breaks it)."""
    from flexi_core.cli import build_parser
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
