"""The loading and sampling path of the large public checkpoints, on tiny random-weight models of the same
diffusers classes saved in the layout of the hub repositories (transformer/, vae/, scheduler/, text_encoder/, …)."""
import pytest
import torch

from flexi_core import registry
from flexi_core.generate import generate
from flexi_core.loading import load_model
from flexi_core.shapes.text import minilm_dir

TINY = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2)


@pytest.fixture(scope="module")
def public_dirs(tmp_path_factory):
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import AutoTokenizer, T5Config, T5EncoderModel
    root = tmp_path_factory.mktemp("public")
    torch.manual_seed(0)
    vae = AutoencoderKL(latent_channels=4, layers_per_block=1, norm_num_groups=4, block_out_channels=(8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    scheduler = DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False)
    dirs = {}
    for name, overrides in [("dit-xl-2-256", {}), ("pixart-alpha-256", dict(cross_attention_dim=16,
                                                                             caption_channels=32))]:
        folder = root / name
        spec = registry.get_spec(name)
        registry.build_transformer(spec, **TINY, **overrides).save_pretrained(folder / "transformer")
        vae.save_pretrained(folder / "vae")
        scheduler.save_pretrained(folder / "scheduler")
        if spec.conditioning == "text":
            AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(folder / "tokenizer")
            T5EncoderModel(T5Config(vocab_size=30522, d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16)) \
                .save_pretrained(folder / "text_encoder")
        dirs[name] = folder
    return dirs


@pytest.mark.parametrize("name,cond", [("dit-xl-2-256", {"class_label": 207}),
                                       ("pixart-alpha-256", {"prompt": "a photo of a corgi"})])
@pytest.mark.parametrize("merged", [False, True])
def test_public_layout_loads_and_samples(public_dirs, name, cond, merged):
    model = load_model(name, "lora", weights_dir=str(public_dirs[name]), merged=merged)
    assert not model.flexify_trained  # no flexify file given: the PI-resize initialisation
    assert model.flexible.lora_rank == 32
    result = generate(model, budget=0.7, steps=4, seed=1, **cond)
    assert result.flexible.pixels.shape == (128, 128, 3)  # 32x32 latents, a 3-level tiny autoencoder
    assert result.flops_ratio <= 0.7
    weak = result.flexible.schedule.weak_steps
    assert 0 < weak < 4
    assert [r.cond_patch for r in result.flexible.records] == [(1, 4, 4)] * weak + [(1, 2, 2)] * (4 - weak)


def test_missing_public_weights_say_what_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_model("pixart-alpha-256", weights_dir=str(tmp_path / "nowhere"))
    message = str(info.value)
    assert "text_encoder/" in message and "huggingface-cli download PixArt-alpha/PixArt-XL-2-256x256" in message
