"""Shared fixtures and helpers: tiny random-weight models of the same diffusers classes (written as an assets
folder), the app served in this process or as its own, and what its answers are compared with. Test modules import
helpers from here (`from conftest import ...`), never from each other."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flexi_core import registry

ROOT = Path(__file__).resolve().parent.parent

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


# the tiny models' weak patches; the tiny image models use native patch 2 on an 8x8 latent, like DiT-XL/2's 2 -> 4
WEAK = {"shapes": {"weak": (1, 4, 4)}, "shapes-text": {"weak": (1, 4, 4)},
        "shapes-video": {"temporal": (2, 2, 2), "spatial": (1, 4, 4)}}
OVERRIDES = {"shapes": dict(patch_size=2), "shapes-text": dict(patch_size=2), "shapes-video": {}}


def inputs(name, batch=2, seed=0):
    """(latents, timesteps, condition) for a forward of the tiny `name` built with OVERRIDES[name]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([10, 700][:batch])
    if name == "shapes":
        return torch.randn(batch, 4, 8, 8, generator=g), t, {"class_labels": torch.tensor([1, 16][:batch])}
    if name == "shapes-text":
        mask = torch.ones(batch, 24)
        mask[:, 20:] = 0
        return torch.randn(batch, 4, 8, 8, generator=g), t, {
            "encoder_hidden_states": torch.randn(batch, 24, 384, generator=g), "encoder_attention_mask": mask}
    return torch.randn(batch, 8, 4, 8, 8, generator=g), t, {
        "encoder_hidden_states": torch.randn(batch, 24, 384, generator=g)}


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


# --- the app in this process, and flexi_core's own results for the same inputs ---------------------------------------

STEPS = 6  # generate_args' default: few, since the app tests check the numbers exactly
GENERATE_STATUS = -2  # /generate's status line: the output before the raw numbers


def launch(assets, **kwargs):
    """The app in this process (so flexi_core's results can be computed next to it), on a free local port."""
    torch.set_num_threads(1)
    import app
    demo = app.build_demo(assets=assets, **kwargs)
    _, url, _ = app.launch(demo, host="127.0.0.1", port=None, prevent_thread_lock=True, quiet=True)
    return demo, url


@pytest.fixture(scope="module")
def assets(tiny_assets):
    """The folder the app tests serve: the tiny models (test_app.py overrides this to honour FLEXIDIT_TEST_ASSETS)."""
    return tiny_assets


