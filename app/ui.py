"""The FlexiDiT demo: layout and events. All model work goes through flexi_core; this file only wires it to Gradio.

Events (each with an api_name, so gradio_client can drive them):
  /model_controls  model -> which condition/weak-mode controls apply, default steps and guidance
  /model_prompt    model, prompt -> the prompt, or the model's example prompt when the box is empty
  /model_status    model, variant -> what the model is and whether it is available here (loads it once)
  /schedule        the schedule a budget implies, before running
  /fit_budget      the budget slider's minimum (the model's floor), and a budget below it moved into range
  /generate        static and flexible sample from the same seed, and the static model with fewer steps at no more
                   than the flexible FLOPs; their FLOPs, time, agreement, what the judge reads, step timeline
  /sweep           one seed at several budgets
  /explain         the paper's two observations on the loaded model
  /stop            stops the running (or queued) job of this browser session

A public demo: every heavy event has a cap on its work (runs x steps), stops when its visitor presses Stop, when its
client disconnects or after a time limit, reports success only once its files read back, and shows the visitor's
text as text. The whole app refuses request bodies above a few hundred KiB (runtime.BodyLimit).

One file of ~920 lines, as single-file Gradio apps are: the layout and its event wiring read best together, and
the handlers only format what flexi_core returns.
"""
from __future__ import annotations

import functools
import inspect
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from flexi_core.errors import FlexiDiTError
from flexi_core.inputs import SAMPLERS, Settings, settings
from flexi_core.registry import SPECS, get_spec, trained

from . import plots
from .plots import patch_text, si
from .runtime import (MAX_BODY_BYTES, MAX_WORK_STEPS, STORAGE_TEXT, BodyLimit, ClientGone, Job, ModelCache,
                      ModelUnavailable, OutputDir, StopBoard, StopPressed, Stopped, TimeLimit, as_html_text,
                      as_markdown_text, check_work, display_image, display_video, gpu,
                      limit_malloc_arenas, log, release_memory, user_errors, user_message)

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
SWEEP_CHECKED = (75, 55)  # checked at first: on the image models' frontier 40% and 25% are below fewer steps
MAX_SWEEP_BUDGETS = 12  # besides the cap on steps: each budget is a picture written and shown
TIME_LIMIT_S = 600.0  # one heavy job; a 1000-step generate of the embedded models takes ~1 minute on 2 CPU cores
EXAMPLES = [
    ["shapes", "red circle", ""],
    ["shapes", "yellow diamond", ""],  # blue objects' dark backgrounds differ most often (assets/README.md)
    ["shapes-text", "red circle", "a large yellow diamond in the centre on a dark blue background"],
    ["shapes-text", "red circle", "a small green square in the top left on a white background"],
    ["shapes-text", "red circle", "a large crimson disc on a white background"],  # other words: see assets/README
    ["shapes-video", "red circle", "a red circle moving right on a black background"],
    ["shapes-video", "red circle", "a blue triangle going up"],
    ["shapes-textured", "red striped circle", ""],
    ["shapes-text-textured", "red circle", "a red striped circle on a white background"],
]
EXAMPLE_LABELS = ["shapes: red circle", "shapes: yellow diamond", "shapes-text: yellow diamond on dark blue",
                  "shapes-text: small green square, top left", "shapes-text: crimson disc (in other words)",
                  "shapes-video: red circle moving right",
                  "shapes-video: blue triangle going up", "shapes-textured: red striped circle",
                  "shapes-text-textured: red striped circle on white"]
PROMPT_PLACEHOLDER = "a large red circle in the centre on a black background"


def example_prompt(model_name: str) -> str:
    """What an empty prompt box shows when a text model is picked: its first example, else the placeholder."""
    return next((prompt for name, _, prompt in EXAMPLES if name == model_name), PROMPT_PLACEHOLDER)


# ImageNet classes of a few examples, named here so that the list reads as names even without the checkpoint (whose
# model_index.json carries all 1000 names: `class_choices` uses it once the weights are on this server).
IMAGENET_EXAMPLES = {207: "golden retriever", 88: "macaw", 279: "arctic fox", 360: "otter", 387: "lesser panda",
                     417: "balloon", 974: "geyser", 979: "valley"}
CSS = """
.stats p { margin: 0.15em 0; }
#preview { min-height: 2.5em; }
#status { min-height: 1.6em; }
footer { display: none !important; }
"""
NO_LATEX = []  # Markdown outputs that echo a visitor's text render no $$…$$ either


# --- inputs: the app's one validation layer --------------------------------------------------------------------------
# Events run with preprocess=False, so a handler gets what the browser or an API client sent: this layer turns those
# raw values into checked settings (flexi_core.inputs does the checking) with messages that name the control.

def _spec(model_name):
    if not isinstance(model_name, str):
        raise FlexiDiTError(f"choose a model by name: one of {', '.join(SPECS)}")
    if model_name not in SPECS:
        raise FlexiDiTError(f"unknown model {model_name[:60]!r}; choose one of: {', '.join(SPECS)}")
    return get_spec(model_name)


def _number(value, name: str):
    """A raw number: empty boxes get a message instead of a silent default; whole floats (JSON 3.0) become ints."""
    if value is None or value == "":
        raise FlexiDiTError(f"the {name} is empty; enter a number")
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return value


def _budget(budget) -> float:
    """Percent of the static FLOPs -> the fraction flexi_core takes."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 100:
        raise FlexiDiTError(f"the compute budget must be a percentage above 0 and at most 100, got {budget!r}"[:200])
    return budget / 100


def _weak_mode(spec, weak_mode) -> str:
    """Image models have one weak patch size (the control is hidden and sends whatever it holds); video models
    have two to choose from, and an unknown one is refused by flexi_core.inputs."""
    modes = list(spec.weak_patches)
    if len(modes) == 1 or not weak_mode:
        return modes[0] if not (isinstance(weak_mode, str) and weak_mode in modes) else weak_mode
    return weak_mode if isinstance(weak_mode, str) else str(weak_mode)[:40]


def _condition(spec, class_label, prompt) -> dict:
    """One class or prompt (flexi_core would take a list as a batch of conditions)."""
    if spec.conditioning == "class":
        if class_label is not None and (not isinstance(class_label, (str, int)) or isinstance(class_label, bool)):
            raise FlexiDiTError(f"the class must be one name or number, got {class_label!r}"[:200])
        return {"class_label": class_label}
    if prompt is not None and not isinstance(prompt, str):
        raise FlexiDiTError("the prompt must be text")
    return {"prompt": prompt}


@dataclass(frozen=True)
class RunInputs(Settings):
    """flexi_core's checked Settings (with its `guided` rule), plus what the app adds: model, variant, condition."""
    spec: object
    variant: str
    condition: dict


