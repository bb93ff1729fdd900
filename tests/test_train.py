"""Distillation lowers the weak-vs-native gap; the native size survives LoRA training; data is deterministic."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import inputs, run_cli, tiny_transformer
from flexi_core import distill, registry, training
from flexi_core.shapes import data, train
from flexi_core.flexible import NATIVE, FlexibleTransformer


def gap(model, reference, batches):
    """Mean squared weak-vs-native difference, the native output coming from the frozen original."""
    with torch.no_grad():
        return float(np.mean([(model(x, t, c, m) - reference(x, t, c)).pow(2).mean().item()
                              for x, t, c in batches for m in model.weak_modes]))


@pytest.mark.parametrize("name,variant,source", [("shapes", "lora", "self"), ("shapes-text", "lora", "data"),
                                                 ("shapes-video", "shared", "self")])
def test_flexify_lowers_the_gap_and_keeps_native_exact(tmp_path, name, variant, source):
    torch.manual_seed(0)
    spec = registry.get_spec(name)
    base = tiny_transformer(name)
    reference = tiny_transformer(name)  # identical copy: the frozen original
    model = FlexibleTransformer(base, spec.weak_patches, variant, 4).eval()
    held_out = [inputs(name, seed=s) for s in range(3)]
    native_reference = model.family.__class__(reference).native_forward
    before = gap(model, native_reference, held_out)
    gen = torch.Generator().manual_seed(5)

    def draw(step, n):
        if spec.conditioning == "class":
            return {"class_labels": torch.randint(16, (n,), generator=gen)}
        h = torch.randn(n, 24, 384, generator=gen)
        return {"encoder_hidden_states": h, **({"encoder_attention_mask": torch.ones(n, 24)}
                                                if spec.family == "pixart" else {})}

    def null(n):
        return draw(0, n)

    def data_batch(step):
        x, _, c = inputs(name, batch=2, seed=100 + step)
        return x, torch.randint(0, 1000, (2,), generator=gen), c

    distill.distill(model, spec, 60, 2, tmp_path, draw, null, spec.scheduler, source,
                  data_batch if source == "data" else None, lr=3e-3)
    model.eval()
    after = gap(model, native_reference, held_out)
    assert after < 0.75 * before, (before, after)
    x, t, c = held_out[0]
    with torch.no_grad():
        if variant == "lora":
            assert torch.equal(model(x, t, c, NATIVE), native_reference(x, t, c))
            model.merge_adapters()
            assert torch.equal(model(x, t, c, NATIVE), native_reference(x, t, c))
    assert (tmp_path / "ema.safetensors").exists() and (tmp_path / "log.jsonl").exists()


def test_interrupted_training_resumes_exactly(tmp_path):
    """Killed after step 3, resumed: the same weights as 6 steps in one go (optimizer, LR schedule and EMA state all
    come back from the checkpoint)."""
    torch.manual_seed(0)
    x, target, init = torch.randn(16, 3), torch.randn(16, 1), torch.nn.Linear(3, 1).state_dict()

    def run(run_dir, crash_at=None):
        model = torch.nn.Linear(3, 1)  # a new process: only the checkpoint carries state
        model.load_state_dict(init)

        def loss(step):
            if step == crash_at:
                raise KeyboardInterrupt
            return (model(x) - target).pow(2).mean()
        return training.run_training("t", model, loss, 6, run_dir, warmup=2, checkpoint_every=2)

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", crash_at=3)  # checkpoint at step 2, step 3 lost
    resumed = run(tmp_path / "b")
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k])


def test_sigterm_stops_after_the_step_with_a_checkpoint(tmp_path):
    """A SIGTERM (a session's end, `kill`) mid-run: the step in progress finishes, a checkpoint is written there (not
    only at checkpoint_every), and the resumed run ends with the weights of an uninterrupted one."""
    import signal
    torch.manual_seed(0)
    x, target, init = torch.randn(16, 3), torch.randn(16, 1), torch.nn.Linear(3, 1).state_dict()

    def run(run_dir, signal_at=None):
        model = torch.nn.Linear(3, 1)
        model.load_state_dict(init)

        def loss(step):
            if step == signal_at:
                signal.raise_signal(signal.SIGTERM)
            return (model(x) - target).pow(2).mean()
        return training.run_training("t", model, loss, 7, run_dir, warmup=2, checkpoint_every=100)

    straight = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", signal_at=4)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 5  # step 4 (0-based) done
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the run
    resumed = run(tmp_path / "b")
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k])


def test_prefetched_batches_are_the_plain_ones():
    """Worker processes forked after torch's thread pool ran (as on a GPU host) draw exactly the same batches."""
    torch.set_num_threads(2)
    torch.randn(512, 512) @ torch.randn(512, 512)  # starts the OpenMP team that forked children must not touch
    batches = train.PrefetchedBatches(4, seed_offset=20_000_000, video=True, workers=2, timeout=60)
    for step in (0, 1, 5):
        pixels, scenes, captions = batches(step)
        plain = train.pixel_batch(step, 4, 20_000_000, video=True)
        assert torch.equal(pixels, plain[0]) and scenes == plain[1] and captions == plain[2]


