"""What the UI needs around flexi_core: a cache of loaded models, the device, ZeroGPU, jobs that stop, a limit on
request size, checked output files, and user errors turned into messages a visitor can read.

No model math here: everything a result is made of comes from flexi_core; this module only loads, caches, stops,
writes files for display and turns flexi_core's exceptions into messages. About 500 lines because each of those
guards of a public demo (the job that stops, the body-size middleware, the checked files) is small but stated in full.
"""
from __future__ import annotations

import atexit
import contextvars
import errno
import functools
import html
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from flexi_core.errors import FlexiDiTError
from flexi_core.errors import message as error_message

log = logging.getLogger("flexidit.app")

# ZeroGPU: `spaces.GPU` when the package is there (on Hugging Face Spaces), a no-op decorator otherwise.
try:  # pragma: no cover - depends on the deployment
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn=None, **_kwargs):
        return fn if fn is not None else (lambda f: f)


def device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


# --- the visitor's text, shown as text -------------------------------------------------------------------------------

_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$:=\"'/])")


def as_markdown_text(text) -> str:
    """Any text (a prompt, a class label, an error message that quotes one) for a Markdown output, shown as typed:
    Markdown punctuation is backslash-escaped and HTML's <, > and & become entities, so `<img src=x>` and `**bold**`
    render as those characters, links and autolinks do not form, and nothing is fetched."""
    text = " ".join(str(text).split())  # one line: no headings, lists or tables can start inside it
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", text), quote=False)


def as_html_text(text) -> str:
    """Text for Gradio's toasts (gr.Error, gr.Info), which render their message as (sanitised) HTML."""
    return html.escape(" ".join(str(text).split()))


# --- errors a visitor sees -----------------------------------------------------------------------------------------

class ModelUnavailable(Exception):
    """A model's weights are not on this server (FileNotFoundError from flexi_core's loading): said to a visitor
    without the CLI's advice; the operator finds flexi_core's full message in the log."""

    def __init__(self, spec, detail: str):
        super().__init__(detail)
        self.spec, self.detail = spec, detail

    @property
    def reason(self) -> str:
        spec = self.spec
        if spec.embedded:
            return "its model files were not found on this server (the server log says which)"
        return (f"its weights ({spec.repo}) are not available offline on this server, and this server does not "
                "download them. The schedule preview and the FLOPs still work (they come from the architecture); "
                "the embedded models run here")

    @property
    def visitor_text(self) -> str:
        return f"{self.spec.name} cannot run here: {self.reason}"


class StorageError(OSError):
    """A result file could not be written or did not read back (disk full, quota, read-only folder)."""


STORAGE_TEXT = ("the server could not store the result files (its disk may be full), so nothing is shown as done; "
                "try again in a few minutes")
USER_ERRORS = (FlexiDiTError, FloatingPointError)  # FloatingPointError: sampling diverged (too many weak steps)


def user_message(error: BaseException) -> str:
    """One line for a visitor (not escaped: the caller escapes for where it is shown)."""
    if isinstance(error, ModelUnavailable):
        return error.visitor_text
    if isinstance(error, StorageError):
        return STORAGE_TEXT
    return error_message(error)


