"""The public API: any diffusers checkpoint of the three families, loaded, flexified and sampled under a budget."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import flexi_core as fx
from flexi_core.flops import counted_flops

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def tiny_dit_checkpoint(tmp_path_factory):
    """A DiT checkpoint that `registry.SPECS` does not know: a 24x24 latent at patch 2 (144 tokens), ImageNet's
    1000 classes."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel
    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=4, attention_head_dim=32, in_channels=4, out_channels=8,
                                        num_layers=2, sample_size=24, patch_size=2, num_embeds_ada_norm=1000)
    with torch.no_grad():
        for p in transformer.parameters():
            p.normal_(0, 0.1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=48, layers_per_block=1,
                        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8))
    folder = tmp_path_factory.mktemp("ckpt") / "tiny-dit"
    DiTPipeline(transformer=transformer.eval(), vae=vae.eval(), scheduler=DDIMScheduler()).save_pretrained(folder)
    return folder


def readme_example() -> str:
    """The README's 'From Python' example, as written there."""
    text = README.read_text()
    block = re.search(r"## From Python\n.*?```python\n(.*?)```", text, re.S)
    assert block, "README has no '## From Python' python block"
    return block.group(1)


def test_readme_example_runs_on_a_saved_checkpoint(tiny_dit_checkpoint, tmp_path, monkeypatch):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    small = {'"facebook/DiT-XL-2-256"': repr(str(tiny_dit_checkpoint)),
             "steps=300, batch_size=32": "steps=2, batch_size=2"}
    source = code
    for real, tiny in small.items():  # the same code on a tiny checkpoint, distilled for two steps
        assert real in source, f"the README example should contain {real}"
        source = source.replace(real, tiny)
    scope = {}
    exec(compile(source, "README.md", "exec"), scope)
    out = scope["out"]
    assert out.flops_ratio is not None and out.flops_ratio <= 0.5 + 1e-9
    assert Path(tmp_path, "flexible.png").stat().st_size > 0 and Path(tmp_path, "static.png").stat().st_size > 0


def _counted_flops(checkpoint, mode: str) -> int:
    """FLOPs of one guided forward (conditional + unconditional, batched) at `mode`, counted by torch on the meta
    device (where attention is counted too)."""
    pipe = fx.FlexiDiTPipeline.from_pretrained(str(checkpoint))
    flex = pipe.model.flexible.to("meta")
    x, t = torch.randn(2, *pipe.spec.latent_shape, device="meta"), torch.tensor([500, 500], device="meta")
    return counted_flops(lambda: flex(x, t, {"class_labels": torch.tensor([3, 1000], device="meta")}, mode))


def test_a_checkpoint_outside_specs_loads_flexifies_samples_and_counts_exact_flops(tiny_dit_checkpoint):
    pipe = fx.FlexiDiTPipeline.from_pretrained(str(tiny_dit_checkpoint))
    assert pipe.spec.name not in fx.pipeline.SPECS
    assert pipe.spec.latent_shape == (4, 24, 24)  # from the checkpoint's own config
    assert pipe.model.flexible.patches == {fx.NATIVE: (1, 2, 2), "weak": (1, 4, 4)}
    out = pipe(class_labels=[3, 7], budget=0.5, num_inference_steps=6, seed=1, output_type="np")
    assert len(out.images) == 2 and out.images[0].shape == (48, 48, 3) and out.images[0].dtype == np.uint8
    steps = out.records[0]
    assert len(steps) == 6 and {r.cond_patch for r in steps} == {(1, 2, 2), (1, 4, 4)}
    counted = {mode: _counted_flops(tiny_dit_checkpoint, mode) for mode in pipe.model.flexible.patches}
    for r in steps:  # each pass is half of a guided forward at its own patch: the record is torch's count
        expected = (counted[r.cond_mode] + counted[r.uncond_mode]) / 2
        assert r.flops == pytest.approx(expected, rel=0.01), r
    assert out.flops == sum(r.flops for rs in out.records for r in rs)
    assert out.static is None  # compare is opt-in


