"""The FlexiDiT demo: layout and events. All model work goes through flexi_core; this file only wires it to Gradio.

Events (each with an api_name, so gradio_client can drive them):
  /model_controls  model -> which condition/weak-mode controls apply, default steps and guidance
  /model_status    model, variant -> what the model is and whether it is available here (loads it once)
  /schedule        the schedule a budget implies, before running
  /fit_budget      raises the budget to what a newly chosen model / weak patch can reach
  /generate        static and flexible sample from the same seed, their FLOPs, time, agreement, step timeline
  /sweep           one seed at several budgets
  /explain         the paper's two observations on the loaded model
  /stop            stops the running job of this browser session
"""
from __future__ import annotations

import functools
import math
import threading
import time
from pathlib import Path

import gradio as gr

from flexi_core.registry import SPECS, get_spec

from . import plots
from .plots import patch_text, si
from .runtime import (ModelCache, OutputDir, display_image, gpu, limit_malloc_arenas, message_of, release_memory,
                      user_errors, write_video)

TITLE = "FlexiDiT: the same picture for less compute"
INTRO = """\
A diffusion transformer makes an image by denoising pure noise in many small steps, and normally every step costs
the same. **FlexiDiT** ([Anagnostidis et al., CVPR 2025](https://arxiv.org/abs/2502.20126)) teaches one pre-trained
model to also work with **bigger patches** (fewer tokens, so a step costs a fraction of the FLOPs). The first, noisy
steps only decide the rough layout and colours, which big patches handle well; so the flexible sampler runs the
first steps with big (*weak*) patches and the last ones with the model's own (*native*) patch. Choose a model and
what to draw, set how much compute to spend with the **compute budget** slider, and press **Generate**: you get the
ordinary (*static*) sample and the flexible one from the same random seed side by side, with what each cost.
"""
DEFAULT_MODEL = "shapes"
SWEEP_BUDGETS = (100, 75, 55, 40, 25)
EXAMPLES = [
    ["shapes", "red circle", ""],
    ["shapes", "blue triangle", ""],
    ["shapes-text", "red circle", "a large yellow diamond in the centre on a dark blue background"],
    ["shapes-text", "red circle", "a small green square in the top left on a white background"],
    ["shapes-text", "red circle", "a large crimson disc on a white background"],  # other words: see assets/README
    ["shapes-video", "red circle", "a red circle moving right on a black background"],
    ["shapes-video", "red circle", "a blue triangle going up"],
]
EXAMPLE_LABELS = ["shapes: red circle", "shapes: blue triangle", "shapes-text: yellow diamond on dark blue",
                  "shapes-text: small green square, top left", "shapes-text: crimson disc (in other words)",
                  "shapes-video: red circle moving right",
                  "shapes-video: blue triangle going up"]
PUBLIC_CLASS_EXAMPLES = ("207", "88", "279", "360", "387", "417", "974", "979")  # a few ImageNet class ids
CSS = """
.stats p { margin: 0.15em 0; }
#preview { min-height: 2.5em; }
footer { display: none !important; }
"""


class Cancelled(Exception):
    """Raised from the progress callback when the visitor pressed Stop."""


# --- helpers --------------------------------------------------------------------------------------------------------

def _spec(model_name):
    if not isinstance(model_name, str):
        raise ValueError(f"choose a model by name: one of {', '.join(SPECS)}")
    return get_spec(model_name)  # KeyError naming the models for an unknown one


def _step_range(first: int, last: int) -> str:
    return f"step {first}" if first == last else f"steps {first}-{last}"


def _steps_text(schedule, patches) -> str:
    """'steps 1-3 native 2×2, steps 4-17 weak 4×4, steps 18-25 native 2×2' for the conditional pass."""
    return ", ".join(f"{_step_range(first, last)} {'native' if mode == 'native' else 'weak'} "
                     f"{patch_text(patches[mode])}" for mode, first, last in schedule.runs())


