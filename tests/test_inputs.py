"""What a user can get wrong, through the library and the CLI: the exact message each gets (issues 17 and 19).

Covers the one validation layer (inputs.settings), the budget floor and its messages, damaged or foreign flexify
files, OS errors, checked output files, and fair timing (alternating steps, an honest verdict).
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_transformer
from flexi_core.errors import FlexiDiTError, OutputError, message
from flexi_core.flexible import FlexibleTransformer
from flexi_core.generate import Comparison, generate, time_verdict
from flexi_core.inputs import settings
from flexi_core.loading import load_model
from flexi_core.media import save_media
from flexi_core.registry import ASSETS, SPECS, get_spec, transformer_class
from flexi_core.sampling import Sample, encode_condition, sample
from flexi_core.schedule import Schedule, budget_floor, percent_up, schedule_for_budget

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_MAX = 2 ** 63 - 1


@pytest.fixture(scope="module")
def shapes(tiny_assets):
    return load_model("shapes", "lora", assets=tiny_assets)  # unmerged: the adapters switch between steps


# --- one validation layer -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,text", [
    ("seed", True, f"seed must be a whole number from 0 to {SEED_MAX}, got True"),
    ("steps", True, "steps must be a whole number from 1 to 1000, got True"),
    ("steps", 2.0, "steps must be a whole number from 1 to 1000, got 2.0"),
    ("lead", False, "lead must be a whole number from 0 to 10, got False"),
    ("guidance", True, "guidance must be a number from 0 to 30, got True"),
    ("guidance", float("nan"), "guidance must be a number from 0 to 30, got nan"),
    ("weak_mode", "diagonal", "weak mode must be one of ['weak'], not 'diagonal'"),
    ("sampler", "euler", "sampler must be one of ddim, dpm, ddpm, not 'euler'"),
    ("weak_guidance", "off", "weak_guidance must be True, False or None (the model's rule), not 'off'"),
])
def test_settings_refuse_with_one_message(field, value, text):
    with pytest.raises(FlexiDiTError) as e:
        settings(get_spec("shapes"), **{field: value})
    assert str(e.value) == text


def test_settings_fill_in_the_models_defaults():
    run = settings(get_spec("shapes-video"), weak_mode="spatial", steps=25)
    assert (run.steps, run.guidance, run.weak_mode, run.lead, run.guided) == (25, 4.0, "spatial", 3, True)
    assert settings(get_spec("shapes"), guidance=1).guided is False
    shapes = get_spec("shapes")  # the weak steps' guidance: the model's rule, or on / off at every budget
    assert settings(shapes).unguided_below == shapes.unguided_below
    assert (settings(shapes, weak_guidance=True).unguided_below, settings(shapes, weak_guidance=False).unguided_below) \
        == (0.0, float("inf"))
    for spec in SPECS.values():  # the sampler too: where the frontier says FlexiDiT pays, for the embedded models
        assert settings(spec).sampler == spec.sampler and settings(spec, sampler="ddpm").sampler == "ddpm"


def test_generate_refuses_booleans_before_any_work(shapes):
    for kwargs, text in [(dict(seed=True), f"seed must be a whole number from 0 to {SEED_MAX}, got True"),
                         (dict(steps=True), "steps must be a whole number from 1 to 1000, got True"),
                         (dict(budget=True), "budget must be in (0, 1] (a fraction of the static FLOPs), got True")]:
        with pytest.raises(FlexiDiTError) as e:
            generate(shapes, class_label="red circle", **kwargs)
        assert str(e.value) == text
    with pytest.raises(FlexiDiTError) as e:
        encode_condition(shapes, class_label=True)
    assert str(e.value) == "class label True is neither a class name nor a number"


def test_an_unknown_model_is_a_user_error():
    with pytest.raises(FlexiDiTError) as e:
        get_spec("nope")
    assert str(e.value).startswith("unknown model 'nope'; choose one of: shapes, ")


# --- the budget floor ---------------------------------------------------------------------------------------------

def test_percent_up_rounds_a_lower_bound_up():
    assert percent_up(0.55649) == "55.7%" and percent_up(0.557) == "55.7%" and percent_up(0.5570001) == "55.8%"


@pytest.mark.parametrize("guidance", [False, True])
def test_budget_floor_is_the_lowest_reachable_budget(guidance):
    """For many FLOPs ratios: the floor itself is reachable and a hair below is not; the message's suggestion is
    at most 0.1% above it, reachable, and the budget it shows is the one refused."""
    rng = np.random.default_rng(0)
    for weak in rng.integers(1_000, 99_000, 40):
        flops_of = {"native": 100_000, "weak": int(weak)}
        floor = budget_floor(flops_of, guidance)
        assert floor == pytest.approx(weak / 100_000)
        schedule_for_budget(floor, 50, flops_of, guidance, lead=3)  # a lead never raises the floor
        budget = float(np.floor(floor * 1000 - 1) / 1000)  # just below, at 0.1% resolution
        if budget <= 0:
            continue
        with pytest.raises(FlexiDiTError) as e:
            schedule_for_budget(budget, 50, flops_of, guidance)
        shown, suggested = re.fullmatch(r"budget (.+)% is below what the weak model alone costs; "
                                        r"choose at least (.+)%", str(e.value)).groups()
        assert float(shown) == pytest.approx(100 * budget) and float(shown) < float(suggested)
        assert 0 <= float(suggested) / 100 - floor < 0.001
        schedule_for_budget(float(suggested) / 100, 50, flops_of, guidance)  # choosing it works


def test_budget_message_shows_the_budget_given():
    with pytest.raises(FlexiDiTError) as e:
        schedule_for_budget(0.246, 50, {"native": 100, "weak": 25}, True)
    assert str(e.value) == "budget 24.6% is below what the weak model alone costs; choose at least 25.0%"


# --- flexify files ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flexify_files(tmp_path_factory):
    """A good file of the tiny shapes model, one of shapes-text (same tensor names and shapes), and damaged ones."""
    root = tmp_path_factory.mktemp("flexify")
    files = {}
    for name in ("shapes", "shapes-text"):
        files[name] = root / f"{name}.safetensors"
        FlexibleTransformer(tiny_transformer(name), {"weak": (1, 2, 2)}, "lora", 8).save_flexify(files[name],
                                                                                                 model=name)
    good = files["shapes"].read_bytes()
    for kind, data in {"empty": b"", "truncated": good[: len(good) // 2]}.items():
        files[kind] = root / f"{kind}.safetensors"
        files[kind].write_bytes(data)
    files["pickled"] = root / "pickled.safetensors"
    torch.save(FlexibleTransformer(tiny_transformer("shapes"), {"weak": (1, 2, 2)}).state_dict(), files["pickled"])
    return files


@pytest.mark.parametrize("kind,reason", [("empty", "header too small"),
                                         ("truncated", "incomplete metadata, file not fully covered"),
                                         ("pickled", "header too large")])
def test_damaged_flexify_file_is_one_library_error(flexify_files, kind, reason):
    with pytest.raises(FlexiDiTError) as e:
        FlexibleTransformer.from_flexify_file(tiny_transformer("shapes"), flexify_files[kind])
    assert str(e.value) == (f"{flexify_files[kind]} is damaged or not a safetensors file (Error while deserializing "
                            f"header: {reason})")


def test_flexify_file_of_another_model_is_refused(flexify_files):
    path = flexify_files["shapes-text"]
    with pytest.raises(FlexiDiTError) as e:
        FlexibleTransformer.from_flexify_file(tiny_transformer("shapes"), path)
    assert str(e.value) == f"{path} does not fit this model: it belongs to shapes-text (a pixart model, not dit)"
    with pytest.raises(FlexiDiTError) as e:  # the same family, another config
        FlexibleTransformer.from_flexify_file(tiny_transformer("shapes", num_layers=3), flexify_files["shapes"])
    assert str(e.value) == f"{flexify_files['shapes']} does not fit this model: it belongs to shapes (num_layers 2, " \
                           f"not 3)"


def test_flexify_file_without_its_model_is_refused(flexify_files, tmp_path):
    from safetensors.torch import load_file, save_file
    path = tmp_path / "old.safetensors"
    save_file(load_file(flexify_files["shapes"]), path, {"variant": "lora", "lora_rank": "8",
                                                         "weak_patches": "weak=1x2x2"})  # as written before
    with pytest.raises(FlexiDiTError) as e:
        FlexibleTransformer.from_flexify_file(tiny_transformer("shapes"), path)
    assert str(e.value) == (f"{path} does not say which model it belongs to (written before flexify files recorded "
                            f"it); run `flexify` again for this model")


def test_shipped_flexify_files_load_on_their_own_model_only():
    """The shipped files were stamped with their model; each loads on its model and is refused by the others."""
    def base(name):  # a fresh one for each load: the LoRA variant adds its adapters to the base it is given
        return transformer_class(get_spec(name)).from_pretrained(ASSETS / name / "transformer")
    bases = {name: base(name) for name in ("shapes", "shapes-text", "shapes-video")}  # refused before any change
    for owner in bases:
        for variant in ("lora", "shared"):
            path = ASSETS / owner / f"flexify-{variant}.safetensors"
            assert FlexibleTransformer.from_flexify_file(base(owner), path).variant == variant
            for name, other in bases.items():
                if name != owner:
                    with pytest.raises(FlexiDiTError, match=f"does not fit this model: it belongs to {owner} "):
                        FlexibleTransformer.from_flexify_file(other, path)


# --- the CLI: one line each -----------------------------------------------------------------------------------------

DRIVER = r"""
import contextlib, io, json, sys
from flexi_core.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    out.append({"rc": rc, "errors": [l for l in err.getvalue().splitlines() if l.startswith("error")],
                "traceback": "Traceback" in err.getvalue()})