def run_inputs(model_name, class_label, prompt, seed, steps, guidance, variant, weak_mode=None,
               sampler=None) -> RunInputs:
    """Every heavy event's settings, checked once (flexi_core.inputs.settings); FlexiDiTError names what to change."""
    spec = _spec(model_name)
    if variant not in ("lora", "shared"):
        raise FlexiDiTError(f"variant must be one of ('lora', 'shared'), not {str(variant)[:40]!r}")
    seed, steps, guidance = (_number(v, name) for v, name in ((seed, "seed"), (steps, "number of steps"),
                                                               (guidance, "guidance scale")))
    run = settings(spec, steps=steps, guidance=guidance, seed=seed, weak_mode=_weak_mode(spec, weak_mode),
                   sampler=sampler)
    return RunInputs(**vars(run), spec=spec, variant=variant, condition=_condition(spec, class_label, prompt))


# --- text helpers ---------------------------------------------------------------------------------------------------

def _step_range(first: int, last: int) -> str:
    return f"step {first}" if first == last else f"steps {first}-{last}"


def _steps_text(schedule, patches) -> str:
    """'steps 1-3 native 2×2, steps 4-17 weak 4×4, steps 18-25 native 2×2' for the conditional pass."""
    return ", ".join(f"{_step_range(first, last)} {'native' if mode == 'native' else 'weak'} "
                     f"{patch_text(patches[mode])}" for mode, first, last in schedule.runs())


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


def _warning(error: BaseException) -> str:
    return f"⚠️ {as_markdown_text(user_message(error))}"


def _judge_lines(model, result, assets) -> dict | None:
    """What the judge reads in each result, for the embedded models (flexi_core.shapes.reading)."""
    if not model.spec.embedded:
        return None
    from flexi_core.shapes.reading import judge_readings
    return judge_readings(model, result.condition_text, result.runs, assets)


def _run_json(sample) -> dict:
    return {"flops": sample.flops, "seconds": sample.seconds, "decode_seconds": sample.decode_seconds,
            "weak_steps": sample.schedule.weak_steps, "schedule": sample.schedule.label,
            "per_step": [{"step": r.step, "timestep": r.timestep, "cond_mode": r.cond_mode,
                          "uncond_mode": r.uncond_mode, "cond_patch": list(r.cond_patch),
                          "uncond_patch": list(r.uncond_patch) if r.uncond_patch else None,
                          "flops": r.flops, "seconds": r.seconds} for r in sample.records]}


def _time_notes(static_s: float, flexible_s: float, flops_saving: float) -> tuple[str, str]:
    """(verdict, note) from flexi_core's time_verdict: a saving only beyond the noise, and plainly when time rose."""
    from flexi_core.generate import TIME_NOISE, time_verdict
    verdict = time_verdict(static_s, flexible_s)
    noise = f"±{TIME_NOISE:.0%}"
    if verdict.startswith("took"):
        note = (f"Time rose here although FLOPs fell by {flops_saving:.0f}%: a small model at batch 1 is bound by "
                "per-call overhead rather than FLOPs, the hatched steps run two forwards, and other load on the "
                "machine adds noise (see BENCHMARKS.md).")
    elif verdict.startswith("about"):
        note = (f"The time difference is within the noise of one run ({noise}), so no time saving is claimed; "
                "time follows FLOPs where the model is compute-bound (see BENCHMARKS.md).")
    elif 100 * (1 - flexible_s / static_s) < flops_saving / 2:
        note = ("Time saves less than FLOPs here: time follows FLOPs where the model is compute-bound; a small model "
                "at batch 1 is bound by per-call overhead, and the hatched steps run two forwards (see BENCHMARKS.md).")
    else:
        note = ""
    return verdict, note


def _model_choices():
    """Every public model (the app says when its weights are missing) and the embedded models trained so far."""
    return [(f"{name}: {s.description}" if s.embedded else f"{name}: {s.description} (public; needs its weights)",
             name) for name, s in SPECS.items() if trained(s)]


def _weak_mode_choices(spec):
    explain = {"temporal": "merges pairs of frames", "spatial": "bigger squares, every frame", "weak": ""}
    return [(f"{mode}: patch {patch_text(p)}" + (f", {explain[mode]}" if explain.get(mode) else ""), mode)
            for mode, p in spec.weak_patches.items()]