def _condition(spec, class_label, prompt) -> dict:
    """One class or prompt (flexi_core would take a list as a batch of conditions)."""
    if spec.conditioning == "class":
        if class_label is not None and (not isinstance(class_label, (str, int)) or isinstance(class_label, bool)):
            raise ValueError(f"the class must be one name or number, got {class_label!r}"[:200])
        return {"class_label": class_label}
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError("the prompt must be text")
    return {"prompt": prompt}


def _numbers(seed, steps, guidance) -> tuple[int, int, float]:
    """Raw values from the browser or an API client (events run with preprocess=False, so that every message
    names its control): empty boxes get a message instead of silently falling back to defaults, whole floats
    become ints, and flexi_core's `validate` checks the ranges."""
    from flexi_core.sampling import validate
    for value, name in ((seed, "seed"), (steps, "number of steps"), (guidance, "guidance scale")):
        if value is None or value == "":
            raise ValueError(f"the {name} is empty; enter a number")
    seed, steps = (int(v) if isinstance(v, float) and math.isfinite(v) and v == int(v) else v
                   for v in (seed, steps))
    validate(steps, guidance, seed)
    return seed, steps, float(guidance)


def _budget(budget) -> float:
    """Percent of the static FLOPs -> the fraction flexi_core takes."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 100:
        raise ValueError(f"the compute budget must be a percentage above 0 and at most 100, got {budget!r}")
    return budget / 100


def _weak_mode(weak_modes, weak_mode) -> str | None:
    """Image models have one weak patch size (the control is hidden); video models have two to choose from."""
    if isinstance(weak_mode, str) and weak_mode in weak_modes:
        return weak_mode
    if len(weak_modes) == 1 or not weak_mode:
        return next(iter(weak_modes))
    return str(weak_mode)  # flexi_core says which ones exist


def _patches_of(spec) -> dict:
    return {"native": spec.native_patch, **spec.weak_patches}


def _pct(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else float("nan")


def _saving(static: float, flexible: float, what: str) -> str:
    share = _pct(flexible, static)
    if not math.isfinite(share):
        return ""
    return f"saves {100 - share:.0f}% {what}" if share <= 100 else f"{share - 100:.0f}% more {what}"


def _db(value: float) -> str:
    return "∞ dB (identical)" if math.isinf(value) else f"{value:.1f} dB"


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _run_json(sample) -> dict:
    return {"flops": sample.flops, "seconds": sample.seconds, "decode_seconds": sample.decode_seconds,
            "weak_steps": sample.schedule.weak_steps, "schedule": sample.schedule.label,
            "per_step": [{"step": r.step, "timestep": r.timestep, "cond_mode": r.cond_mode,
                          "uncond_mode": r.uncond_mode, "cond_patch": list(r.cond_patch),
                          "uncond_patch": list(r.uncond_patch) if r.uncond_patch else None,
                          "flops": r.flops, "seconds": r.seconds} for r in sample.records]}


def _model_choices():
    return [(f"{name}: {s.description}" if s.embedded else f"{name}: {s.description} (public; needs its weights)",
             name) for name, s in SPECS.items()]


def _weak_mode_choices(spec):
    explain = {"temporal": "merges pairs of frames", "spatial": "bigger squares, every frame", "weak": ""}
    return [(f"{mode}: patch {patch_text(p)}" + (f", {explain[mode]}" if explain.get(mode) else ""), mode)
            for mode, p in spec.weak_patches.items()]


# --- the app ----------------------------------------------------------------------------------------------------------

class FlexiDiTApp:
    """Event handlers around one model cache and one output folder."""

    def __init__(self, assets: Path | None = None, allow_download: bool = False):
        self.models = ModelCache(assets, allow_download)
        self.outputs = OutputDir()
        self._stops: dict[str, float] = {}
        self._stops_lock = threading.Lock()

    # stop -----------------------------------------------------------------------------------------------------
    def stop(self, request: gr.Request = None):
        if request is not None and request.session_hash:
            now = time.monotonic()
            with self._stops_lock:  # forget old presses, so that the dict does not grow with every visitor
                self._stops = {s: t for s, t in self._stops.items() if now - t < 3600}
                self._stops[request.session_hash] = now
        gr.Info("Stopped.")

    def _progress(self, progress, request, started: float):
        """flexi_core's progress(fraction, text), forwarded to Gradio; raises Cancelled after Stop."""
        session = request.session_hash if request is not None else None

        def update(fraction: float, text: str):
            if session is not None:
                with self._stops_lock:
                    if self._stops.get(session, -1.0) > started:
                        raise Cancelled("stopped")
            progress(min(max(fraction, 0.0), 1.0), desc=text)
        return update

    # light events -------------------------------------------------------------------------------------------------
    def model_controls(self, model_name, class_label):
        """Shows the class box or the prompt box, the weak-mode choice for video, and the model's defaults."""
        spec = _spec(model_name)
        is_class = spec.conditioning == "class"  # (class choices are updated, but the box accepts any value)
        classes = list(spec.class_names) or list(PUBLIC_CLASS_EXAMPLES)
        label_value = class_label if class_label in classes else classes[0]
        return (
            gr.update(visible=is_class, choices=classes, value=label_value,
                      info="what to draw" + ("" if spec.class_names else ": an ImageNet class id, 0-999")),
            gr.update(visible=not is_class),
            gr.update(visible=len(spec.weak_patches) > 1),  # fixed choices: updating them races other events
            gr.update(value=spec.steps),
            gr.update(value=spec.guidance),
            gr.update(visible=spec.modality == "video"),
        )

    def model_status(self, model_name, variant):
        """One line about the model: what it is, the device, and whether its flexible weights are trained."""
        spec = _spec(model_name)
        try:
            model = self.models.get(model_name, variant)
        except FileNotFoundError as e:
            return f"⚠️ **{spec.name} cannot run here.** {message_of(e)}"
        except (ValueError, KeyError) as e:
            return f"⚠️ **{spec.name} cannot be loaded:** {message_of(e)}"
        patches = ", ".join(f"{m} {patch_text(p)}" for m, p in model.flexible.patches.items())
        text = (f"**{spec.name}**: {spec.description}. Patch sizes: {patches}. Runs on **{model.device_name}**.")
        if not model.flexify_trained:
            text += (f"\n\n⚠️ No trained flexible weights for the *{model.variant}* variant yet: the weak patch "
                     "size runs its untrained initialisation, so expect the flexible result to drift from the "
                     "static one.")
        return text

    def _flops_context(self, model_name, variant, weak_mode):
        """(FLOPs of one forward per mode, patches, weak mode, note) from the loaded model, or, when a public
        model's weights are not here, from its architecture (flexi_core's formulas need no weights)."""
        from flexi_core.flops import spec_flops
        spec = _spec(model_name)
        try:
            model = self.models.get(model_name, variant)
        except FileNotFoundError:
            patches = _patches_of(spec)
            mode = _weak_mode(spec.weak_patches, weak_mode)
            if mode not in spec.weak_patches:
                raise ValueError(f"weak mode must be one of {list(spec.weak_patches)}, not {mode!r}") from None
            return ({m: spec_flops(spec, p) for m, p in patches.items()}, patches, mode,
                    " *(from the architecture; the weights are not available here)*")
        mode = _weak_mode(model.flexible.weak_modes, weak_mode)
        if mode not in model.flexible.weak_modes:
            raise ValueError(f"weak mode must be one of {list(model.flexible.weak_modes)}, not {mode!r}")
        return model.flops_of(), model.flexible.patches, mode, ""

    def schedule(self, model_name, variant, weak_mode, steps, guidance, budget):
        """The schedule the budget implies, as one line (warnings instead of errors: this runs while typing).
        Uses flexi_core's schedule_for_budget, which is what sampling.budget_schedule runs on a loaded model."""
        from flexi_core.schedule import Schedule, schedule_for_budget, total_flops
        try:
            _, steps, guidance = _numbers(0, steps, guidance)
            fraction = _budget(budget)
            flops_of, patches, mode, note = self._flops_context(model_name, variant, weak_mode)
            sched = schedule_for_budget(fraction, steps, flops_of, guidance > 1, mode,
                                        _spec(model_name).lead_steps(mode, steps))
            flexible = total_flops(sched, flops_of, guidance > 1)
            static = total_flops(Schedule.static(steps, mode), flops_of, guidance > 1)
        except (ValueError, KeyError) as e:
            return f"⚠️ {message_of(e)}"
        weak = sched.weak_steps
        head = (f"**{weak} of {steps} steps weak → {_pct(flexible, static):.0f}% of static FLOPs** "
                f"({si(flexible)} instead of {si(static)}){note}. ")
        if weak == 0:
            return head + "At this budget the flexible run is the static one."
        if weak == steps:
            return head + f"Every step uses the weak {patch_text(patches[mode])} patch."
        steps_text = _steps_text(sched, patches)
        text = head + steps_text[0].upper() + steps_text[1:] + "."
        if sched.lead_steps:
            text += " The first native steps fix the layout (and the object's size) before the weak ones."
        hatched = [i + 1 for i in range(steps) if sched.modes(i)[0] == "native" != sched.modes(i)[1]]
        if hatched:  # only with guidance: without it both passes share the schedule
            text += (f" The unconditional pass stays weak in {_step_range(hatched[0], hatched[-1])}: there guidance "
                     "starts from the weak model's conditional prediction (hatched in the timeline).")
        return text

    def fit_budget(self, model_name, variant, weak_mode, guidance, budget):
        """After a change of model or weak patch, a budget below what the weak patch alone costs (every step weak)
        moves to the middle of the reachable range, so that an example never starts from an impossible budget."""
        from flexi_core.schedule import Schedule, total_flops
        try:
            flops_of, _, mode, _ = self._flops_context(model_name, variant, weak_mode)
            use_cfg = isinstance(guidance, (int, float)) and guidance > 1
            floor = 100 * total_flops(Schedule(1, 0, 0, mode), flops_of, use_cfg) \
                / total_flops(Schedule.static(1, mode), flops_of, use_cfg)
        except (ValueError, KeyError):
            return gr.update()
        if isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget >= floor:
            return gr.update()
        return gr.update(value=min(100, math.ceil((floor + 100) / 2)))

    # heavy events -------------------------------------------------------------------------------------------------
    def generate(self, model_name, class_label, prompt, seed, steps, guidance, variant, weak_mode, budget,
                 progress=gr.Progress(), request: gr.Request = None):
        from flexi_core.generate import generate
        started = time.monotonic()
        spec = _spec(model_name)
        seed, steps, guidance = _numbers(seed, steps, guidance)
        fraction = _budget(budget)
        progress(0, desc=f"loading {spec.name}")
        model = self.models.get(model_name, variant)
        mode = _weak_mode(model.flexible.weak_modes, weak_mode)
        result = generate(model, **_condition(spec, class_label, prompt), budget=fraction, steps=steps,
                          seed=seed, guidance=guidance, weak_mode=mode, compare=True,
                          progress=self._progress(progress, request, started))
        static, flexible = result.static, result.flexible
        agreement = result.agreement
        videos = (None, None)
        if spec.modality == "video":
            stem = f"{spec.name}-seed{seed}"
            videos = (write_video(static.pixels, self.outputs.new(stem + "-static", ".mp4")),
                      write_video(flexible.pixels, self.outputs.new(stem + "-flexible", ".mp4")))
        flops_saving = 100 - _pct(flexible.flops, static.flops)
        time_saving = 100 - _pct(flexible.seconds, static.seconds)
        patches = model.flexible.patches
        static_md = (f"### Static\n**{si(static.flops)}** · **{static.seconds:.2f} s** denoising\n\n"
                     f"native patch {patch_text(patches['native'])} in all {steps} steps")
        weak = flexible.schedule.weak_steps
        flexible_md = (f"### Flexible ({budget:g}% budget)\n**{si(flexible.flops)}** "
                       f"({_saving(static.flops, flexible.flops, 'FLOPs')}) · **{flexible.seconds:.2f} s** "
                       f"({_saving(static.seconds, flexible.seconds, 'time')})\n\n"
                       + (f"all {steps} steps with the weak {patch_text(patches[mode])} patch" if weak == steps else
                          f"{weak} of {steps} steps weak: {_steps_text(flexible.schedule, patches)}"))
        if math.isfinite(time_saving) and time_saving < flops_saving / 2:
            flexible_md += ("\n\nTime saves less than FLOPs here: time follows FLOPs where the model is "
                            "compute-bound; a small model at batch 1 is bound by per-call overhead, and the hatched "
                            "steps run two forwards (see BENCHMARKS.md).")
        agreement_md = (f"**Agreement** of flexible with static (same seed): PSNR **{_db(agreement['psnr'])}**, "
                        f"SSIM **{agreement['ssim']:.3f}** (1 = identical) · condition: *{result.condition_text}* · "
                        f"ran on **{model.device_name}** · {model.variant} variant")
        if not model.flexify_trained:
            agreement_md += " · ⚠️ weak patch size untrained (initialisation only)"
        figure = plots.timeline([("Static", static.records), ("Flexible", flexible.records)], patches)
        raw = {"model": spec.name, "variant": model.variant, "device": model.device_name,
               "condition": result.condition_text, "seed": seed, "steps": steps, "guidance": guidance,
               "budget_percent": budget, "weak_mode": mode, "flexify_trained": model.flexify_trained,
               "flops_ratio": result.flops_ratio, "flops_saving_percent": flops_saving,
               "time_saving_percent": _finite(time_saving),
               "agreement": {"psnr": _finite(agreement["psnr"]), "ssim": agreement["ssim"],
                             "identical": math.isinf(agreement["psnr"])},
               "static": _run_json(static), "flexible": _run_json(flexible)}
        progress(1, desc="done")
        return ((display_image(static.pixels), display_image(flexible.pixels)), *videos, static_md, flexible_md,
                agreement_md, figure, raw)

    def sweep(self, model_name, class_label, prompt, seed, steps, guidance, variant, weak_mode, budgets,
              progress=gr.Progress(), request: gr.Request = None):
        from flexi_core.analysis import sweep
        from flexi_core.sampling import budget_schedule
        started = time.monotonic()
        spec = _spec(model_name)
        seed, steps, guidance = _numbers(seed, steps, guidance)
        if not budgets or not isinstance(budgets, list):
            raise ValueError("pick at least one budget to sweep")
        for b in budgets:
            _budget(b)
        progress(0, desc=f"loading {spec.name}")
        model = self.models.get(model_name, variant)
        mode = _weak_mode(model.flexible.weak_modes, weak_mode)
        usable, skipped = [], []
        for b in sorted(set(budgets), reverse=True):
            try:
                budget_schedule(model, b / 100, steps, guidance, mode)
                usable.append(b / 100)
            except ValueError as e:
                skipped.append(f"{b:g}%: {message_of(e)}")
        rows = sweep(model, usable, progress=self._progress(progress, request, started),
                     **_condition(spec, class_label, prompt), steps=steps, seed=seed, guidance=guidance,
                     weak_mode=mode)
        static_flops = rows[0]["flops"]  # flexi_core puts the 100% (static) run first
        gallery, table = [], []
        for r in rows:
            share = _pct(r["flops"], static_flops)
            gallery.append((display_image(r["sample"].pixels),
                            f"{100 * r['budget']:.0f}%" + (" (static)" if r["weak_steps"] == 0 else
                                                           f" · {r['seconds']:.2f} s")))
            table.append([round(100 * r["budget"]), r["weak_steps"], si(r["flops"]), round(share, 1),
                          round(r["seconds"], 3), round(r["psnr"], 2) if math.isfinite(r["psnr"]) else "∞",
                          round(r["ssim"], 4)])
        note = "" if not skipped else "Skipped (below what the weak model alone costs): " + "; ".join(skipped)
        raw = {"model": spec.name, "variant": model.variant, "device": model.device_name, "seed": seed,
               "steps": steps, "guidance": guidance, "weak_mode": mode, "skipped": skipped,
               "rows": [{"budget": r["budget"], "weak_steps": r["weak_steps"], "flops": r["flops"],
                         "seconds": r["seconds"], "psnr": _finite(r["psnr"]), "ssim": r["ssim"],
                         "per_step_flops": [s.flops for s in r["sample"].records]} for r in rows]}
        progress(1, desc="done")
        return gallery, plots.sweep(rows, static_flops), table, note, raw

    def explain(self, model_name, class_label, prompt, seed, steps, guidance, variant,
                progress=gr.Progress(), request: gr.Request = None):
        from flexi_core.analysis import filtered_updates, prediction_gap
        from flexi_core.sampling import encode_condition
        started = time.monotonic()
        spec = _spec(model_name)
        seed, steps, guidance = _numbers(seed, steps, guidance)
        check = self._progress(progress, request, started)
        check(0.0, f"loading {spec.name}")
        model = self.models.get(model_name, variant)
        condition = encode_condition(model, **_condition(spec, class_label, prompt))
        check(0.05, "weak vs native prediction at every step")
        gap = prediction_gap(model, condition, steps, seed, guidance)
        check(0.35, "sampling with one step's update filtered (5 runs)")
        filtered = filtered_updates(model, condition, steps, seed, guidance)
        gallery = [(display_image(filtered["reference"]), "unfiltered")]
        for c in filtered["cases"]:
            gallery.append((display_image(c["pixels"]), f"step {c['step']}: {c['keep']} only"))
        raw = {"model": spec.name, "variant": model.variant, "steps": steps, "seed": seed, "guidance": guidance,
               "prediction_gap": gap,
               "filtered_updates": [{k: _finite(v) if k == "psnr_to_reference" else v for k, v in c.items()
                                     if k != "pixels"} for c in filtered["cases"]]}
        check(1.0, "done")
        return plots.prediction_gap(gap), plots.filtered_updates(filtered), gallery, raw


