"""Textured procedural data (fine detail for the late denoising steps) and the judge's texture head."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

from flexi_core.registry import ASSETS
from flexi_core.shapes import data
from flexi_core.shapes.judge import Judge, export_judge, load_judge


def _digest(pixels, scenes, captions) -> str:
    old = [(s.colour, s.shape, s.background, s.cx, s.cy, s.radius, s.direction, s.speed) for s in scenes]
    return hashlib.sha256(pixels.tobytes() + "\n".join(captions).encode() + repr(old).encode()).hexdigest()


def test_untextured_data_is_bit_for_bit_what_it_was():
    """Hashes computed on the pre-texture data (commit 514aeb2, pillow 12.3.0): seeds draw the same numbers still."""
    assert _digest(*data.batch(range(20))) == "b2eb85a0998d82ed26348afe1da88b197a769c26578acddf4dac5126132b3a26"
    assert (_digest(*data.batch(range(3), video=True, paraphrase=0.5))
            == "8d5dbc28c746522a3f3cd13301f98288c8bfdcf9f0c87f841367e70f72151cc6")
    pixels, scene, caption = data.sample(7, class_id=5)
    assert (_digest(pixels[None], [scene], [caption])
            == "169c198ce0be35f5bb7067759a528b02c36b54ede513bd03c559f63bd3e23c91")
    assert scene.texture == "plain" and data.CLASS_NAMES[:2] == ("red circle", "red square")


@pytest.mark.parametrize("shape", data.SHAPES)
def test_textures_draw_inside_the_shape_only(shape):
    plain = data.Scene("blue", shape, "beige", 15.3, 16.7, 11.0)
    base = data.render(plain)
    outside = (base == data.BACKGROUNDS["beige"]).all(-1)
    renders = {}
    for texture in data.TEXTURES[1:]:
        img = data.render(data.Scene("blue", shape, "beige", 15.3, 16.7, 11.0, texture=texture))
        differs = (img != base).any(-1)
        assert differs.sum() > 20 and not (differs & outside).any(), texture
        # the colour stays readable: the object's mean is nearest its own colour
        mean = img[~outside].mean(0)
        assert min(data.COLOURS, key=lambda c: np.linalg.norm(mean - data.COLOURS[c])) == "blue", texture
        renders[texture] = img
    assert len({r.tobytes() for r in renders.values()}) == 3


def test_texture_is_detail_of_a_fine_grid():
    """Period 4 px: 2-pixel cells in phase with the stripes carry them; 4-pixel cells average them away at any phase
    (the stripes are anchored at the object's centre, so their phase against the pixel grid varies)."""
    def cells(cx, n):
        img = data.render(data.Scene("red", "square", "black", cx, 16.0, 12.0, texture="striped")).astype(float)
        inside = img[8:24, 8:24].mean(-1)  # well inside the square
        return inside.reshape(16 // n, n, 16 // n, n).mean((1, 3))
    assert cells(17.0, 2).std() > 30  # a stripe on [16, 18)
    assert all(cells(cx, 4).std() < 1 for cx in (16.0, 16.5, 17.0, 17.3))


def test_texture_moves_with_the_object():
    scene = data.Scene("green", "circle", "black", 12.0, 16.0, 8.0, texture="dotted")
    assert np.array_equal(data.render(scene)[:, :28], data.render(scene, cx=16.0)[:, 4:])


def test_textured_samples_and_captions():
    pixels, scenes, captions = data.batch(range(200), textured=True)
    assert {s.texture for s in scenes} == set(data.TEXTURES)
    for scene, text in zip(scenes, captions):
        named = [t for t in data.TEXTURES if t in text.split()]
        assert named == ([] if scene.texture == "plain" else [scene.texture]), text
        if scene.texture != "plain":
            assert f"{scene.colour} {scene.texture} {scene.shape}" in text
    assert len(data.TEXTURED_CLASS_NAMES) == 64 and len(data.CLASS_NAMES) == 16
    for class_id in (0, 21, 63):
        _, scene, _ = data.sample(3, class_id=class_id, textured=True)
        assert scene.textured_class_id == class_id
        assert scene.textured_class_name == data.TEXTURED_CLASS_NAMES[class_id]


def test_shipped_judge_has_no_texture_head(tmp_path):
    shipped = load_judge(ASSETS / "judge.safetensors")
    pixels, scenes, _ = data.batch(range(95_000_000, 95_000_064))
    assert "texture" not in shipped.heads and "texture" not in shipped.read(pixels[:1])[0]
    assert shipped.accuracy(pixels, scenes)["colour"] >= 0.95 and "texture" not in shipped.accuracy(pixels, scenes)
    # a judge with the head keeps it through export and loading (random weights: any texture word)
    from safetensors.torch import save_file
    save_file(Judge(texture=True).state_dict(), tmp_path / "ema.safetensors")
    export_judge(tmp_path, tmp_path / "judge.safetensors")
    textured = load_judge(tmp_path / "judge.safetensors")
    assert textured.read(pixels[:1])[0]["texture"] in data.TEXTURES


def test_texture_judge_trains_from_the_shipped_one(monkeypatch, tmp_path):
    from flexi_core import cli
    from flexi_core.shapes import judge
    shipped = ASSETS / "judge.safetensors"
    # one step at a vanishing learning rate: what comes out is the shipped judge plus a (fresh) texture head
    trained = judge.train_judge(tmp_path / "run", steps=1, batch_size=4, lr=1e-9, textured=True, init_from=shipped)
    pixels, scenes, _ = data.batch(range(95_000_000, 95_000_064))
    assert "texture" in trained.heads and trained.eval().accuracy(pixels, scenes)["colour"] >= 0.95
    calls = {}
    monkeypatch.setattr(judge, "train_judge", lambda run_dir, **kw: calls.update(kw, run_dir=run_dir))
    cli.main(["train", "--model", "judge-texture", "--init-from", str(shipped), "--threads", "1"])
    assert calls == {"textured": True, "init_from": shipped, "run_dir": Path("runs/judge-texture")}
    # exported beside the shipped judge, which it does not replace: the textured models' judge (spec.judge)
    from flexi_core import registry
    monkeypatch.setattr(registry, "ASSETS", tmp_path)
    monkeypatch.setattr(judge, "export_judge", lambda run_dir, path: calls.update(exported=path))
    cli.main(["train", "--model", "judge-texture", "--export", "--threads", "1"])
    assert calls["exported"] == tmp_path / "judge-texture.safetensors"


def test_textured_model_world_runs_through_training_and_evaluation():
    """`shapes-textured` (issue 18): 64 classes (colour, texture, shape), trained on textured data, 256 tokens native
    and 64 weak; its labels, evaluation set and asked-for attributes all name the texture."""
    from flexi_core.flops import spec_flops
    from flexi_core.registry import get_spec
    from flexi_core.shapes.evaluate import eval_set, requested
    from flexi_core.shapes.train import class_ids, numpy_batch
    spec, plain = get_spec("shapes-textured"), get_spec("shapes")
    assert spec.textured and spec.class_names == data.TEXTURED_CLASS_NAMES
    assert spec.config["num_embeds_ada_norm"] == 64 and spec.vae == "vae-2x-texture"
    assert spec_flops(spec, spec.native_patch) > 3.9 * spec_flops(spec, spec.weak_patches["weak"])
    _, scenes, _ = numpy_batch(0, 64, 0, textured=spec.textured)
    assert {s.texture for s in scenes} == set(data.TEXTURES)
    ids = class_ids(spec, scenes)
    assert [spec.class_names[i] for i in ids] == [s.textured_class_name for s in scenes]
    assert class_ids(plain, scenes) == [s.class_id for s in scenes]  # the plain world ignores textures
    assert class_ids(get_spec("shapes-text-textured"), scenes) is None  # text models have no labels
    pixels, scenes, conditions = eval_set(spec, 128)
    assert sorted(conditions[:64]) == sorted(data.TEXTURED_CLASS_NAMES)  # balanced over the 64 classes
    assert requested(spec, scenes[1], conditions[1]) == {"colour": scenes[1].colour, "shape": scenes[1].shape,
                                                           "texture": scenes[1].texture}
    assert "texture" not in requested(plain, scenes[1], scenes[1].class_name)
    text = get_spec("shapes-text-textured")
    _, scenes, captions = eval_set(text, 64)
    for scene, caption in zip(scenes, captions):
        want = requested(text, scene, caption)
        assert ("texture" in want) == (scene.texture != "plain"), caption


def test_textured_models_train_their_own_data(monkeypatch):
    """The textured autoencoder and the textured models' distillation captions draw textured scenes."""
    from flexi_core.registry import get_spec
    from flexi_core.shapes import train
    drawn = []
    real = train.pixel_batch
    monkeypatch.setattr(train, "pixel_batch", lambda *a, **kw: drawn.append(kw.get("textured")) or real(*a, **kw))
    monkeypatch.setattr(train, "run_training", lambda name, model, loss_fn, *a, **kw: loss_fn(0))
    train.train_vae(Path("unused"), steps=1, batch_size=2, name="vae-2x-texture")
    train.train_vae(Path("unused"), steps=1, batch_size=2, name="vae-2x")
    assert drawn == [True, False]
    captions = train.procedural_captions(get_spec("shapes-text-textured"))(0, 200)
    assert any(t in c.split() for c in captions for t in data.TEXTURES[1:])
    assert not any(t in c.split() for c in train.procedural_captions(get_spec("shapes-text"))(0, 200)
                   for t in data.TEXTURES[1:])


def test_textured_words_are_read_and_a_judge_without_them_is_refused(tmp_path):
    from flexi_core.errors import FlexiDiTError
    from flexi_core.registry import get_spec
    from flexi_core.shapes.evaluate import Setting
    from flexi_core.shapes.reading import asked, describe
    spec = get_spec("shapes-textured")
    assert asked(spec, "red striped circle") == {"texture": "striped", "colour": "red", "shape": "circle"}
    assert asked(get_spec("shapes"), "red circle") == {"colour": "red", "shape": "circle"}
    got = {"colour": "red", "shape": "circle", "background": "black", "texture": "dotted"}
    assert describe({"texture": "striped", "colour": "red"}, got) == (
        "red dotted circle on black: texture dotted (asked striped)")
    assert describe({"colour": "red"}, {**got, "texture": "plain"}) == "red circle on black: as asked"
    assert spec.judge == "judge-texture.safetensors" and get_spec("shapes").judge == "judge.safetensors"
    (tmp_path / spec.judge).symlink_to(ASSETS / "judge.safetensors")  # the shipped judge reads no texture
    with pytest.raises(FlexiDiTError, match="draws textures and this judge reads none"):
        Setting.load("shapes-textured", 4, assets=tmp_path)
