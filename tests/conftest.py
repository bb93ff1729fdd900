"""Shared fixtures: tiny random-weight models of the same diffusers classes, written as an assets folder."""
from __future__ import annotations

import pytest
import torch

from flexi_core import registry

TINY = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2)
TINY_EXTRA = {"shapes": {}, "shapes-text": dict(cross_attention_dim=16), "shapes-video": dict(time_embed_dim=16)}

torch.set_num_threads(2)


def tiny_transformer(name: str, seed: int = 0, **overrides):
    """Random weights with std 0.1 so every path (adaLN gates, output projection) carries signal."""
    torch.manual_seed(seed)
    model = registry.build_transformer(registry.get_spec(name), **{**TINY, **TINY_EXTRA[name], **overrides})
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """An assets/ folder holding a tiny VAE and tiny versions of the three embedded transformers."""
    from diffusers import AutoencoderKL
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
                        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 8))
    vae.save_pretrained(root / "vae")
    for name in TINY_EXTRA:
        tiny_transformer(name).save_pretrained(root / name / "transformer")
    from safetensors.torch import save_file

    from flexi_core.shapes.judge import Judge
    save_file({k: v.half().contiguous() for k, v in Judge().state_dict().items()}, root / "judge.safetensors")
    return root


# --- the app as its own process, and a small real file system (issue 17) -------------------------------------------

def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(assets, tmp, *flags, env=None, timeout=240):
    """`python app.py --assets ASSETS` on a free port with its temporary files under `tmp` (tmp/tmp, tmp/gradio
    unless `env` names others) and its output in tmp/log.txt; returns (process, url) once the page answers."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx
    root = Path(__file__).resolve().parent.parent
    tmp = Path(tmp)
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp / "tmp"), "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    log = open(tmp / "log.txt", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--assets", str(assets), "--port", str(port), *flags],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_file = log
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    log.close()
    pytest.fail("app.py did not start: " + (tmp / "log.txt").read_text()[-2000:])


def stop_app(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    proc.log_file.close()


@pytest.fixture
def small_tmpfs(tmp_path):
    """mount(name, size) -> a folder on its own tmpfs of `size` (e.g. '2m'): a real file system that fills up.
    Needs root with the right to mount (as on this project's machines and CI); skipped elsewhere."""
    import subprocess
    mounted = []

    def mount(name: str, size: str):
        folder = tmp_path / name
        folder.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
        mounted.append(folder)
        return folder
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder):
    """Fills the file system of `folder` to the last byte with one file (returned: delete it to free the space)."""
    from pathlib import Path
    path = Path(folder) / "filler"
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0")
                f.flush()
        except OSError:
            pass
    return path