@pytest.fixture(scope="module")
def served(assets):
    """(demo, gradio_client) of the app on `assets`, one per test module; closed afterwards."""
    from gradio_client import Client
    demo, url = launch(assets)
    try:
        yield demo, Client(url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def reference(assets):
    """get(name, variant) -> flexi_core's own model, loaded apart from the app's cache as the app documents it
    loads them (adapters of embedded models merged)."""
    from flexi_core.loading import load_model
    cache = {}

    def get(name, variant="lora"):
        if (name, variant) not in cache:
            cache[name, variant] = load_model(name, variant, assets=assets, merged=registry.get_spec(name).embedded)
        return cache[name, variant]
    return get


def generate_args(model="shapes", class_label="red circle", prompt="", seed=3, steps=STEPS, guidance=4.0,
                  variant="lora", weak_mode="temporal", budget=55, sampler="ddim"):
    """The inputs of one /generate call, in the event's order."""
    return [model, class_label, prompt, seed, steps, guidance, variant, weak_mode, budget, sampler]


def expected(reference, args):
    """flexi_core run directly with the inputs of one /generate call."""
    from flexi_core.generate import generate
    name, class_label, prompt, seed, steps, guidance, _, weak_mode, budget, sampler = args
    model = reference(name)
    condition = {"class_label": class_label} if registry.get_spec(name).conditioning == "class" else {"prompt": prompt}
    mode = weak_mode if weak_mode in model.flexible.weak_modes else None
    return generate(model, **condition, budget=budget / 100, steps=steps, seed=seed, guidance=guidance,
                    sampler=sampler, weak_mode=mode)


def image_of(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def downscale(shown: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """The app shows an image upscaled by nearest neighbour, a video as a sheet of upscaled frames, 4 a row."""
    if pixels.ndim == 3:
        factor = shown.shape[0] // pixels.shape[0]
        assert shown.shape == (pixels.shape[0] * factor, pixels.shape[1] * factor, 3)
        return shown[::factor, ::factor]
    frames, h, w, _ = pixels.shape
    columns = min(4, frames)
    rows = -(-frames // columns)
    factor = shown.shape[0] // (rows * h)
    assert shown.shape == (rows * h * factor, columns * w * factor, 3)
    small = shown[::factor, ::factor]
    return np.stack([small[(i // columns) * h:(i // columns + 1) * h, (i % columns) * w:(i % columns + 1) * w]
                     for i in range(frames)])


def pictures_of(outputs):
    """The two pictures a /generate answer shows: the image slider, or a video's two frame sheets."""
    return outputs[0] if outputs[0] is not None else outputs[3:5]


def assert_same_result(outputs, ref):
    """FLOPs exactly (per run and per step), and the shown pixels equal to flexi_core's (PNG is lossless)."""
    raw = outputs[-1]
    for run, sample in (("static", ref.static), ("flexible", ref.flexible)):
        assert raw[run]["flops"] == sample.flops
        assert [s["flops"] for s in raw[run]["per_step"]] == [r.flops for r in sample.records]
        assert [s["cond_mode"] for s in raw[run]["per_step"]] == [r.cond_mode for r in sample.records]
    assert raw["condition"] == ref.condition_text
    for path, sample in zip(pictures_of(outputs), (ref.static, ref.flexible)):
        assert np.array_equal(downscale(image_of(path), sample.pixels), sample.pixels)


def error_of(call) -> str:
    with pytest.raises(Exception) as info:
        call()
    return str(info.value)


def wait_for(condition, timeout: float, every: float = 0.02, what: str = "the condition") -> float:
    """Seconds until condition() held; fails after `timeout`, saying `what` did not come."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(every)
    return time.monotonic() - start


def start_long_job(demo):
    """A 1000-step /generate job from a new client, once the served model runs its forwards: (client, job)."""
    from gradio_client import Client
    client = Client(demo.local_url, verbose=False)
    flexible = demo.flexidit.models.get("shapes").flexible
    job = client.submit(*generate_args(steps=1000), api_name="/generate")
    wait_for(lambda: flexible.busy, 120, what="the job's sampling")
    assert demo.flexidit.running() == 1, "not exactly this one job runs"
    return client, job


def _cli_env(assets=None) -> dict:
    """The environment of a CLI run in the repository: FLEXIDIT_ASSETS set when `assets` is given."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if assets is not None:
        env["FLEXIDIT_ASSETS"] = str(assets)
    return env


def run_cli(args, assets=None, timeout=300):
    """`python -m flexi_core ARGS` in the repository, with FLEXIDIT_ASSETS set when `assets` is given."""
    return subprocess.run([sys.executable, "-m", "flexi_core", *args], capture_output=True, text=True,
                          env=_cli_env(assets), cwd=ROOT, timeout=timeout)


_MANY = """
import contextlib, io, json, sys, traceback
from flexi_core.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors
            code = e.code
        except BaseException:  # what would escape `python -m flexi_core` as a traceback
            code = 1
            traceback.print_exc()
    out.append([code, err.getvalue()])
print(json.dumps(out))
"""


def run_cli_many(argvs, assets=None, timeout=300) -> list[tuple[int, str]]:
    """(exit code, stderr) of `flexi_core.cli.main` for each argv, all in one `python` process (one import of torch
    and diffusers instead of one per case); what `python -m flexi_core` would end with a traceback shows as one here."""
    import json
    r = subprocess.run([sys.executable, "-c", _MANY, json.dumps(argvs)], capture_output=True, text=True,
                       env=_cli_env(assets), cwd=ROOT, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return [tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


# --- the app as its own process, and a small real file system (issue 17) -------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(assets, tmp, *flags, env=None, timeout=240):
    """`python app.py --assets ASSETS` on a free port with its temporary files under `tmp` (tmp/tmp, tmp/gradio
    unless `env` names others) and its output in tmp/log.txt; returns (process, url) once the page answers."""
    import httpx
    tmp = Path(tmp)
    (tmp / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp / "tmp"), "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **(env or {})}
    log = open(tmp / "log.txt", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--assets", str(assets), "--port", str(port), *flags],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
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


def rss_mib(pid: int) -> float:
    import psutil
    return psutil.Process(pid).memory_info().rss / 2 ** 20


@pytest.fixture
def small_tmpfs(tmp_path):
    """mount(name, size) -> a folder on its own tmpfs of `size` (e.g. '2m'): a real file system that fills up.
    Needs root with the right to mount (as on this project's machines and CI); skipped elsewhere."""
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
