"""The Gradio app, driven through gradio_client on 127.0.0.1 with tiny random-weight models (the `tiny_assets`
fixture): every event, the files it returns, its numbers against flexi_core's for the same inputs, bad inputs,
a full queue, and Stop. Nothing here depends on the tiny shapes: FLEXIDIT_TEST_ASSETS=assets runs the same tests
on the trained models."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (GENERATE_STATUS, STEPS, downscale, error_of, generate_args, image_of, launch, start_long_job,
                      wait_for)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def assets(tiny_assets):
    """The tiny random-weight models, or the folder FLEXIDIT_TEST_ASSETS names (e.g. the trained assets/)."""
    return Path(os.environ.get("FLEXIDIT_TEST_ASSETS") or tiny_assets)


# --- the command line ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_help_lists_the_flags():
    r = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for flag in ("--host", "--port", "--share", "--assets", "--threads", "--queue-size"):
        assert flag in r.stdout


def test_gpu_decorator_is_a_no_op_without_spaces():
    torch.set_num_threads(1)
    from app.runtime import gpu

    def f(x, progress=None):
        return x + 1
    if "spaces" not in sys.modules:
        assert gpu(duration=10)(f) is f and gpu(f) is f


# --- light events -------------------------------------------------------------------------------------------------

def test_model_controls_follow_the_model(served):
    from flexi_core.registry import SPECS, trained
    _, client = served
    for name, spec in SPECS.items():
        if not trained(spec):  # not offered (a test below)
            continue
        class_box, prompt_box, weak_box, steps, guidance, sampler = client.predict(
            name, "red circle", api_name="/model_controls")[:6]
        assert class_box["visible"] == (spec.conditioning == "class")
        assert prompt_box["visible"] == (spec.conditioning == "text")
        assert weak_box["visible"] == (len(spec.weak_patches) > 1)
        assert steps["value"] == spec.steps and guidance["value"] == spec.guidance
        assert sampler["value"] == spec.sampler


def test_an_empty_prompt_box_gets_the_models_example(served):
    """Picking a text model fills an empty prompt box with its example (a visitor's Generate then draws something);
    a prompt already typed stays, and a class model leaves the box alone."""
    from app.ui import EXAMPLES, example_prompt
    _, client = served
    for name in ("shapes-text", "shapes-video"):
        assert client.predict(name, "", api_name="/model_prompt") == example_prompt(name) == next(
            p for n, _, p in EXAMPLES if n == name)
        assert client.predict(name, "a blue square", api_name="/model_prompt") == "a blue square"
    assert client.predict("shapes", "", api_name="/model_prompt") == ""


def test_model_status_loads_embedded_and_explains_missing_weights(served, reference):
    _, client = served
    text = client.predict("shapes", "lora", api_name="/model_status")
    assert "shapes" in text and reference("shapes").device_name in text
    for name in ("dit-xl-2-256", "pixart-alpha-256", "cogvideox-2b"):
        assert "not available offline" in client.predict(name, "lora", api_name="/model_status")


@pytest.mark.parametrize("name,weak_mode,budget,sampler", [
    ("shapes", "temporal", 55, "ddim"), ("shapes", "temporal", 40, "dpm"), ("shapes", "temporal", 100, "dpm"),
    ("shapes-video", "spatial", 60, "ddim")])
def test_schedule_preview_is_flexi_cores_schedule(served, reference, name, weak_mode, budget, sampler):
    from flexi_core.sampling import budget_schedule, schedule_flops
    from flexi_core.schedule import Schedule
    _, client = served
    model = reference(name)
    mode = weak_mode if weak_mode in model.flexible.weak_modes else None
    schedule = budget_schedule(model, budget / 100, STEPS, 4.0, mode, sampler=sampler)  # the split follows it
    static = schedule_flops(model, Schedule.static(STEPS, schedule.weak_mode), 4.0)
    share = 100 * schedule_flops(model, schedule, 4.0) / static
    text = client.predict(name, "lora", weak_mode, STEPS, 4.0, budget, sampler, api_name="/schedule")
    assert f"{schedule.weak_steps} of {STEPS} steps weak → {share:.0f}% of static FLOPs" in text
    if 0 < schedule.weak_steps < STEPS:  # the sentence names every run of steps, leading native ones included
        assert all(f"steps {first}-{last}" in text.lower() or f"step {first} " in text.lower()
                   for _, first, last in schedule.runs())


def test_schedule_preview_warns_instead_of_failing(served):
    _, client = served
    assert "below what the weak model alone costs" in client.predict("shapes", "lora", "temporal", 50, 4.0, 5,
                                                                     api_name="/schedule")
    assert "steps must be" in client.predict("shapes", "lora", "temporal", 0, 4.0, 50, api_name="/schedule")
    public = client.predict("dit-xl-2-256", "lora", "temporal", 250, 4.0, 50, api_name="/schedule")
    assert "steps weak" in public and "weights are not available" in public


def test_fit_budget_moves_an_impossible_budget_into_the_reachable_range(served, reference):
    from flexi_core.sampling import budget_schedule
    _, client = served
    for name, mode in (("shapes", "temporal"), ("shapes-video", "temporal"), ("shapes-video", "spatial")):
        model = reference(name)
        mode = mode if mode in model.flexible.weak_modes else None
        with pytest.raises(ValueError, match="below what the weak model alone costs"):
            budget_schedule(model, 0.05, 50, 4.0, mode)
        fitted = client.predict(name, "lora", mode or "temporal", 4.0, 5, api_name="/fit_budget")["value"]
        schedule = budget_schedule(model, fitted / 100, 50, 4.0, mode)  # reachable, with weak and native steps
        assert 0 < schedule.weak_steps < 50 and 5 < fitted < 100
        # a reachable budget stays as it is
        assert "value" not in client.predict(name, "lora", mode or "temporal", 4.0, fitted, api_name="/fit_budget")


# --- generate -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,condition,weak_mode", [
    ("shapes", dict(class_label="blue triangle"), "temporal"),
    ("shapes-text", dict(prompt="a small green square in the top left on a white background"), "temporal"),
    ("shapes-video", dict(prompt="a red circle moving right on a black background"), "spatial"),
])
def test_generate_matches_flexi_core(served, reference, name, condition, weak_mode):
    from flexi_core.generate import generate
    _, client = served
    budget, seed = 60, 5
    args = generate_args(name, condition.get("class_label", "red circle"), condition.get("prompt", ""), seed,
                         STEPS, 4.0, "lora", weak_mode, budget)
    (slider, video_static, video_flexible, sheet_static, sheet_flexible, static_md, flexible_md, agreement_md, plot,
     downloads, fewer_image, fewer_md, status, raw) = client.predict(*args, api_name="/generate")
    model = reference(name)
    mode = weak_mode if weak_mode in model.flexible.weak_modes else None
    ref = generate(model, **condition, budget=budget / 100, steps=STEPS, seed=seed, guidance=4.0, weak_mode=mode,
                   sampler=args[-1], fewer_steps=True)

    # the third result: the static model with fewer steps, never more FLOPs than the flexible run, and what the judge
    # reads in each of the three (the embedded models' judge; a random one in these tiny assets)
    assert raw["fewer_steps"]["steps"] == ref.fewer.schedule.steps < STEPS
    assert raw["fewer_steps"]["flops"] == ref.fewer.flops <= raw["flexible"]["flops"]
    assert f"**{ref.fewer.schedule.steps} of {STEPS} steps**" in fewer_md
    assert f"{raw['fewer_steps']['seconds']:.2f} s" in fewer_md
    for md, run in ((static_md, "static"), (flexible_md, "flexible"), (fewer_md, "fewer_steps")):
        assert raw["judge"][run] and "**judge:**" in md and " on " in raw["judge"][run]
    fewer_shown = image_of(fewer_image)
    if model.spec.modality != "video":
        assert np.abs(downscale(fewer_shown, ref.fewer.pixels).astype(int) - ref.fewer.pixels).max() <= 2

    # FLOPs are deterministic: exactly flexi_core's, per run and per step
    for run, sample in (("static", ref.static), ("flexible", ref.flexible)):
        assert raw[run]["flops"] == sample.flops
        assert [s["flops"] for s in raw[run]["per_step"]] == [r.flops for r in sample.records]
        assert [s["cond_mode"] for s in raw[run]["per_step"]] == [r.cond_mode for r in sample.records]
        assert raw[run]["weak_steps"] == sample.schedule.weak_steps
        # times: flexi_core's per-step wall-clock, summed as flexi_core sums them, and shown as such
        assert raw[run]["seconds"] == pytest.approx(sum(s["seconds"] for s in raw[run]["per_step"]))
        assert raw[run]["seconds"] > 0
    assert raw["flops_ratio"] == pytest.approx(ref.flops_ratio)
    assert raw["flops_saving_percent"] == pytest.approx(100 * (1 - ref.flops_ratio))
    assert raw["device"] == model.device_name and raw["condition"] == ref.condition_text
    assert f"{raw['static']['seconds']:.2f} s" in static_md
    assert f"{raw['flexible']['seconds']:.2f} s" in flexible_md
    assert f"saves {raw['flops_saving_percent']:.0f}% FLOPs" in flexible_md
    assert raw["time_verdict"] in flexible_md and status.startswith("✓ Done")
    assert model.device_name in agreement_md and "PSNR" in agreement_md and "SSIM" in agreement_md
    assert plot is not None

    # the pictures: real PNG files, upscaled for display, holding the same pixels flexi_core makes; an image model
    # shows them in the slider, a video model as two separate frame sheets (a slider would split a sheet)
    if model.spec.modality == "video":
        assert slider is None
        static_img, flexible_img = image_of(sheet_static), image_of(sheet_flexible)
    else:
        assert sheet_static is None and sheet_flexible is None
        static_img, flexible_img = (image_of(p) for p in slider)
    for shown, sample in ((static_img, ref.static), (flexible_img, ref.flexible)):
        assert shown.shape[0] >= 128
        assert np.abs(downscale(shown, sample.pixels).astype(int) - sample.pixels).max() <= 2
    if ref.agreement["psnr"] != math.inf:
        assert raw["agreement"]["psnr"] == pytest.approx(ref.agreement["psnr"], abs=0.5)

    if model.spec.modality == "video":
        import imageio.v3 as iio
        for video, sample in ((video_static, ref.static), (video_flexible, ref.flexible)):
            path = video["video"] if isinstance(video, dict) else video
            frames = iio.imread(path)
            t, h, w, _ = sample.pixels.shape
            assert frames.shape[0] == t and frames.shape[1] % h == 0 and frames.shape[1] == frames.shape[2]
    else:
        assert video_static is None and video_flexible is None
    # downloadable: both pictures (and both videos), and the numbers as JSON equal to the raw output
    names = [Path(d if isinstance(d, str) else d["path"]).name for d in downloads]
    assert sum(n.endswith(".png") for n in names) == 3 and len([n for n in names if n.endswith(".json")]) == 1
    assert sum(n.endswith(".mp4") for n in names) == (2 if model.spec.modality == "video" else 0)
    numbers = next(d if isinstance(d, str) else d["path"] for d in downloads if str(d).endswith(".json")
                   or (isinstance(d, dict) and d["path"].endswith(".json")))
    assert json.loads(Path(numbers).read_text()) == raw


# --- sweep and analysis -------------------------------------------------------------------------------------------

def test_sweep_matches_flexi_core_schedules(served, reference):
    from flexi_core.sampling import budget_schedule, schedule_flops
    _, client = served
    budgets = [75, 40, 10]
    gallery, plot, table, note, status, raw = client.predict(*generate_args("shapes")[:8], budgets,
                                                             api_name="/sweep")
    model = reference("shapes")
    expected, skipped = {}, []
    for b in [100, *budgets]:
        try:
            expected[b / 100] = schedule_flops(model, budget_schedule(model, b / 100, STEPS, 4.0), 4.0)
        except ValueError:
            skipped.append(b)
    assert {row["budget"]: row["flops"] for row in raw["rows"]} == expected
    assert len(raw["skipped"]) == len(skipped) and (not skipped or "Skipped" in note)
    assert raw["rows"][0]["budget"] == 1.0 and raw["rows"][0]["psnr"] is None  # static vs itself: identical
    assert len(gallery) == len(expected) and len(table["data"]) == len(expected)
    for item in gallery:
        assert os.path.getsize(item["image"]["path"] if isinstance(item["image"], dict) else item["image"]) > 0
    assert plot is not None


def test_explain_runs_both_observations(served):
    _, client = served
    gap_plot, filter_plot, gallery, status, raw = client.predict(*generate_args("shapes", steps=4)[:7],
                                                                 api_name="/explain")
    gaps = raw["prediction_gap"]["gap"]
    assert list(gaps) == ["weak"] and len(gaps["weak"]) == 4 and all(g >= 0 for g in gaps["weak"])
    assert [(c["keep"]) for c in raw["filtered_updates"]] == ["low", "high", "low", "high"]
    assert len(gallery) == 5 and gap_plot is not None and filter_plot is not None


# --- bad input --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,message", [
    (dict(model="shapes-text", prompt="   "), "prompt is empty"),
    (dict(model="shapes-text", prompt="x" * 10_000), "limit is"),
    (dict(class_label="purple cube"), "unknown class"),
    (dict(budget=0), "compute budget"),
    (dict(budget=150), "compute budget"),
    (dict(budget=5), "below what the weak model alone costs"),
    (dict(steps=0), "steps must be"),
    (dict(steps=10_000), "steps must be"),
    (dict(seed=-1), "seed must be"),
    (dict(guidance=31), "guidance must be"),
    (dict(guidance=None), "guidance scale is empty"),
    (dict(seed=2 ** 64), "seed must be"),
    (dict(variant="full"), "variant must be"),
    (dict(model="dit-xl-2-256", class_label="207"), "not available offline"),
    (dict(model="no-such-model"), "unknown model"),
    (dict(model="shapes-video", prompt="a red circle", weak_mode="diagonal"), "weak mode must be"),
])
def test_bad_input_gives_a_readable_error_and_the_app_keeps_serving(served, changes, message):
    _, client = served
    text = error_of(lambda: client.predict(*generate_args(**changes), api_name="/generate"))
    assert message in text and "Traceback" not in text
    assert client.predict("shapes", "lora", "temporal", 4, 4.0, 50, api_name="/schedule")  # still serving


def test_bad_sweep_and_analysis_inputs(served):
    _, client = served
    assert "at least one budget" in error_of(lambda: client.predict(*generate_args()[:8], [], api_name="/sweep"))
    assert "steps must be" in error_of(lambda: client.predict(*generate_args(steps=0)[:7], api_name="/explain"))
    text = error_of(lambda: client.predict(*generate_args("pixart-alpha-256", prompt="a cat")[:7],
                                           api_name="/explain"))
    assert "not available offline" in text


# --- queue and stop -----------------------------------------------------------------------------------------------

def test_full_queue_says_busy_and_the_jobs_it_took_finish(assets):
    from gradio_client import Client
    demo, url = launch(assets, concurrency=1, queue_size=1)
    try:
        client = Client(url, verbose=False)
        jobs = [client.submit(*generate_args(steps=60), api_name="/generate") for _ in range(4)]
        outcomes = []
        for job in jobs:
            try:
                outcomes.append(job.result(timeout=300)[-1]["flexible"]["flops"])
            except Exception as e:  # noqa: BLE001 - the client's QueueError
                outcomes.append(str(e))
        busy = [o for o in outcomes if isinstance(o, str)]
        done = [o for o in outcomes if not isinstance(o, str)]
        assert busy and all("try again" in o.lower() for o in busy), outcomes
        assert len(done) >= 2 and len(set(done)) == 1  # same inputs, same FLOPs
    finally:
        demo.close()


def test_stop_ends_the_running_job(served):
    demo, _ = served
    client, job = start_long_job(demo)
    client.predict(api_name="/stop")
    wait_for(lambda: demo.flexidit.running() == 0, 30, what="the job's end after Stop")  # its handler returned
    # the job ended through the Stop check, not by running to its end: calmly, keeping what was shown (every output
    # skipped) and saying so in the status line (issue 17: no error for a Stop)
    outputs = job.result(timeout=60)
    status = outputs[GENERATE_STATUS]
    assert status.startswith("**Stopped** at ") and "previous" in status, status
    assert client.predict("shapes", "lora", "temporal", 4, 4.0, 50, api_name="/schedule")  # still serving


def test_frontier_pane_shows_the_shipped_run(served):
    """The Budget sweep tab shows the loaded model's shipped frontier for the chosen sampler, with the command that
    made it and where FlexiDiT pays; where none ships it says so (no stale plot of another model)."""
    from flexi_core.shapes.frontier import SHIPPED
    _, client = served
    plot, note = client.predict("shapes", "dpm", "temporal", api_name="/frontier")
    assert plot and Path(plot).read_bytes() == (SHIPPED / "frontier-shapes-dpm.png").read_bytes()
    assert "evaluate --model shapes --frontier --sampler dpm" in note and "above the static frontier" in note
    plot, note = client.predict("dit-xl-2-256", "ddim", "temporal", api_name="/frontier")
    assert plot is None and "No frontier run ships for dit-xl-2-256 with DDIM" in note
    assert "sampler" in client.predict("shapes", "euler", "temporal", api_name="/frontier")[1]


def test_untrained_embedded_models_are_not_offered():
    """An embedded model the project has not trained yet (e.g. the paper-regime ones of issue 18) is not in the
    model list: a visitor would only meet a missing-weights message."""
    from app.ui import _model_choices
    offered = [name for _, name in _model_choices()]
    assert {"shapes", "shapes-text", "shapes-video", "shapes-textured", "shapes-text-textured", "dit-xl-2-256",
            "cogvideox-2b"} <= set(offered)
    assert "shapes-256" not in offered  # the pilot: not shipped


def test_timeline_marks_weak_steps_without_guidance():
    """A guided run whose weak steps skip guidance shows them dotted, with a legend entry; a run without guidance
    at all (every unconditional mode None) does not."""
    from app import plots
    from flexi_core.sampling import StepRecord
    patches = {"native": (1, 1, 1), "weak": (1, 2, 2)}

    def run(modes):
        return [StepRecord(i, 999 - i, c, u, patches[c], patches[u] if u else None, 100, 0.1)
                for i, (c, u) in enumerate(modes)]

    def legend(*runs):
        figure = plots.timeline([(f"run {i}", r) for i, r in enumerate(runs)], patches)
        return [t.get_text() for t in figure.legends[0].get_texts()]

    unguided_weak = run([("weak", None)] * 3 + [("native", "native")] * 2)
    assert "weak step without guidance (conditional pass only)" in legend(unguided_weak)
    assert "weak step without guidance (conditional pass only)" not in legend(run([("weak", None), ("native", None)]))
