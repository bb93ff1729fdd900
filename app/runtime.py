"""What the UI needs around flexi_core: a cache of loaded models, the device, ZeroGPU, output files, user errors.

No model math here: everything a result is made of comes from flexi_core; this module only loads, caches, writes
files for display and turns flexi_core's exceptions into messages a visitor can read.
"""
from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

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


# --- user errors ---------------------------------------------------------------------------------------------------

USER_ERRORS = (ValueError, FileNotFoundError, KeyError, FloatingPointError)


def message_of(error: BaseException) -> str:
    """One readable line: KeyError's str() would add quotes, others carry their message in args[0]."""
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    return text[:1000]


def user_errors(fn, passthrough: tuple = ()):
    """Runs an event handler; what a visitor can cause becomes gr.Error (a readable message, the server keeps
    serving); out of memory says what to change; anything else says it is a bug, logs the traceback and keeps the
    model usable for the next job."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import gradio as gr
        import torch
        try:
            return fn(*args, **kwargs)
        except (gr.Error, *passthrough):
            raise
        except USER_ERRORS as e:
            raise gr.Error(message_of(e), title="Cannot run this", print_exception=False) from None
        except (torch.OutOfMemoryError, MemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise gr.Error("out of memory: try fewer steps, a smaller model or a lower budget sweep",
                           title="Out of memory", print_exception=False) from None
        except Exception as e:  # a bug: say so, keep serving
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"unexpected error ({type(e).__name__}): {message_of(e)}", title="Internal error",
                           print_exception=False) from None
    return wrapper


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
        from flexi_core.loading import load_model
        from flexi_core.registry import get_spec
        spec = get_spec(name)  # KeyError with the list of models for an unknown name
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
                self._failures[key] = (time.monotonic(), e)
                raise
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


# --- files for display -------------------------------------------------------------------------------------------

class OutputDir:
    """The app's own folder for videos it writes (images go to Gradio's cache as arrays). Files older than
    `max_age_s` are pruned on every write and the folder is removed when the process exits."""

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


def write_video(pixels: np.ndarray, path: Path, size: int = 256, fps: int = 4) -> str:
    """MP4 (H.264, as flexi_core's CLI writes it) of a (T, H, W, 3) uint8 video, upscaled for display."""
    import imageio.v3 as iio
    frames = upscale(pixels, max(1, size // pixels.shape[1]))
    iio.imwrite(path, frames, fps=fps, codec="libx264", macro_block_size=1)
    return str(path)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