def test_flexify_data_batches_do_not_depend_on_prefetch_workers():
    """`flexify --source data --data-workers N` distils on exactly the x_t of a run without workers."""
    from flexi_core.loading import load_model
    model = load_model("shapes", "lora")
    runs = []
    for workers in (0, 2):
        batches = train.PrefetchedBatches(4, seed_offset=60_000_000, video=False, workers=workers, timeout=60)
        try:
            data_batch = train.procedural_xt(model, batches)
            torch.manual_seed(0)  # the VAE's latent sample draws from the global generator
            runs.append([data_batch(step) for step in (0, 3)])
        finally:
            batches.close()
    for (x0, t0, c0), (x1, t1, c1) in zip(*runs):
        assert x0.shape == (4, *model.spec.latent_shape)
        assert torch.equal(x0, x1) and torch.equal(t0, t1) and torch.equal(c0["class_labels"], c1["class_labels"])
    assert not torch.equal(runs[0][0][0], runs[0][1][0])  # and the steps differ


def test_distillation_states_keep_to_the_noisy_steps_when_asked():
    """--min-timestep: both sources of x_t (procedural data, the teacher's own trajectories) draw only t >= it."""
    from flexi_core.loading import load_model
    model = load_model("shapes", "lora")
    batches = train.PrefetchedBatches(8, seed_offset=60_000_000, video=False, workers=0)
    data_batch = train.procedural_xt(model, batches, min_timestep=600)
    ts = torch.cat([data_batch(step)[1] for step in range(4)])
    assert ts.min() >= 600 and ts.max() < 1000 and len(ts.unique()) > 8
    draw, null = distill.condition_sampler(model)
    pool = distill.TrajectoryPool(model.flexible, model.spec, draw, null, 2, 4.0, model.scheduler_config,
                                  min_timestep=600)
    x, t, cond = pool.batch(0)
    assert len(x) == 2 and pool.times.min() >= 600 and len(pool.states) == len(pool.conds["class_labels"])
    assert len(pool.states) <= 2 * 0.5 * pool.scheduler.num_inference_steps  # the rest was never sampled


def test_a_new_leg_starts_from_exported_weights(tmp_path, capsys):
    """--init-from: the leg starts at the milestone's weights (lr 0 keeps them); a checkpoint then takes precedence."""
    from flexi_core.loading import load_embedded_vae
    spec, vae = registry.get_spec("shapes"), load_embedded_vae()
    weights = registry.ASSETS / "shapes" / "transformer"
    model = train.train_base(spec, vae, vae.config.scaling_factor, tmp_path, steps=1, batch_size=2, lr=0.0,
                             init_from=weights)
    shipped = load_file(weights / "diffusion_pytorch_model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, shipped[k].float()), k
    train.train_base(spec, vae, vae.config.scaling_factor, tmp_path, steps=2, batch_size=2, lr=0.0,
                     init_from=tmp_path / "missing")  # resumes from the checkpoint, never reads init_from
    out = capsys.readouterr().out
    assert out.count("new leg from") == 1 and "resumed at step 1" in out


def test_weak_first_trains_the_weak_path_then_the_native_one(tmp_path, capsys):
    """Progressive training: out of time in the weak phase nothing is returned (and the CLI exports nothing); a
    resume finishes it, resizes its layers onto the native patch and trains natively; a later resume skips it."""
    from flexi_core.loading import load_embedded_vae
    spec, vae = registry.get_spec("shapes"), load_embedded_vae()
    args = (spec, vae, vae.config.scaling_factor, tmp_path)
    assert train.train_base(*args, steps=1, batch_size=2, weak_first=2, time_limit=0.0) is None
    assert train._checkpoint(tmp_path / "weak-first")["step"] == 1 and not (tmp_path / "checkpoint.pt").exists()
    model = train.train_base(*args, steps=1, batch_size=2, weak_first=2)
    assert train._checkpoint(tmp_path / "weak-first")["step"] == 2 and train._checkpoint(tmp_path)["step"] == 1
    weak = load_file(tmp_path / "weak-first" / "ema.safetensors")
    init = {k: v for k, v in weak.items() if k.startswith("base.transformer_blocks.0.attn1.to_q")}
    # a native step moved it
    assert init and not torch.equal(model.state_dict()["transformer_blocks.0.attn1.to_q.weight"],
                                    init["base.transformer_blocks.0.attn1.to_q.weight"].float())
    train.train_base(*args, steps=2, batch_size=2, weak_first=2)
    out = capsys.readouterr().out
    assert out.count("weak phase done") == 1 and "weak phase at step 1 of 2" in out
    assert train._checkpoint(tmp_path)["step"] == 2


def test_train_only_moves_the_named_parameters(tmp_path):
    """--train-only caption_projection: new words, the transformer body (and every flexify file on it) untouched."""
    from flexi_core.loading import load_embedded_vae
    spec, vae = registry.get_spec("shapes-text"), load_embedded_vae()
    weights = registry.ASSETS / "shapes-text" / "transformer"
    before = {k: v.float() for k, v in load_file(weights / "diffusion_pytorch_model.safetensors").items()}
    model = train.train_base(spec, vae, vae.config.scaling_factor, tmp_path, steps=3, batch_size=2, lr=1e-3,
                             init_from=weights, paraphrase=0.5, train_only=("caption_projection",))
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("caption_projection.") for k in moved)
    with pytest.raises(ValueError, match="no parameter"):
        train.train_base(spec, vae, vae.config.scaling_factor, tmp_path / "b", steps=1, batch_size=2,
                         init_from=weights, train_only=("nope",))