def user_errors(fn, passthrough: tuple = ()):
    """Runs an event handler. What a visitor can cause (flexi_core's FlexiDiTError, a model whose weights are not
    here, a diverged sampling) becomes gr.Error with a readable message; a full disk says so; out of memory says what
    to change; anything else is a bug: its traceback goes to the server log and the visitor gets a short generic
    message. The model stays usable for the next job either way."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import gradio as gr
        import torch
        try:
            return fn(*args, **kwargs)
        except (gr.Error, *passthrough):
            raise
        except (*USER_ERRORS, ModelUnavailable) as e:
            raise gr.Error(as_html_text(user_message(e)), title="Cannot run this", print_exception=False) from None
        except StorageError as e:
            log.error("%s: could not store a result: %s", fn.__name__, error_message(e.__cause__ or e))
            raise gr.Error(STORAGE_TEXT, title="Could not save the result", print_exception=False) from None
        except (torch.OutOfMemoryError, MemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise gr.Error("out of memory: try fewer steps, a smaller model or a lower budget sweep",
                           title="Out of memory", print_exception=False) from None
        except Exception as e:  # a bug: the traceback to the log, a short message to the visitor, keep serving
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"unexpected error ({type(e).__name__}) in the app; it is logged for its developers",
                           title="Internal error", print_exception=False) from None
    return wrapper


# --- jobs that stop: Stop, a client that went away, a time limit, a cap on work -------------------------------------

MAX_WORK_STEPS = 3000  # denoising steps (or forward-sized steps) one request may run: a 1000-step generate


def check_work(steps: int, runs: int, what: str, limit: int = MAX_WORK_STEPS):
    """The cap on work per request (steps x runs x batch; the app's batch is 1), with one line saying why."""
    if steps * runs > limit:
        raise FlexiDiTError(f"{what} would run {runs} x {steps} = {steps * runs} denoising steps; one request may "
                            f"run at most {limit}: use fewer steps" + (" or budgets" if "sweep" in what else ""))


class Stopped(Exception):
    """A job ended before its end; the subclass says why."""


class StopPressed(Stopped):
    """The visitor pressed Stop (in this browser session) after the job was queued."""


class ClientGone(Stopped):
    """The client that asked for the job disconnected: nobody is waiting for the result."""


class TimeLimit(Stopped):
    """The job ran past the app's time limit."""


class StopBoard:
    """When each browser session last pressed Stop, and when its page last asked for a job that has not started
    yet (entries older than an hour are forgotten). The page's click counts as the start of the wait: its queue
    request can reach the server after a Stop pressed while the button already said "Running" (a loaded server),
    and that Stop must still stop it."""

    def __init__(self):
        self._times: dict[str, float] = {}
        self._asked: dict[str, float] = {}
        self._lock = threading.Lock()

    def _forget_old(self, now: float):
        self._times = {s: t for s, t in self._times.items() if now - t < 3600}
        self._asked = {s: t for s, t in self._asked.items() if now - t < 3600}

    def press(self, session: str):
        now = time.monotonic()
        with self._lock:
            self._forget_old(now)
            self._times[session] = now

    def pressed_since(self, session: str | None, since: float) -> bool:
        if session is None:
            return False
        with self._lock:
            return self._times.get(session, -1.0) > since

    def ask(self, session: str | None):
        """The page asked for a job (its button was clicked); the job takes it when it starts."""
        if session is not None:
            now = time.monotonic()
            with self._lock:
                self._forget_old(now)
                self._asked[session] = now

    def take_ask(self, session: str | None) -> float | None:
        """When the page asked for the job that starts now (None: asked through the API); taken once, so that a
        click counts for one job only. The page's request ending (done, or refused by a full queue) takes it too."""
        with self._lock:
            return self._asked.pop(session, None) if session is not None else None

    def waiting(self, session: str | None) -> bool:
        """Whether the page asked for a job that has not started yet."""
        with self._lock:
            return session is not None and session in self._asked


def _gradio_event():
    """(blocks, event) of the queued Gradio event this thread runs, or (None, None) off the queue. Gradio marks an
    event not `alive` when its client disconnects (queueing.Queue.clean_events) but lets a running function run on;
    this is how a job finds out. Internal Gradio state, read defensively: if it changes, jobs still stop on Stop and
    on the time limit, and tests/test_app_hardening.py fails on the disconnect case."""
    try:
        from gradio.context import LocalContext
        blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
        if blocks is None or event_id is None or blocks._queue is None:
            return None, None
        for group in list(blocks._queue.active_jobs):
            for event in group or ():
                if event._id == event_id:
                    return blocks, event
    except Exception:  # noqa: BLE001 - a Gradio internals change must not break a job
        log.debug("no queue event found for this job", exc_info=True)
    return None, None


_current_job: contextvars.ContextVar["Job | None"] = contextvars.ContextVar("flexidit_job", default=None)


class Job:
    """One heavy request while it runs: `check()` raises a Stopped subclass when the visitor pressed Stop, the
    client went away or the time limit passed. It is called from flexi_core's progress callback and, through
    `install_checkpoints`, before every forward of the model, so that work without a progress callback (the
    analysis) stops too, and it stops *inside* the queue slot: Gradio frees the slot only when the function
    returns, so the concurrency limit holds."""

    EVENT_CHECK_S = 0.2  # how often the (cheap, but not free) look at Gradio's queue is repeated

    def __init__(self, session: str | None, stops: StopBoard, time_limit_s: float | None):
        self.started = time.monotonic()
        self.blocks, self.event = _gradio_event()
        # a Stop pressed while the job still waited (in the queue, or since its page's click) counts too
        asked = stops.take_ask(session)
        self.since = min(self.started, getattr(self.event, "enqueue_time", self.started),
                         self.started if asked is None else asked)
        self.session, self.stops, self.time_limit_s = session, stops, time_limit_s
        self.where = "before the first step"
        self._next_event_check = 0.0
        self._token = None

    def __enter__(self):
        self._token = _current_job.set(self)
        return self

    def __exit__(self, *exc):
        _current_job.reset(self._token)
        return False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _client_gone(self) -> bool:
        event = self.event
        if event is None:
            return False
        if not event.alive:
            return True
        queue = getattr(self.blocks, "_queue", None)
        try:  # the queue no longer runs this event (cancelled or closed): nobody will read the result
            return not any(e is event for group in list(queue.active_jobs) for e in group or ())
        except Exception:  # noqa: BLE001
            return False

    def check(self):
        if self.stops.pressed_since(self.session, self.since):
            raise StopPressed(self.where)
        now = time.monotonic()
        if self.time_limit_s and now - self.started > self.time_limit_s:
            raise TimeLimit(self.where)
        if now >= self._next_event_check:
            self._next_event_check = now + self.EVENT_CHECK_S
            if self._client_gone():
                raise ClientGone(self.where)


def check_current_job():
    job = _current_job.get()
    if job is not None:
        job.check()


def _before_forward(_module, _args):
    check_current_job()


def install_checkpoints(model):
    """Every forward of the model first checks the job running it (a no-op outside a job); once per model."""
    flexible = model.flexible
    if not getattr(flexible, "_flexidit_app_checkpoint", False):
        flexible.register_forward_pre_hook(_before_forward)
        flexible._flexidit_app_checkpoint = True
    return model


# --- request size --------------------------------------------------------------------------------------------------

MAX_BODY_BYTES = 256 * 1024


class BodyLimit:
    """ASGI middleware: an HTTP request body above `max_bytes` is refused with 413 and one line, before anything
    parses it: at once from its Content-Length, or as soon as a body without one (chunked) passes the limit. What
    was read is dropped, so memory stays at its level whatever visitors send. The largest legitimate body of this
    app is a few kilobytes (a 500-character prompt and a few numbers)."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    @property
    def text(self) -> str:
        return (f"the request is larger than this app accepts ({self.max_bytes // 1024} KiB); a prompt has at most "
                "500 characters")

    async def _refuse(self, send):
        body = json.dumps({"detail": self.text, "error": self.text}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = None
        if declared is not None:  # the server holds the body to its Content-Length: refuse before reading any
            if declared > self.max_bytes:
                log.warning("refused a %d-byte request to %s", declared, scope.get("path"))
                return await self._refuse(send)
            return await self.app(scope, receive, send)
        # no Content-Length (chunked): read up to the limit here, then hand the body on in one piece
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                log.warning("refused a chunked request to %s: body above %d bytes", scope.get("path"),
                            self.max_bytes)
                chunks.clear()
                return await self._refuse(send)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()
        await self.app(scope, replay, send)


# --- models ----------------------------------------------------------------------------------------------------------

class ModelCache:
    """Each (model, variant, device) is loaded once; a failed load (missing public weights) is remembered for a
    minute so that moving a slider does not retry it on every tick.

    LoRA adapters of the embedded models are merged into one copy of the (small) base per weak patch size, so the
    weak steps pay no adapter FLOPs or time (flexi_core counts FLOPs accordingly); the large public models keep
    them unmerged to hold a single copy of the base in memory."""

    RETRY_AFTER_S = 60.0

    def __init__(self, assets: Path | None = None, allow_download: bool = False):
        self.assets = Path(assets) if assets is not None else None
        self.allow_download = allow_download
        self._models: dict = {}
        self._failures: dict = {}
        self._lock = threading.Lock()

    @staticmethod
    def merged(spec) -> bool:
        return spec.embedded

    def get(self, name: str, variant: str = "lora", device_name: str | None = None):
        """The loaded model; ModelUnavailable when its weights are not here; FlexiDiTError for damaged ones."""
        from flexi_core.loading import load_model
        from flexi_core.registry import get_spec
        spec = get_spec(name)
        key = (spec.name, variant, device_name or device())
        with self._lock:  # one load at a time; concurrent requests for the same model wait for it
            if key in self._models:
                return self._models[key]
            failed = self._failures.get(key)
            if failed and time.monotonic() - failed[0] < self.RETRY_AFTER_S:
                raise failed[1]
            kwargs = {"allow_download": self.allow_download}
            if self.assets is not None:
                kwargs["assets"] = self.assets
            try:
                model = load_model(spec.name, variant, merged=self.merged(spec), device=key[2], **kwargs)
            except FileNotFoundError as e:
                log.warning("model %s (%s) is not available: %s", spec.name, variant, error_message(e))
                unavailable = ModelUnavailable(spec, error_message(e))
                self._failures[key] = (time.monotonic(), unavailable)
                raise unavailable from None
            install_checkpoints(model)
            self._models[key] = model
            self._failures.pop(key, None)
            return model


# --- memory ----------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _libc():
    import ctypes
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, Windows, musl): nothing to tune
        return None


M_ARENA_MAX = -8  # mallopt parameter, glibc's malloc.h


def limit_malloc_arenas(count: int = 2):
    """glibc gives new threads their own malloc arenas; Gradio runs jobs on changing worker threads, and the memory
    a job frees stays behind as fragmented pages in many arenas: the app grew by about 1 MiB a job (RELIABILITY.md).
    A few arenas, trimmed after each job (`release_memory`), keep it at its level. A no-op off glibc."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, count)


def release_memory():
    """Hands the pages freed by a finished job back to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# --- files for display and download ----------------------------------------------------------------------------------

class OutputDir:
    """The app's own folder for the files it shows and offers for download (PNG, MP4, JSON). Every file is read
    back before a job may report success (flexi_core.media.save_media for pictures); a write that fails or leaves
    an empty or undecodable file raises StorageError. Files older than `max_age_s` are pruned on every write and
    the folder is removed when the process exits."""

    def __init__(self, max_age_s: float = 1800.0):
        self.path = Path(tempfile.mkdtemp(prefix="flexidit-app-"))
        self.max_age_s = max_age_s
        atexit.register(shutil.rmtree, self.path, True)

    def new(self, stem: str, suffix: str) -> Path:
        self.prune()
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in stem)[:60]
        return self.path / f"{safe}-{uuid.uuid4().hex[:10]}{suffix}"

    def prune(self):
        cutoff = time.time() - self.max_age_s
        for f in self.path.glob("*"):
            try:
                if f.stat().st_mtime < cutoff:
                    f.unlink()
            except OSError:
                pass

    def save(self, pixels: np.ndarray, stem: str) -> str:
        """An image (H, W, 3) as PNG or a video (T, H, W, 3) as MP4, checked (size > 0, decodes to its shape)."""
        from flexi_core.media import save_media
        path = self.new(stem, ".mp4" if pixels.ndim == 4 else ".png")
        try:
            return str(save_media(np.ascontiguousarray(pixels), path))
        except OSError as e:  # flexi_core's OutputError (empty, undecodable) or the system's (ENOSPC, EROFS)
            path.unlink(missing_ok=True)
            raise StorageError(error_message(e)) from e

    def save_json(self, data, stem: str) -> str:
        """`data` as JSON, read back and compared before it counts as written."""
        path = self.new(stem, ".json")
        text = json.dumps(data, indent=1, allow_nan=False)
        try:
            path.write_text(text)
            if path.stat().st_size == 0 or json.loads(path.read_text()) != json.loads(text):
                raise OSError(errno.EIO, "the file does not read back as written", str(path))
        except (OSError, ValueError) as e:
            path.unlink(missing_ok=True)
            raise StorageError(error_message(e)) from e
        return str(path)


def upscale(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, 3) for display: each model pixel becomes a factor x factor block."""
    return pixels.repeat(factor, axis=-3).repeat(factor, axis=-2)


def display_image(pixels: np.ndarray, size: int = 256, columns: int = 4) -> np.ndarray:
    """An image upscaled to about `size`; a video (T, H, W, 3) as a contact sheet of its frames, `columns` a row,
    in reading order (the last row padded with black)."""
    if pixels.ndim == 4:
        frames = upscale(pixels, max(1, (size // 2) // pixels.shape[1]))
        columns = min(columns, len(frames))
        rows = -(-len(frames) // columns)
        pad = np.zeros((rows * columns - len(frames), *frames.shape[1:]), frames.dtype)
        grid = np.concatenate([frames, pad]).reshape(rows, columns, *frames.shape[1:])
        return np.concatenate([np.concatenate(list(row), axis=1) for row in grid], axis=0)
    return upscale(pixels, max(1, size // pixels.shape[0]))


def display_video(pixels: np.ndarray, size: int = 256) -> np.ndarray:
    """A (T, H, W, 3) video upscaled to about `size` for its MP4."""
    return upscale(pixels, max(1, size // pixels.shape[1]))


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
