"""Writing a result to disk, checked: a PNG for an image, an MP4 for a video, read back before anyone is told.

imageio writes 0-byte MP4s without raising when the disk is full, so a file counts as written only once it decodes
to the frames that went in.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import OutputError


def save_media(pixels: np.ndarray, path: Path, fps: int = 4) -> Path:
    """uint8 (H, W, 3) -> `path` as .png; (T, H, W, 3) -> .mp4 (H.264). Returns the path written (its suffix set).
    A file that cannot be written, is empty or does not decode to the same shape is removed, and OutputError
    says so in one line."""
    import imageio.v3 as iio
    video = pixels.ndim == 4
    path = Path(path).with_suffix(".mp4" if video else ".png")
    try:
        if video:
            iio.imwrite(path, pixels, fps=fps, codec="libx264", macro_block_size=1)
        else:
            iio.imwrite(path, pixels)
        problem = _unreadable(path, pixels.shape)
    except OSError as e:
        problem = f"could not be written ({e.strerror or e})"
    if problem:
        path.unlink(missing_ok=True)
        raise OutputError(f"{path} {problem}; is the disk full?")
    return path


def _unreadable(path: Path, shape: tuple) -> str | None:
    """What is wrong with a written file, or None when it decodes to `shape`."""
    import imageio.v3 as iio
    if not path.exists() or path.stat().st_size == 0:
        return "was written empty"
    try:
        decoded = iio.imread(path).shape
    except (OSError, ValueError, RuntimeError) as e:  # what imageio's readers raise for a damaged file
        return f"does not decode ({type(e).__name__})"
    return None if decoded == shape else f"decodes to shape {decoded}, not {shape}"