def test_data_is_a_pure_function_of_the_seed():
    a, sa, ca = data.sample(123)
    b, sb, cb = data.sample(123)
    assert np.array_equal(a, b) and sa == sb and ca == cb
    v1, _, _ = data.sample(7, video=True)
    v2, _, _ = data.sample(7, video=True)
    assert np.array_equal(v1, v2) and v1.shape == (data.NUM_FRAMES, 32, 32, 3)
    assert not np.array_equal(data.sample(124)[0], a)


def test_paraphrased_captions_change_only_the_object_words():
    """Training may swap colour and shape words for synonyms; pixels, scene and the rest of the caption stay."""
    for seed in range(40):
        pixels, scene, plain = data.sample(seed, video=seed % 2 == 1)
        p_pixels, p_scene, para = data.sample(seed, video=seed % 2 == 1, paraphrase=1.0)
        assert np.array_equal(pixels, p_pixels) and scene == p_scene
        colour = next(w for w in data.SYNONYMS[scene.colour] if f"{w} " in para)
        shape = next(w for w in data.SYNONYMS[scene.shape] if w in para)
        restored = para.replace(f"{colour} ", f"{scene.colour} ").replace(shape, scene.shape)
        assert para != plain and restored.replace(f"an {scene.colour}", f"a {scene.colour}") == plain
    assert data.sample(5, paraphrase=0.0)[2] == data.sample(5)[2]


def test_scenes_are_valid():
    for seed in range(200):
        pixels, scene, caption = data.sample(seed)
        assert scene.colour in caption and scene.shape in caption
        assert scene.background in data.distinct_backgrounds(scene.colour)
        bg = np.array(data.BACKGROUNDS[scene.background])
        obj = np.array(data.COLOURS[scene.colour])
        corner = pixels[0, 0] if scene.position_word != "top left" else pixels[-1, -1]
        centre = pixels[int(scene.cy), int(scene.cx)]
        assert np.abs(centre.astype(int) - obj).max() < 40 or np.abs(corner.astype(int) - bg).max() < 5