def test_same_generator_same_picture_and_compare_is_opt_in(tiny_dit_checkpoint):
    pipe = fx.FlexiDiTPipeline.from_pretrained(str(tiny_dit_checkpoint))
    kwargs = dict(class_labels=4, budget=0.6, num_inference_steps=4, output_type="np")
    a = pipe(generator=torch.Generator().manual_seed(5), **kwargs)
    b = pipe(generator=torch.Generator().manual_seed(5), compare=True, **kwargs)
    assert np.array_equal(a.images[0], b.images[0])
    assert b.static is not None and b.static.flops > b.flops and len(b.agreement) == 1


def test_weak_steps_without_guidance_run_the_conditional_pass_alone(tiny_dit_checkpoint):
    """weak_guidance=False: a weak step is the unguided weak prediction (so an all-weak run equals sampling without
    guidance) and costs one pass; native steps keep their guidance; the budget still holds."""
    pipe = fx.FlexiDiTPipeline.from_pretrained(str(tiny_dit_checkpoint))
    kwargs = dict(class_labels=3, num_inference_steps=4, seed=2, output_type="np")
    all_weak = fx.Schedule(4, 0, 0, weak_guidance=False)
    unguided = pipe(schedule=all_weak, guidance_scale=4.0, **kwargs)
    plain = pipe(schedule=fx.Schedule(4, 0, 0), guidance_scale=1.0, **kwargs)
    assert np.array_equal(unguided.images[0], plain.images[0]) and unguided.flops == plain.flops
    out = pipe(budget=0.4, weak_guidance=False, **kwargs)
    assert not out.schedule.weak_guidance and out.schedule.weak_steps > 0
    assert all((r.uncond_mode is None) == (r.cond_mode != fx.NATIVE) for r in out.records[0])
    guided = pipe(budget=0.4, weak_guidance=True, **kwargs)
    static = pipe(budget=1.0, **kwargs)
    assert out.flops <= 0.4 * static.flops and out.schedule.native_cond >= guided.schedule.native_cond


def test_native_size_of_a_flexified_transformer_is_the_original(tiny_dit_checkpoint):
    from diffusers import DiTTransformer2DModel
    base = DiTTransformer2DModel.from_pretrained(tiny_dit_checkpoint / "transformer").eval()
    x, t, y = torch.randn(2, 4, 24, 24), torch.tensor([10, 900]), torch.tensor([1, 2])
    with torch.no_grad():
        before = base(x, timestep=t, class_labels=y).sample
        flexible = fx.flexify(base, variant="lora")
        after = flexible(x, t, {"class_labels": y}, fx.NATIVE)
    assert torch.equal(before, after)


def test_bad_input_is_one_flexidit_error(tiny_dit_checkpoint):
    pipe = fx.FlexiDiTPipeline.from_pretrained(str(tiny_dit_checkpoint))
    with pytest.raises(fx.FlexiDiTError, match="class_labels"):
        pipe(prompt="a cat", num_inference_steps=2)
    with pytest.raises(fx.FlexiDiTError, match="output_type"):
        pipe(class_labels=1, num_inference_steps=2, output_type="latent")


def test_distill_then_save_and_load_flexify_weights(tiny_dit_checkpoint, tmp_path):
    pipe = fx.FlexiDiTPipeline.from_pretrained(str(tiny_dit_checkpoint))
    pipe.distill(steps=3, batch_size=2, run_dir=tmp_path / "run")
    pipe.save_flexify(tmp_path / "flexify-lora.safetensors")
    again = fx.FlexiDiTPipeline.from_pretrained(str(tiny_dit_checkpoint),
                                                flexify_weights=tmp_path / "flexify-lora.safetensors")
    assert again.model.flexify_trained
    kwargs = dict(class_labels=2, budget=0.5, num_inference_steps=4, seed=3, output_type="np")
    assert np.abs(pipe(**kwargs).images[0].astype(int) - again(**kwargs).images[0].astype(int)).max() <= 2  # fp16
