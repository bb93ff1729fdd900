"""What a user can get wrong: one exception type, raised by the validators at the boundary (`inputs.py`).

The CLI and the app catch this type (and OSError for files) only and show `message(error)` as one line; any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class FlexiDiTError(ValueError):
    """Bad input or a file that does not fit: the message says what to change."""


class DivergedError(FlexiDiTError, FloatingPointError):
    """Sampling blew up (non-finite latents): another schedule may not. Also a FloatingPointError, which the
    measuring code (flexi_core.bench) catches to skip the case."""


class OutputError(OSError):
    """A result file that was written but is empty or does not decode: imageio writes 0-byte MP4s without raising
    when the disk is full, so a job must not report success before its files are read back (media.py)."""


def message(error: BaseException) -> str:
    """One line for the user. An OSError from the system says what failed on which file ('No such file or
    directory: out/r.json'), not its errno; the others carry their message in args[0]."""
    if isinstance(error, OSError) and error.strerror:
        files = " -> ".join(str(f) for f in (error.filename, error.filename2) if f is not None)
        return f"{error.strerror}: {files}" if files else error.strerror
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    return " ".join(text.split())[:1000]