def test_training_curves_keep_the_shipped_figure_without_logs(tmp_path):
    """`card` on a fresh clone (no runs/) must not overwrite assets/training-curves.png with empty axes."""
    import json
    from flexi_core.shapes.card import training_curves
    out = tmp_path / "curves.png"
    assert not training_curves(tmp_path / "runs", out) and not out.exists()
    (tmp_path / "runs" / "shapes").mkdir(parents=True)
    (tmp_path / "runs" / "shapes" / "log.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 1 / s}) for s in range(1, 50)))
    assert training_curves(tmp_path / "runs", out) and out.stat().st_size > 1000


def test_a_progressive_run_plots_its_weak_phase_first(tmp_path):
    """`train --weak-first`: the native steps are counted after the weak phase's, which comes first."""
    import json
    from flexi_core.shapes.card import loss_log
    run = tmp_path / "shapes-textured"
    (run / "weak-first").mkdir(parents=True)
    (run / "weak-first" / "log.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1.0}) for s in (50, 100)))
    (run / "log.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 0.5}) for s in (50, 100, 150)))
    assert loss_log(run) == ([50, 100, 150, 200, 250], [1.0, 1.0, 0.5, 0.5, 0.5], 100)
    assert loss_log(tmp_path / "none") is None


def test_bf16_runs_the_forward_in_bfloat16_and_keeps_fp32_weights(tmp_path):
    """`bf16`: the loss's forward under bfloat16 autocast (a linear layer's output is bfloat16 there), the weights, the
    EMA and the loss handed to backward fp32; it still learns."""
    torch.manual_seed(0)
    x, target = torch.randn(64, 8), torch.randn(64, 1)
    model, seen = torch.nn.Linear(8, 1), []

    def loss(step):
        out = model(x)
        seen.append(out.dtype)
        return (out - target).pow(2).mean()
    first = loss(0).item()
    ema = training.run_training("t", model, loss, 30, tmp_path, lr=0.05, warmup=1, ema_decay=0.0, bf16=True)
    assert set(seen[1:]) == {torch.bfloat16} and seen[0] == torch.float32
    assert model.weight.dtype == torch.float32 and all(v.dtype == torch.float32 for v in ema.values())
    assert loss(0).item() < 0.8 * first


def test_train_cli_bf16_reaches_train_base(monkeypatch, tmp_path):
    from flexi_core import cli
    calls = {}
    monkeypatch.setattr(train, "train_base", lambda spec, vae, scale, run_dir, **kw: calls.update(kw))
    cli.main(["train", "--model", "shapes", "--run-dir", str(tmp_path), "--threads", "1", "--bf16"])
    assert calls["bf16"] is True


def test_train_cli_uses_each_jobs_own_defaults(monkeypatch, tmp_path):
    """`train` without --steps/--batch-size/--lr hands nothing over (the library's defaults apply); given ones pass."""
    import inspect

    from flexi_core import cli
    from flexi_core.shapes import judge
    assert inspect.signature(judge.train_judge).parameters["batch_size"].default == 64
    calls = {}
    monkeypatch.setattr(judge, "train_judge", lambda run_dir, **kw: calls.update(judge=kw))
    monkeypatch.setattr(train, "train_vae", lambda run_dir, **kw: calls.update(vae=kw))
    cli.main(["train", "--model", "judge", "--run-dir", str(tmp_path / "j"), "--threads", "1"])
    cli.main(["train", "--model", "vae", "--run-dir", str(tmp_path / "v"), "--threads", "1", "--steps", "7",
              "--lr", "0.01"])
    assert calls["judge"] == {}
    assert calls["vae"] == {"name": "vae", "time_limit": None, "steps": 7, "lr": 0.01}
    cli.main(["train", "--model", "judge-texture", "--run-dir", str(tmp_path / "t"), "--threads", "1",
              "--geometry-weight", "1000"])
    assert calls["judge"] == {"textured": True, "geometry_weight": 1000.0}


def test_train_cli_geometry_weight_is_for_judges_only(tmp_path):
    r = run_cli(["train", "--model", "vae", "--run-dir", str(tmp_path), "--geometry-weight", "5"])
    assert r.returncode != 0 and "--geometry-weight is for the judge jobs" in r.stderr
    assert "Traceback" not in r.stderr


def test_train_cli_weak_first_exports_only_a_finished_model(monkeypatch, tmp_path, capsys):
    """`--weak-first` reaches train_base; while its weak phase is unfinished nothing is exported and the CLI says so."""
    from flexi_core import cli
    calls = {}

    def fake_train_base(spec, vae, scale, run_dir, **kw):
        calls.update(kw)
        return None

    monkeypatch.setattr(train, "train_base", fake_train_base)
    monkeypatch.setattr(train, "export_transformer", lambda *a: calls.update(exported=True))
    assert cli.main(["train", "--model", "shapes", "--weak-first", "40", "--run-dir", str(tmp_path), "--export",
                     "--threads", "1"]) == 0
    assert calls["weak_first"] == 40 and "exported" not in calls
    assert "the weak phase is unfinished; nothing exported" in capsys.readouterr().out


def test_text_conditioning_works_under_bf16_autocast():
    """train --bf16 on a text model: the cached caption embeddings (fp16) are encoded inside the loss's bfloat16
    autocast, where a stack of fp16 tensors is refused on the CPU ('Unexpected floating ScalarType')."""
    import torch
    from flexi_core.registry import get_spec
    from flexi_core.training import Conditioner

    def encoder(captions):
        return torch.randn(len(captions), 24, 384), torch.ones(len(captions), 24, dtype=torch.long)

    conditioner = Conditioner(get_spec("shapes-text-textured"), encoder)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cond = conditioner(None, ["a red striped circle", "a blue dotted square"], torch.Generator().manual_seed(0))
    hidden = next(v for v in cond.values() if v.dtype.is_floating_point)
    assert hidden.shape[0] == 2 and hidden.dtype == torch.float32