def _wrap(fn, gpu_seconds: int | None = None):
    """User errors become messages and Stop ends a job quietly; with `gpu_seconds` (the generation jobs), ZeroGPU
    lends a GPU for the call (a no-op elsewhere) and the memory the job freed goes back to the system. Light events
    (controls, schedule preview) never ask for either."""
    handled = user_errors(fn, passthrough=(Cancelled,))

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return handled(*args, **kwargs)
        except Cancelled:
            raise gr.Error("stopped before the end; press the button again to run it", title="Stopped",
                           print_exception=False) from None
        finally:
            if gpu_seconds:
                release_memory()
    return gpu(duration=gpu_seconds)(run) if gpu_seconds else run


def build_demo(assets: Path | str | None = None, allow_download: bool = False, concurrency: int = 1,
               queue_size: int = 16) -> gr.Blocks:
    """The Blocks app; `assets` overrides flexi_core's assets folder (tests use tiny random-weight models)."""
    limit_malloc_arenas()
    app = FlexiDiTApp(Path(assets) if assets else None, allow_download)
    spec = get_spec(DEFAULT_MODEL)
    with gr.Blocks(title="FlexiDiT demo", delete_cache=(900, 1800)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                model_name = gr.Dropdown(_model_choices(), value=DEFAULT_MODEL, label="Model",
                                         info="the embedded models are small and run here, even on a CPU; the "
                                              "large public ones need their downloaded weights")
                class_label = gr.Dropdown(list(spec.class_names), value=spec.class_names[0], label="Class",
                                          info="what to draw", allow_custom_value=True)
                prompt = gr.Textbox(label="Prompt", info="describe what to draw: a shape, its colour, the "
                                                         "background (and for video, where it moves)",
                                    placeholder="a large red circle in the centre on a black background",
                                    visible=False, max_lines=2)
                budget = gr.Slider(5, 100, value=50, step=1, elem_id="budget",
                                   label="Compute budget (% of the static FLOPs)",
                                   info="100% = the ordinary (static) sampler; lower = more of the early steps "
                                        "run with big, cheap patches")
                preview = gr.Markdown(elem_id="preview")
                with gr.Row():
                    run_btn = gr.Button("Generate static + flexible", variant="primary", scale=3,
                                        elem_id="generate")
                    stop_btn = gr.Button("Stop", variant="stop", scale=1)
                gr.Examples(EXAMPLES, inputs=[model_name, class_label, prompt], example_labels=EXAMPLE_LABELS,
                            label="Examples: click one to fill in the model and what to draw")
                model_md = gr.Markdown(elem_classes="stats")
                with gr.Accordion("Sampling settings", open=True):
                    with gr.Row():
                        seed = gr.Number(0, precision=0, label="Seed",
                                         info="the starting noise; both runs use the same")
                        steps = gr.Number(spec.steps, precision=0, label="Denoising steps",
                                          info="more = slower, finer (1-1000)")
                    guidance = gr.Slider(0, 30, value=spec.guidance, step=0.5, label="Guidance scale",
                                         info="how strongly to follow the class or prompt; 1 or less turns "
                                              "classifier-free guidance off (half the FLOPs)")
                    variant = gr.Radio([("LoRA adapters on a frozen base", "lora"),
                                        ("shared: all weights fine-tuned", "shared")], value="lora",
                                       label="Flexible weights",
                                       info="how the model learned its big patches; the native patch is the "
                                            "original model either way")
                    weak_mode = gr.Radio(_weak_mode_choices(get_spec("shapes-video")), value="temporal",
                                         label="Weak patch (video)", visible=False,
                                         info="which big patch the cheap video steps use")
            with gr.Column(scale=3, min_width=420):
                with gr.Tabs():
                    with gr.Tab("Generate"):
                        slider = gr.ImageSlider(label="Left: static · right: flexible (drag the handle to compare)",
                                                elem_id="comparison",
                                                format="png", type="numpy", max_height=300, interactive=False,
                                                buttons=["download", "fullscreen"])
                        with gr.Row(visible=False) as video_row:
                            video_static = gr.Video(label="Static", autoplay=True, loop=True, interactive=False,
                                                    height=260)
                            video_flexible = gr.Video(label="Flexible", autoplay=True, loop=True,
                                                      interactive=False, height=260)
                        with gr.Row():
                            static_md = gr.Markdown("### Static\nPress **Generate**.", elem_classes="stats",
                                                    elem_id="static-stats")
                            flexible_md = gr.Markdown("### Flexible\n ", elem_classes="stats",
                                                      elem_id="flexible-stats")
                        agreement_md = gr.Markdown(elem_classes="stats")
                        gr.Markdown("#### Every denoising step: patch size (colour) and FLOPs (height)")
                        timeline = gr.Plot(show_label=False, format="png")
                        with gr.Accordion("Raw numbers (JSON)", open=False):
                            raw = gr.JSON(label="per-run and per-step FLOPs and seconds")
                    with gr.Tab("Budget sweep"):
                        gr.Markdown("One seed at several budgets: how far the result moves away from the static "
                                    "one, and how much time it saves, as the budget shrinks. Uses the model, "
                                    "class/prompt and sampling settings on the left.")
                        with gr.Row():
                            budgets = gr.CheckboxGroup([(f"{b}%", b) for b in SWEEP_BUDGETS],
                                                       value=list(SWEEP_BUDGETS), label="Budgets",
                                                       info="100% (the static run) is always included", scale=3)
                            sweep_btn = gr.Button("Run sweep", variant="primary", scale=1)
                        sweep_gallery = gr.Gallery(label="Results by budget (numbers in the table below)",
                                                   columns=5, height=190, object_fit="contain", format="png")
                        sweep_note = gr.Markdown()
                        gr.Markdown("#### Agreement with the static sample and time, against FLOPs")
                        sweep_plot = gr.Plot(show_label=False, format="png")
                        sweep_table = gr.Dataframe(headers=["budget %", "weak steps", "FLOPs", "% of static FLOPs",
                                                            "seconds", "PSNR dB", "SSIM"], interactive=False,
                                                   label="Numbers (PSNR and SSIM against the static sample)")
                        with gr.Accordion("Raw numbers (JSON)", open=False):
                            sweep_raw = gr.JSON()
                    with gr.Tab("Why it works"):
                        gr.Markdown("Two observations from the paper, measured on the selected model with the "
                                    "class/prompt, seed, steps and guidance on the left.")
                        explain_btn = gr.Button("Run the analysis", variant="primary")
                        gr.Markdown("#### 1. How far the big-patch prediction is from the native one, step by step")
                        gap_plot = gr.Plot(show_label=False, format="png")
                        gr.Markdown("**What to see:** the weak (big-patch) prediction stays close to the native one "
                                    "in the early, noisy steps and drifts away in the late ones, which is why the "
                                    "cheap steps go first.")
                        gr.Markdown("#### 2. Keep only the low- or the high-frequency part of one step's update")
                        filter_plot = gr.Plot(show_label=False, format="png")
                        gr.Markdown("**What to see:** in an early step the low frequencies (coarse layout, colour) "
                                    "carry the update: keeping only them leaves the final image almost unchanged "
                                    "(high PSNR); in a late step the high frequencies (edges, detail) matter more, "
                                    "and big patches cannot draw those.")
                        filter_gallery = gr.Gallery(label="Final images: unfiltered, then with one step's update "
                                                          "filtered", columns=5, height=190, object_fit="contain",
                                                    format="png")
                        with gr.Accordion("Raw numbers (JSON)", open=False):
                            explain_raw = gr.JSON()

        common = [model_name, class_label, prompt, seed, steps, guidance, variant]
        # preprocess=False: handlers get the raw values and check them with messages that name the control
        # (Gradio's own range checks would answer 'Value 0 is less than minimum value 5')
        heavy = dict(concurrency_id="model", concurrency_limit=concurrency, show_progress="full", preprocess=False)
        light = dict(concurrency_limit=None, preprocess=False)
        gr.on([demo.load, model_name.change], _wrap(app.model_controls), [model_name, class_label],
              [class_label, prompt, weak_mode, steps, guidance, video_row], api_name="model_controls",
              show_progress="hidden", **light)
        gr.on([demo.load, model_name.change, variant.change], _wrap(app.model_status), [model_name, variant],
              model_md, api_name="model_status", show_progress="minimal", **light)
        gr.on([demo.load, model_name.change, variant.change, weak_mode.change, steps.change, guidance.change,
               budget.change], _wrap(app.schedule), [model_name, variant, weak_mode, steps, guidance, budget],
              preview, api_name="schedule", show_progress="hidden", **light)
        gr.on([demo.load, model_name.change, variant.change, weak_mode.change], _wrap(app.fit_budget),
              [model_name, variant, weak_mode, guidance, budget], budget, api_name="fit_budget",
              show_progress="hidden", **light)
        gen_event = run_btn.click(_wrap(app.generate, 120), [*common, weak_mode, budget],
                                  [slider, video_static, video_flexible, static_md, flexible_md, agreement_md,
                                   timeline, raw], api_name="generate", **heavy)
        sweep_event = sweep_btn.click(_wrap(app.sweep, 300), [*common, weak_mode, budgets],
                                      [sweep_gallery, sweep_plot, sweep_table, sweep_note, sweep_raw],
                                      api_name="sweep", **heavy)
        explain_event = explain_btn.click(_wrap(app.explain, 300), common,
                                          [gap_plot, filter_plot, filter_gallery, explain_raw],
                                          api_name="explain", **heavy)
        stop_btn.click(app.stop, None, None, api_name="stop", cancels=[gen_event, sweep_event, explain_event],
                       queue=False)
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    demo.flexidit = app  # handlers and caches, for tests and preloading
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False, **kwargs):
    """Launches with the app's look; returns what Blocks.launch returns."""
    return demo.launch(server_name=host, server_port=port, share=share, css=CSS,
                       theme=gr.themes.Soft(primary_hue="blue"), **kwargs)


__all__ = ["build_demo", "launch", "FlexiDiTApp"]