@functools.lru_cache(maxsize=None)
def _checkpoint_class_names(repo: str) -> tuple:
    """ImageNet names from a public checkpoint's model_index.json (DiTPipeline's id2label), if the checkpoint is in
    the local Hugging Face cache; () otherwise (nothing is downloaded for this)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        path = try_to_load_from_cache(repo, "model_index.json")
        if not isinstance(path, str):
            return ()
        labels = json.loads(Path(path).read_text()).get("id2label") or {}
        return tuple(labels[str(i)].split(",")[0].strip() for i in range(len(labels)))
    except (OSError, ValueError, KeyError, ImportError):
        return ()


def class_choices(spec) -> tuple[list, str]:
    """(dropdown choices, info) for a class-conditioned model: the embedded models' names; DiT-XL/2's 1000 ImageNet
    names when its checkpoint is here, else a few named example ids (any id 0-999 can be typed)."""
    if spec.class_names:
        return list(spec.class_names), "what to draw"
    names = _checkpoint_class_names(spec.repo) if spec.repo else ()
    if names:
        return [(f"{i}: {name}", str(i)) for i, name in enumerate(names)], "what to draw: an ImageNet class"
    return ([(f"{i}: {name}", str(i)) for i, name in IMAGENET_EXAMPLES.items()],
            "what to draw: an ImageNet class id, 0-999 (a few named examples; all 1000 names come with the weights)")


def _choice_values(choices) -> list:
    return [c[1] if isinstance(c, tuple) else c for c in choices]


# --- the app ----------------------------------------------------------------------------------------------------------

GENERATE_OUTPUTS = ("slider", "video_static", "video_flexible", "sheet_static", "sheet_flexible", "static_md",
                    "flexible_md", "agreement_md", "timeline", "downloads", "fewer_image", "fewer_md", "status", "raw")
SWEEP_OUTPUTS = ("sweep_gallery", "sweep_plot", "sweep_table", "sweep_note", "status", "sweep_raw")
EXPLAIN_OUTPUTS = ("gap_plot", "filter_plot", "filter_gallery", "status", "explain_raw")


class FlexiDiTApp:
    """Event handlers around one model cache, one output folder and the Stop presses of the browser sessions."""

    def __init__(self, assets: Path | None = None, allow_download: bool = False,
                 time_limit_s: float | None = TIME_LIMIT_S, max_work_steps: int = MAX_WORK_STEPS):
        self.models = ModelCache(assets, allow_download)
        self.outputs = OutputDir()
        self.stops = StopBoard()
        self.time_limit_s, self.max_work_steps = time_limit_s, max_work_steps
        self._running: dict[str, int] = {}
        self._running_lock = threading.Lock()

    # stop -----------------------------------------------------------------------------------------------------
    def stop(self, request: gr.Request = None):
        """Marks this browser session's jobs to stop: the running one ends at its next step (inside its queue slot,
        so the concurrency limit holds), a queued one as soon as it starts. Its own status line then says so."""
        session = request.session_hash if request is not None else None
        if session:
            self.stops.press(session)
        busy = bool(session and (self.running(session) or self.stops.waiting(session)))
        # a running (or asked-for) job writes its own "Stopped …" line (this answer could arrive after it and must
        # not cover it)
        return gr.skip() if busy else "**Stopped.** Nothing of this page was running."

    def buttons(self, busy: bool, clicked: int):
        """The handler that sets the page's buttons while a job of it runs (disabled, the clicked one saying
        "Running") or after; the click is the moment this page asked for the job, which a Stop pressed before the
        job starts refers to."""
        labels = ("Generate static + flexible", "Run sweep", "Run the analysis")

        def update(request: gr.Request = None):
            session = request.session_hash if request is not None else None
            if busy:
                self.stops.ask(session)
            else:
                self.stops.take_ask(session)
            return [gr.update(interactive=not busy, value=("Running… (Stop ends it)" if busy and i == clicked
                                                           else label)) for i, label in enumerate(labels)]
        return update

    def running(self, session: str | None = None) -> int:
        """How many heavy jobs are inside their handler now: of one browser session (its `session_hash`), or of all
        sessions; a job counts until its handler has returned, so 0 means its work has really ended."""
        with self._running_lock:
            return self._running.get(session, 0) if session else sum(self._running.values())

    def _progress(self, progress):
        """flexi_core's progress(fraction, text), forwarded to Gradio; it checks the job first (Stop, client gone,
        time limit) and remembers where the job is, for the status line."""
        def update(fraction: float, text: str):
            job = _job_now()
            if job is not None:
                job.where = text
                job.check()
            progress(min(max(fraction, 0.0), 1.0), desc=text)
        return update

    def heavy(self, fn, outputs: tuple, gpu_seconds: int | None = None):
        """A heavy event: one Job around it (Stop, client gone, time limit; a Stop pressed while it was queued
        counts), user errors as messages, the memory it freed handed back. On Stop every output keeps its value
        and the status line says "stopped" calmly; with the client gone nothing is sent; past the time limit the
        visitor gets one line. ZeroGPU lends a GPU for the call where there is one (a no-op elsewhere)."""
        handled = user_errors(fn, passthrough=(Stopped,))
        signature = inspect.signature(fn)
        status = outputs.index("status")

        @functools.wraps(fn)
        def run(*args, **kwargs):
            bound = signature.bind_partial(*args, **kwargs)
            request = bound.arguments.get("request")
            session = getattr(request, "session_hash", None)
            job = Job(session, self.stops, self.time_limit_s)
            with self._running_lock:
                self._running[session] = self._running.get(session, 0) + 1
            try:
                with job:
                    job.check()
                    return handled(*args, **kwargs)
            except StopPressed as e:
                kept = [gr.skip()] * len(outputs)
                kept[status] = (f"**Stopped** {_where(e)} after {job.elapsed:.1f} s; the result shown is the "
                                "previous one (if any). Press the button again to run it.")
                return kept
            except ClientGone as e:
                log.info("%s: the client went away %s after %.1f s; the job stopped", fn.__name__, _where(e),
                         job.elapsed)
                return [gr.skip()] * len(outputs)
            except TimeLimit as e:
                raise gr.Error(as_html_text(f"stopped {_where(e)}: a job may run at most {self.time_limit_s:g} s "
                                            "on this server; try fewer steps"), title="Time limit",
                               print_exception=False) from None
            finally:
                with self._running_lock:
                    left = self._running.get(session, 1) - 1
                    if left:
                        self._running[session] = left
                    else:
                        self._running.pop(session, None)
                release_memory()
        return gpu(duration=gpu_seconds)(run) if gpu_seconds else run

    # light events -------------------------------------------------------------------------------------------------
    def model_controls(self, model_name, class_label):
        """Shows the class box or the prompt box, the weak-mode choice for video, the model's defaults, and the
        image slider (images) or the two frame sheets (video: a slider would split a sheet down the middle)."""
        spec = _spec(model_name)
        is_class, is_video = spec.conditioning == "class", spec.modality == "video"
        choices, info = class_choices(spec) if is_class else ([], "")
        values = _choice_values(choices)
        label_value = class_label if class_label in values else (values[0] if values else None)
        return (
            gr.update(visible=is_class, choices=choices, value=label_value, info=info) if is_class else
            gr.update(visible=False),
            gr.update(visible=not is_class),
            gr.update(visible=len(spec.weak_patches) > 1),  # fixed choices: updating them races other events
            gr.update(value=spec.steps),
            gr.update(value=spec.guidance),
            gr.update(value=spec.sampler),
            gr.update(visible=is_video),
            gr.update(visible=not is_video),
            gr.update(visible=is_video),
            gr.update(value=round(100 * spec.budget)),  # fit_budget runs next: the floor of the weak mode shown
        )

    def model_prompt(self, model_name, prompt):
        """An empty prompt box gets the picked text model's example, so that Generate draws something; a typed prompt
        stays."""
        typed = prompt if isinstance(prompt, str) else ""
        return typed if _spec(model_name).conditioning == "class" or typed.strip() else example_prompt(model_name)

    def model_status(self, model_name, variant):
        """One line about the model: what it is, the device, and whether its flexible weights are trained."""
        spec = _spec(model_name)
        try:
            model = self.models.get(model_name, variant)
        except ModelUnavailable as e:
            return f"⚠️ **{spec.name} cannot run here:** {as_markdown_text(e.reason)}."
        except FlexiDiTError as e:
            return f"⚠️ **{spec.name} cannot be loaded:** {as_markdown_text(user_message(e))}"
        patches = ", ".join(f"{m} {patch_text(p)}" for m, p in model.flexible.patches.items())
        text = (f"**{spec.name}**: {spec.description}. Patch sizes: {patches}. Runs on **{model.device_name}**.")
        if not model.flexify_trained:
            text += (f"\n\n⚠️ No trained flexible weights for the *{model.variant}* variant yet: the weak patch "
                     "size runs its untrained initialisation, so expect the flexible result to drift from the "
                     "static one.")
        return text

    def _flops_context(self, spec, variant, mode):
        """(FLOPs of one forward per mode, patches, note) from the loaded model, or, when a public model's weights
        are not here, from its architecture (flexi_core's formulas need no weights)."""
        from flexi_core.flops import spec_flops
        try:
            model = self.models.get(spec.name, variant)
        except ModelUnavailable:
            patches = {"native": spec.native_patch, **spec.weak_patches}
            return ({m: spec_flops(spec, p) for m, p in patches.items()}, patches,
                    " *(from the architecture; the weights are not available here)*")
        return model.flops_of(), model.flexible.patches, ""

    def schedule(self, model_name, variant, weak_mode, steps, guidance, budget, sampler=None):
        """The schedule the budget implies, as one line (warnings instead of errors: this runs while typing).
        Uses flexi_core's run_schedule, which is what sampling.budget_schedule runs on a loaded model."""
        from flexi_core.sampling import run_schedule
        from flexi_core.schedule import Schedule, total_flops
        try:
            run = run_inputs(model_name, None, None, 0, steps, guidance, variant, weak_mode, sampler)
            fraction = _budget(budget)
            flops_of, patches, note = self._flops_context(run.spec, run.variant, run.weak_mode)
            sched = run_schedule(fraction, run, flops_of)
            flexible = total_flops(sched, flops_of, run.guided)
            static = total_flops(Schedule.static(run.steps, run.weak_mode), flops_of, run.guided)
        except (FlexiDiTError, ModelUnavailable) as e:
            return _warning(e)
        steps, mode = run.steps, run.weak_mode
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
        if not sched.weak_guidance:
            text += (" At this budget the weak steps run without guidance (no unconditional pass: half their FLOPs, "
                     "dotted in the timeline), so the same FLOPs buy more native steps at the end.")
        return text

    def fit_budget(self, model_name, variant, weak_mode, guidance, budget):
        """The slider's minimum follows the model's floor (flexi_core.schedule.budget_floor: every step weak); a
        budget below it moves to the middle of the reachable range, and the visitor is told that it moved."""
        from flexi_core.schedule import budget_floor, percent_up
        try:
            spec = _spec(model_name)
            mode = _weak_mode(spec, weak_mode)
            if mode not in spec.weak_patches:
                return gr.update()
            flops_of, _, _ = self._flops_context(spec, variant if variant in ("lora", "shared") else "lora", mode)
            guided = isinstance(guidance, (int, float)) and not isinstance(guidance, bool) and guidance > 1
            floor = budget_floor(flops_of, guided, mode)
        except (FlexiDiTError, ModelUnavailable):
            return gr.update()
        floor_text = percent_up(floor)
        minimum = min(100, math.ceil(100 * floor * (1 - 1e-12)))  # the slider moves in whole percent
        info = (f"100% = the ordinary (static) sampler; {spec.name} reaches down to {floor_text} (every step with "
                "the weak patch)")
        if isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget >= 100 * floor:
            return gr.update(minimum=minimum, info=info)
        moved = min(100, math.ceil((minimum + 100) / 2))
        shown = f"{budget:g}%" if isinstance(budget, (int, float)) and not isinstance(budget, bool) else "it"
        gr.Info(as_html_text(f"Compute budget moved from {shown} to {moved}%: on {spec.name} the weak patch alone "
                             f"costs {floor_text} of the static FLOPs."), title="Budget moved")
        return gr.update(minimum=minimum, value=moved, info=info)

    def frontier(self, model_name, sampler, weak_mode):
        """The model's quality-vs-FLOPs frontier for this sampler (and weak mode), from the project's own evaluate
        run shipped with the card: the plot, the command that made it and one sentence on where FlexiDiT pays."""
        from flexi_core.shapes.frontier import command, shipped, summary
        try:
            spec = _spec(model_name)
            mode = _weak_mode(spec, weak_mode)
        except FlexiDiTError as e:
            return None, _warning(e)
        found = shipped(spec.name, sampler, mode if len(spec.weak_patches) > 1 else None) \
            if sampler in SAMPLERS and mode in spec.weak_patches else None
        if found is None:
            return None, (f"No frontier run ships for {spec.name} with {SAMPLERS.get(sampler, 'this sampler')}"
                          + (f" and the {mode} weak patch" if len(spec.weak_patches) > 1 else "") + ".")
        plot, result = found
        return str(plot), (f"{as_markdown_text(summary(result))}. Black line: the static model at N steps; each "
                           f"coloured curve: FlexiDiT at N steps and budgets "
                           f"{', '.join(f'{b:.0%}' for b in result['budgets'])}; a point above the line beats taking "
                           f"fewer steps at the same FLOPs. {result['samples']} samples per point, judged by the "
                           f"shipped judge; made by `{command(result)}` (BENCHMARKS.md §3).")

    def clear_results(self):
        """After a change of model: the result panes keep their content but lose any error badge of a failed job
        (a completed event on an output clears its status)."""
        return [gr.skip()] * len(GENERATE_OUTPUTS)

    # heavy events -------------------------------------------------------------------------------------------------
    def generate(self, model_name, class_label, prompt, seed, steps, guidance, variant, weak_mode, budget,
                 sampler=None, progress=gr.Progress(), request: gr.Request = None):
        from flexi_core.generate import generate
        run = run_inputs(model_name, class_label, prompt, seed, steps, guidance, variant, weak_mode, sampler)
        fraction = _budget(budget)
        spec, steps, seed, guidance, mode = run.spec, run.steps, run.seed, run.guidance, run.weak_mode
        check_work(steps, 3, "static + flexible + fewer steps", self.max_work_steps)
        progress(0, desc=f"loading {spec.name}")
        model = self.models.get(spec.name, run.variant)
        result = generate(model, **run.condition, budget=fraction, steps=steps, seed=seed, guidance=guidance,
                          sampler=run.sampler, weak_mode=mode, compare=True, fewer_steps=True,
                          progress=self._progress(progress))
        static, flexible, fewer = result.static, result.flexible, result.fewer
        agreement = result.agreement
        judged = _judge_lines(model, result, self.models.assets)
        flops_saving = 100 - _pct(flexible.flops, static.flops)
        time_saving = 100 - _pct(flexible.seconds, static.seconds)
        verdict, time_note = _time_notes(static.seconds, flexible.seconds, flops_saving)
        raw = {"model": spec.name, "variant": model.variant, "device": model.device_name,
               "condition": result.condition_text, "seed": seed, "steps": steps, "guidance": guidance,
               "sampler": run.sampler, "budget_percent": budget, "weak_mode": mode,
               "flexify_trained": model.flexify_trained,
               "flops_ratio": result.flops_ratio, "flops_saving_percent": flops_saving,
               "time_saving_percent": _finite(time_saving), "time_verdict": verdict,
               "agreement": {"psnr": _finite(agreement["psnr"]), "ssim": agreement["ssim"],
                             "identical": math.isinf(agreement["psnr"])},
               "static": _run_json(static), "flexible": _run_json(flexible),
               "fewer_steps": {"steps": fewer.schedule.steps, **_run_json(fewer)} if fewer else None,
               "judge": judged}

        # files first, each read back: a full disk ends here with a message, never as a "successful" empty result
        progress(0.99, desc="saving the results")
        stem = f"{spec.name}-seed{seed}-{budget:g}pct"
        pictures = [self.outputs.save(display_image(s.pixels), f"{stem}-{name}")
                    for name, s in (("static", static), ("flexible", flexible))]
        fewer_picture = self.outputs.save(display_image(fewer.pixels), f"{stem}-fewer-steps") if fewer else None
        videos = [None, None]
        if spec.modality == "video":
            videos = [self.outputs.save(display_video(s.pixels), f"{stem}-{name}")
                      for name, s in (("static", static), ("flexible", flexible))]
        downloads = [*pictures, *(f for f in [fewer_picture, *videos] if f), self.outputs.save_json(raw, stem)]

        patches = model.flexible.patches
        static_md = (f"### Static\n**{si(static.flops)}** · **{static.seconds:.2f} s** denoising\n\n"
                     f"native patch {patch_text(patches['native'])} in all {steps} steps")
        weak = flexible.schedule.weak_steps
        flexible_md = (f"### Flexible ({budget:g}% budget)\n**{si(flexible.flops)}** "
                       f"({_saving(static.flops, flexible.flops, 'FLOPs')}) · **{flexible.seconds:.2f} s** "
                       f"({verdict})\n\n"
                       + (f"all {steps} steps with the weak {patch_text(patches[mode])} patch" if weak == steps else
                          f"{weak} of {steps} steps weak: {_steps_text(flexible.schedule, patches)}"))
        if time_note:
            flexible_md += "\n\n" + time_note
        fewer_md = ("### Static, fewer steps\nthe obvious alternative to a budget, the static model with the most "
                    "steps that fit in the flexible run's FLOPs: " + (
                        f"**{fewer.schedule.steps} of {steps} steps**, **{si(fewer.flops)}** (the flexible run: "
                        f"{si(flexible.flops)}) · **{fewer.seconds:.2f} s**. FlexiDiT pays where it draws what was "
                        "asked more often than this" if fewer else
                        "none here: " + ("the flexible run costs as much as the static one"
                                         if flexible.flops >= static.flops else "not even one static step fits")))
        if judged:
            static_md, flexible_md, fewer_md = (md + (f"\n\n**judge:** {as_markdown_text(judged[name])}"
                                                      if name in judged else "")
                                                for md, name in ((static_md, "static"), (flexible_md, "flexible"),
                                                                 (fewer_md, "fewer_steps")))
        agreement_md = (f"**Agreement** of flexible with static (same seed): PSNR **{_db(agreement['psnr'])}**, "
                        f"SSIM **{agreement['ssim']:.3f}** (1 = identical) · condition: "
                        f"*{as_markdown_text(result.condition_text)}* · ran on **{model.device_name}** · "
                        f"{model.variant} variant")
        if spec.modality == "video":
            agreement_md += (f" · each video: {static.pixels.shape[0]} frames, looping; a moving shape bounces off "
                             "the edges, as in the training videos (one moving right may turn back left)")
        if not model.flexify_trained:
            agreement_md += " · ⚠️ weak patch size untrained (initialisation only)"
        figure = plots.timeline([("Static", static.records), ("Flexible", flexible.records)], patches)
        progress(1, desc="done")
        video = spec.modality == "video"
        return (None if video else tuple(pictures), *videos, *(pictures if video else (None, None)),
                static_md, flexible_md, agreement_md, figure, downloads, fewer_picture, fewer_md,
                f"✓ Done: {' + '.join(n.replace('_', ' ') for n in result.runs)} in "
                f"{sum(s.seconds for s in result.runs.values()):.2f} s of "
                "denoising.", raw)

    def sweep(self, model_name, class_label, prompt, seed, steps, guidance, variant, weak_mode, budgets,
              sampler=None, progress=gr.Progress(), request: gr.Request = None):
        from flexi_core.analysis import sweep
        from flexi_core.sampling import budget_schedule
        run = run_inputs(model_name, class_label, prompt, seed, steps, guidance, variant, weak_mode, sampler)
        if not budgets or not isinstance(budgets, list):
            raise FlexiDiTError("pick at least one budget to sweep")
        if len(budgets) > MAX_SWEEP_BUDGETS:
            raise FlexiDiTError(f"a sweep takes at most {MAX_SWEEP_BUDGETS} budgets, got {len(budgets)}")
        chosen = sorted({b for b in budgets if _budget(b)} | {100}, reverse=True)  # percent as sent (55, not 55.0…1)
        check_work(run.steps, len(chosen), f"this sweep of {len(chosen)} budgets", self.max_work_steps)
        spec, steps = run.spec, run.steps
        progress(0, desc=f"loading {spec.name}")
        model = self.models.get(spec.name, run.variant)
        usable, skipped = [], []
        for b in chosen:
            try:
                budget_schedule(model, b / 100, steps, run.guidance, run.weak_mode, sampler=run.sampler)
                usable.append(b / 100)
            except FlexiDiTError as e:
                skipped.append(f"{b:g}%: {user_message(e)}")
        rows = sweep(model, usable, progress=self._progress(progress), **run.condition, steps=steps, seed=run.seed,
                     guidance=run.guidance, sampler=run.sampler, weak_mode=run.weak_mode)
        static_flops = rows[0]["flops"]  # flexi_core puts the 100% (static) run first
        gallery, table = [], []
        for r in rows:
            share = _pct(r["flops"], static_flops)
            path = self.outputs.save(display_image(r["sample"].pixels),
                                     f"{spec.name}-seed{run.seed}-sweep-{100 * r['budget']:.0f}pct")
            gallery.append((path, f"{100 * r['budget']:.0f}%" + (" (static)" if r["weak_steps"] == 0 else
                                                                f" · {r['seconds']:.2f} s")))
            table.append([round(100 * r["budget"]), r["weak_steps"], si(r["flops"]), round(share, 1),
                          round(r["seconds"], 3), round(r["psnr"], 2) if math.isfinite(r["psnr"]) else "∞",
                          round(r["ssim"], 4)])
        note = "" if not skipped else ("Skipped (below what the weak model alone costs): "
                                       + as_markdown_text("; ".join(skipped)))
        raw = {"model": spec.name, "variant": model.variant, "device": model.device_name, "seed": run.seed,
               "steps": steps, "guidance": run.guidance, "sampler": run.sampler, "weak_mode": run.weak_mode,
               "skipped": skipped,
               "rows": [{"budget": r["budget"], "weak_steps": r["weak_steps"], "flops": r["flops"],
                         "seconds": r["seconds"], "psnr": _finite(r["psnr"]), "ssim": r["ssim"],
                         "per_step_flops": [s.flops for s in r["sample"].records]} for r in rows]}
        progress(1, desc="done")
        return (gallery, plots.sweep(rows, static_flops), table, note,
                f"✓ Done: the sweep ran {len(rows)} budgets.", raw)

    def explain(self, model_name, class_label, prompt, seed, steps, guidance, variant,
                progress=gr.Progress(), request: gr.Request = None):
        from flexi_core.analysis import filtered_updates, prediction_gap
        from flexi_core.sampling import encode_condition
        run = run_inputs(model_name, class_label, prompt, seed, steps, guidance, variant)
        spec, steps = run.spec, run.steps
        check = self._progress(progress)
        # the gap runs the native and each weak mode along one trajectory; the filter test samples 5 times
        check_work(steps, 1 + len(spec.weak_patches) + 5, "the analysis", self.max_work_steps)
        check(0.0, f"loading {spec.name}")
        model = self.models.get(spec.name, run.variant)
        condition = encode_condition(model, **run.condition)
        check(0.05, "weak vs native prediction at every step")
        gap = prediction_gap(model, condition, steps, run.seed, run.guidance)
        check(0.35, "sampling with one step's update filtered (5 runs)")
        filtered = filtered_updates(model, condition, steps, run.seed, run.guidance)
        stem = f"{spec.name}-seed{run.seed}-explain"
        gallery = [(self.outputs.save(display_image(filtered["reference"]), stem + "-unfiltered"), "unfiltered")]
        for c in filtered["cases"]:
            gallery.append((self.outputs.save(display_image(c["pixels"]), f"{stem}-{c['step']}-{c['keep']}"),
                            f"step {c['step']}: {c['keep']} only"))
        raw = {"model": spec.name, "variant": model.variant, "steps": steps, "seed": run.seed,
               "guidance": run.guidance, "prediction_gap": gap,
               "filtered_updates": [{k: _finite(v) if k == "psnr_to_reference" else v for k, v in c.items()
                                     if k != "pixels"} for c in filtered["cases"]]}
        check(1.0, "done")
        return (plots.prediction_gap(gap), plots.filtered_updates(filtered), gallery,
                "✓ Done: both observations measured.", raw)


def _job_now():
    from .runtime import _current_job
    return _current_job.get()


def _where(error: Stopped) -> str:
    """'at flexible step 12/25' (flexi_core's progress text 'flexible: step 12/25'), or 'before the first step'."""
    where = (error.args[0] if error.args else "") or "before the first step"
    return where if where.startswith("before") else "at " + where.replace(": step", " step")


def _light(fn):
    """Light events (controls, status, schedule preview): user errors as messages, nothing else."""
    return user_errors(fn)


class DemoBlocks(gr.Blocks):
    """gr.Blocks whose output files failing to reach Gradio's cache (disk full) give a visitor one line instead of
    Gradio's generic error ("upstream app raised an exception"): Gradio copies every output file (images, videos,
    plots, downloads) into its cache after the handler returned, out of the handler's reach."""

    async def postprocess_data(self, block_fn, predictions, state):
        try:
            return await super().postprocess_data(block_fn, predictions, state)
        except OSError as e:
            log.error("could not cache the outputs of %s: %s", getattr(block_fn, "name", "an event"), e)
            raise gr.Error(STORAGE_TEXT, title="Could not save the result", print_exception=False) from None


def build_demo(assets: Path | str | None = None, allow_download: bool = False, concurrency: int = 1,
               queue_size: int = 16, time_limit_s: float | None = TIME_LIMIT_S,
               max_work_steps: int = MAX_WORK_STEPS) -> gr.Blocks:
    """The Blocks app; `assets` overrides flexi_core's assets folder (tests use tiny random-weight models)."""
    if concurrency < 1 or queue_size < 1:
        raise ValueError(f"concurrency and queue_size must be at least 1, got {concurrency} and {queue_size}")
    limit_malloc_arenas()
    app = FlexiDiTApp(Path(assets) if assets else None, allow_download, time_limit_s, max_work_steps)
    spec = get_spec(DEFAULT_MODEL)
    with DemoBlocks(title="FlexiDiT demo", delete_cache=(900, 1800)) as demo:
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
                                    placeholder=PROMPT_PLACEHOLDER,
                                    visible=False, max_lines=2, max_length=500, elem_id="prompt")
                budget = gr.Slider(5, 100, value=round(100 * spec.budget), step=1, elem_id="budget",
                                   label="Compute budget (% of the static FLOPs)",
                                   info="100% = the ordinary (static) sampler; lower = more of the early steps "
                                        "run with big, cheap patches")
                preview = gr.Markdown(elem_id="preview")
                with gr.Row():
                    run_btn = gr.Button("Generate static + flexible", variant="primary", scale=3,
                                        elem_id="generate")
                    stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
                status = gr.Markdown(elem_id="status", latex_delimiters=NO_LATEX)
                gr.Examples(EXAMPLES, inputs=[model_name, class_label, prompt], example_labels=EXAMPLE_LABELS,
                            label="Examples: click one to fill in the model and what to draw")
                model_md = gr.Markdown(elem_classes="stats", latex_delimiters=NO_LATEX)
                with gr.Accordion("Sampling settings", open=True):
                    with gr.Row():
                        seed = gr.Number(0, precision=0, label="Seed",
                                         info="the starting noise; both runs use the same")
                        steps = gr.Number(spec.steps, precision=0, label="Denoising steps",
                                          info="more = slower, finer (1-1000)")
                    guidance = gr.Slider(0, 30, value=spec.guidance, step=0.5, label="Guidance scale",
                                         info="how strongly to follow the class or prompt; 1 or less turns "
                                              "classifier-free guidance off (half the FLOPs)")
                    sampler = gr.Radio([(label, name) for name, label in SAMPLERS.items()], value=spec.sampler,
                                       label="Sampler", elem_id="sampler",
                                       info="the diffusers scheduler of every run (static, flexible, fewer steps)")
                    variant = gr.Radio([("LoRA adapters on a frozen base", "lora"),
                                        ("shared: all weights fine-tuned", "shared")], value="lora",
                                       label="Flexible weights",
                                       info="how the model learned its big patches; the native patch is the "
                                            "original model either way")
                    weak_mode = gr.Radio(_weak_mode_choices(get_spec("shapes-video")), value="temporal",
                                         label="Weak patch (video)", visible=False,
                                         info="which big patch the cheap video steps use")
            with gr.Column(scale=3, min_width=420, elem_id="results"):
                with gr.Tabs():
                    with gr.Tab("Generate"):
                        slider = gr.ImageSlider(label="Left: static · right: flexible (drag the handle to compare)",
                                                elem_id="comparison", format="png", type="filepath",
                                                max_height=300, interactive=False,
                                                buttons=["download", "fullscreen"])
                        with gr.Row(visible=False) as sheet_row:
                            sheet_static = gr.Image(label="Static: every frame, in reading order", type="filepath",
                                                    format="png", interactive=False, elem_id="sheet-static",
                                                    height=200)
                            sheet_flexible = gr.Image(label="Flexible: every frame, in reading order",
                                                      type="filepath", format="png", interactive=False,
                                                      elem_id="sheet-flexible", height=200)
                        with gr.Row(visible=False) as video_row:
                            video_static = gr.Video(label="Static", autoplay=True, loop=True, interactive=False,
                                                    height=260)
                            video_flexible = gr.Video(label="Flexible", autoplay=True, loop=True,
                                                      interactive=False, height=260)
                        with gr.Row():
                            static_md = gr.Markdown("### Static\nPress **Generate**.", elem_classes="stats",
                                                    elem_id="static-stats", latex_delimiters=NO_LATEX)
                            flexible_md = gr.Markdown("### Flexible\n ", elem_classes="stats",
                                                      elem_id="flexible-stats", latex_delimiters=NO_LATEX)
                        with gr.Row():
                            fewer_image = gr.Image(label="Static with fewer steps, at no more than the flexible "
                                                   "run's FLOPs", type="filepath", format="png", interactive=False,
                                                   elem_id="fewer-steps", height=200)
                            fewer_md = gr.Markdown("### Static, fewer steps\n ", elem_classes="stats",
                                                   elem_id="fewer-stats", latex_delimiters=NO_LATEX)
                        agreement_md = gr.Markdown(elem_classes="stats", elem_id="agreement",
                                                   latex_delimiters=NO_LATEX)
                        gr.Markdown("#### Every denoising step: patch size (colour) and FLOPs (height)")
                        timeline = gr.Plot(show_label=False, format="png")
                        downloads = gr.File(label="Download: both pictures (and videos) and the numbers (JSON)",
                                            file_count="multiple", interactive=False, elem_id="downloads")
                        with gr.Accordion("Raw numbers (JSON)", open=False):
                            raw = gr.JSON(label="per-run and per-step FLOPs and seconds")
                    with gr.Tab("Budget sweep"):
                        gr.Markdown("One seed at several budgets: how far the result moves away from the static "
                                    "one, and how much time it saves, as the budget shrinks. Uses the model, "
                                    "class/prompt and sampling settings on the left.")
                        with gr.Row():
                            budgets = gr.CheckboxGroup([(f"{b}%", b) for b in SWEEP_BUDGETS],
                                                       value=list(SWEEP_CHECKED), label="Budgets",
                                                       info="100% (the static run) is always included", scale=3)
                            sweep_btn = gr.Button("Run sweep", variant="primary", scale=1, elem_id="sweep")
                        sweep_gallery = gr.Gallery(label="Results by budget (numbers in the table below)",
                                                   columns=5, height=190, object_fit="contain", format="png")
                        sweep_note = gr.Markdown(latex_delimiters=NO_LATEX)
                        gr.Markdown("#### Agreement with the static sample and time, against FLOPs")
                        sweep_plot = gr.Plot(show_label=False, format="png")
                        sweep_table = gr.Dataframe(headers=["budget %", "weak steps", "FLOPs", "% of static FLOPs",
                                                            "seconds", "PSNR dB", "SSIM"], interactive=False,
                                                   label="Numbers (PSNR and SSIM against the static sample)")
                        with gr.Accordion("Raw numbers (JSON)", open=False):
                            sweep_raw = gr.JSON()
                        gr.Markdown("#### This model against taking fewer steps, over many seeds: its quality-vs-"
                                    "FLOPs frontier")
                        frontier_plot = gr.Image(show_label=False, type="filepath", interactive=False,
                                                 elem_id="frontier-plot")
                        frontier_md = gr.Markdown(elem_classes="stats", elem_id="frontier-note",
                                                  latex_delimiters=NO_LATEX)
                    with gr.Tab("Why it works"):
                        gr.Markdown("Two observations from the paper, measured on the selected model with the "
                                    "class/prompt, seed, steps and guidance on the left.")
                        explain_btn = gr.Button("Run the analysis", variant="primary", elem_id="explain")
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
        named = locals()
        outputs_of = lambda names: [named[n] for n in names]  # noqa: E731
        # preprocess=False: handlers get the raw values and check them with messages that name the control
        # (Gradio's own range checks would answer 'Value 0 is less than minimum value 5')
        heavy = dict(concurrency_id="model", concurrency_limit=concurrency, show_progress="full", preprocess=False)
        light = dict(concurrency_limit=None, preprocess=False)
        fit_budget = (_light(app.fit_budget), [model_name, variant, weak_mode, guidance, budget], budget)
        gr.on([demo.load, model_name.change], _light(app.model_controls), [model_name, class_label],
              [class_label, prompt, weak_mode, steps, guidance, sampler, video_row, slider, sheet_row, budget],
              api_name="model_controls", show_progress="hidden", **light) \
            .then(*fit_budget, api_name="model_budget", api_visibility="private", show_progress="hidden", **light)
        model_name.change(_light(app.model_prompt), [model_name, prompt], prompt, api_name="model_prompt",
                          show_progress="hidden", **light)
        gr.on([demo.load, model_name.change, variant.change], _light(app.model_status), [model_name, variant],
              model_md, api_name="model_status", show_progress="minimal", **light)
        gr.on([demo.load, model_name.change, variant.change, weak_mode.change, steps.change, guidance.change,
               budget.change, sampler.change], _light(app.schedule),
              [model_name, variant, weak_mode, steps, guidance, budget, sampler],
              preview, api_name="schedule", show_progress="hidden", **light)
        gr.on([variant.change, weak_mode.change], *fit_budget, api_name="fit_budget", show_progress="hidden",
              **light)
        gr.on([demo.load, model_name.change, sampler.change, weak_mode.change], _light(app.frontier),
              [model_name, sampler, weak_mode], [frontier_plot, frontier_md], api_name="frontier",
              show_progress="hidden", **light)
        model_name.change(app.clear_results, None, outputs_of(GENERATE_OUTPUTS), api_visibility="private",
                          show_progress="hidden", queue=False)

        buttons = [run_btn, sweep_btn, explain_btn]
        ui_only = dict(api_visibility="private", show_progress="hidden", queue=False)
        for k, (button, fn, inputs, names, api_name, gpu_s) in enumerate((
                (run_btn, app.generate, [*common, weak_mode, budget, sampler], GENERATE_OUTPUTS, "generate", 120),
                (sweep_btn, app.sweep, [*common, weak_mode, budgets, sampler], SWEEP_OUTPUTS, "sweep", 300),
                (explain_btn, app.explain, common, EXPLAIN_OUTPUTS, "explain", 300))):
            # while a job of this page runs, its buttons are disabled (a second click cannot queue a second job)
            job = button.click(app.buttons(True, k), None, buttons, **ui_only) \
                .then(app.heavy(fn, names, gpu_s), inputs, outputs_of(names), api_name=api_name,
                      scroll_to_output=True, **heavy)  # a phone shows the results below the controls
            # Gradio's page runs .then() after a success only, .failure() after an error (a refused queue included)
            for after in (job.then, job.failure):
                after(app.buttons(False, k), None, buttons, **ui_only)
        stop_btn.click(app.stop, None, status, api_name="stop", queue=False, show_progress="hidden")
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    demo.flexidit = app  # handlers and caches, for tests and preloading
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           max_body_bytes: int = MAX_BODY_BYTES, **kwargs):
    """Launches with the app's look and its request-size limit (every HTTP body, API and page alike); returns what
    Blocks.launch returns."""
    from starlette.middleware import Middleware
    app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
    app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(BodyLimit, max_bytes=max_body_bytes)]
    return demo.launch(server_name=host, server_port=port, share=share, css=CSS,
                       theme=gr.themes.Soft(primary_hue="blue"), app_kwargs=app_kwargs,
                       max_file_size=max_body_bytes, **kwargs)


__all__ = ["build_demo", "launch", "FlexiDiTApp", "run_inputs"]