print(json.dumps(out))
"""


def run_cli(argvs, assets):
    """Runs `python -m flexi_core`'s main for each argv in one process (torch starts once)."""
    env = {**os.environ, "FLEXIDIT_ASSETS": str(assets)}
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr  # a crash (a bug) would end the driver with a traceback
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.slow
def test_cli_gives_one_true_line(tiny_assets, flexify_files, tmp_path):
    gen = ["generate", "--model", "shapes", "--class-label", "red circle", "--steps", "2"]
    out = ["--out-dir", str(tmp_path)]
    floor = budget_floor(load_model("shapes", assets=tiny_assets).flops_of(), False)
    cases = [
        ([*gen, *out, "--flexify-weights", str(flexify_files["pickled"])],
         f"{flexify_files['pickled']} is damaged or not a safetensors file (Error while deserializing header: "
         f"header too large)"),
        ([*gen, *out, "--flexify-weights", str(flexify_files["shapes-text"])],
         f"{flexify_files['shapes-text']} does not fit this model: it belongs to shapes-text (a pixart model, not "
         f"dit)"),
        ([*gen, *out, "--flexify-weights", str(tmp_path / "missing.safetensors")],
         f"flexify weights not found at {tmp_path / 'missing.safetensors'}; give the path of a file that `flexify` "
         f"wrote"),
        ([*gen, *out, "--json", str(tmp_path / "no" / "r.json")],
         f"--json {tmp_path / 'no' / 'r.json'}: the folder {tmp_path / 'no'} does not exist"),
        ([*gen, "--out-dir", "/proc/x"], "No such file or directory: /proc/x"),
        ([*gen, *out, "--budget", "0.246", "--cfg", "1"],
         f"budget 24.6% is below what the weak model alone costs; choose at least {percent_up(floor)}"),
        ([*gen, *out, "--schedule", "1/x"], "schedule '1/x': use whole numbers, 'x/y' or 'x'"),
    ]
    results = run_cli([argv for argv, _ in cases], tiny_assets)
    for (argv, text), result in zip(cases, results):
        assert result["rc"] == 2 and not result["traceback"], (argv, result)
        assert result["errors"] == [f"error: {text}"], (argv, result)


def test_os_errors_read_as_the_system_says():
    assert message(FileNotFoundError(2, "No such file or directory", "out/r.json")) == \
        "No such file or directory: out/r.json"
    assert message(FileNotFoundError("weights of x not found at y")) == "weights of x not found at y"


# --- output files, checked ------------------------------------------------------------------------------------------

def test_save_media_writes_what_decodes(tmp_path):
    import imageio.v3 as iio
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    video = np.random.default_rng(1).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)
    png, mp4 = save_media(image, tmp_path / "a"), save_media(video, tmp_path / "b")
    assert (png.name, mp4.name) == ("a.png", "b.mp4")
    assert np.array_equal(iio.imread(png), image) and iio.imread(mp4).shape == video.shape


FULL_DISK = r"""
import json, resource, signal, sys
import numpy as np
from pathlib import Path
from flexi_core.errors import OutputError
from flexi_core.media import save_media
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, writes fail (EFBIG) as on a full disk
for folder, limit, kind in json.loads(sys.argv[1]):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    shape = (8, 64, 64, 3) if kind == "video" else (64, 64, 3)
    try:
        save_media(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8), Path(folder) / "out")
        print("saved")
    except OutputError as e:
        print(e)
"""


@pytest.mark.slow
def test_save_media_refuses_what_a_full_disk_leaves(tmp_path):
    """A file-size limit (RLIMIT_FSIZE) makes writes fail as a full disk does: imageio then writes an empty or a
    cut-off MP4 without raising. Each must be an error, with no broken file left behind."""
    cases = [(0, "video", "was written empty"), (2000, "video", "does not decode (OSError)"),
             (2000, "image", "could not be written (File too large)"), (10 ** 8, "video", None)]
    folders = [tmp_path / str(i) for i in range(len(cases))]
    for folder in folders:
        folder.mkdir()
    r = subprocess.run([sys.executable, "-c", FULL_DISK,
                        json.dumps([(str(f), limit, kind) for f, (limit, kind, _) in zip(folders, cases)])],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = r.stdout.splitlines()
    assert len(lines) == len(cases), r.stderr[-2000:]
    for line, folder, (_, kind, problem) in zip(lines, folders, cases):
        file = folder / ("out.mp4" if kind == "video" else "out.png")
        if problem is None:  # enough room: written and kept
            assert line == "saved" and file.stat().st_size > 0
        else:
            assert line == f"{file} {problem}; is the disk full?" and not list(folder.iterdir())
    assert isinstance(OutputError("x"), OSError)  # the CLI and the app catch it with the other file errors


# --- fair timing --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_alternating_steps_give_the_results_of_each_run_alone(shapes, sampler):
    """static and flexible alternate their steps (and who goes first) in one loop; each result is bit for bit what
    sampling its schedule alone gives."""
    texts = []
    result = generate(shapes, class_label="red circle", budget=0.6, steps=5, seed=7, sampler=sampler,
                      progress=lambda fraction, text: texts.append(text))
    condition = encode_condition(shapes, class_label="red circle")
    for got, schedule in [(result.static, Schedule.static(5, "weak")), (result.flexible, result.flexible.schedule)]:
        alone = sample(shapes, condition, schedule, 7, 4.0, sampler)
        assert np.array_equal(got.pixels, alone.pixels)
        assert [r.flops for r in got.records] == [r.flops for r in alone.records]
    assert result.flexible.schedule.weak_steps > 0
    assert texts[:4] == ["static: step 1/5", "flexible: step 1/5", "flexible: step 2/5", "static: step 2/5"]


def test_an_explicit_schedule_must_match_the_steps(shapes):
    with pytest.raises(FlexiDiTError) as e:
        generate(shapes, class_label="red circle", steps=6, schedule=Schedule(5, 2, 2))
    assert str(e.value) == "the schedule has 5 steps, not 6"


def test_time_verdict_claims_only_what_the_seconds_show():
    assert time_verdict(1.0, 0.71) == "saves 29% of the time"
    assert time_verdict(1.0, 1.28) == "took 28% more time"
    assert time_verdict(1.0, 1.05) == time_verdict(1.0, 0.95) == "about the same time"
    assert time_verdict(1.0, 0.85, noise=0.2) == "about the same time"


def _run(seconds, modes):
    from flexi_core.sampling import StepRecord
    return Sample(np.zeros(0, np.uint8), Schedule.static(len(seconds)),
                  [StepRecord(i, 0, m, m, (1, 1, 1), (1, 1, 1), 1, s) for i, (s, m) in enumerate(zip(seconds, modes))])


def test_a_noisy_comparison_claims_no_saving():
    """The same 30% saving in total, once from steady steps and once from steps whose seconds jump around: only
    the steady one is called a saving."""
    modes = ["weak"] * 10 + ["native"] * 10
    rng = np.random.default_rng(0)
    steady = Comparison(_run([0.4] * 10 + [1.0] * 10, modes), _run([1.0] * 20, ["native"] * 20), "")
    jumpy_static = rng.choice([0.2, 1.8], 20)
    jumpy_flex = np.array([0.4] * 10 + [1.0] * 10) * rng.choice([0.2, 1.8], 20)
    jumpy_flex *= 0.7 * jumpy_static.sum() / jumpy_flex.sum()
    jumpy = Comparison(_run(list(jumpy_flex), modes), _run(list(jumpy_static), ["native"] * 20), "")
    assert steady.time_verdict == "saves 30% of the time"
    assert jumpy.time_verdict == "about the same time"
