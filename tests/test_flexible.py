"""The flexible wrapper: native exactness, PI-resize, positional embeddings, LoRA merge, save/load."""
import copy

import pytest
import torch

from conftest import OVERRIDES, WEAK, inputs, tiny_transformer
from flexi_core.families import family_of
from flexi_core.flexible import (FlexibleTransformer, patchify, pi_resize_embedding, resize_matrix,
                                 resize_output_projection, unpatchify)

FAMILIES = ["shapes", "shapes-text", "shapes-video"]


def make(name, variant, rank=4):
    base = tiny_transformer(name, **OVERRIDES[name])
    original = copy.deepcopy(base)
    return FlexibleTransformer(base, WEAK[name], variant, rank).eval(), family_of(original)


def perturb_lora(model):
    """LoRA B starts at zero; give the adapters weights, as training would."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)


@pytest.mark.parametrize("name", FAMILIES)
def test_native_patch_is_the_original_model(name):
    x, t, cond = inputs(name)
    with torch.no_grad():
        expected = make(name, "lora")[1].native_forward(x, t, cond)
        for variant in ("lora", "shared"):
            model, original = make(name, variant)
            if variant == "lora":
                perturb_lora(model)  # trained adapters must not touch the native size
            assert torch.equal(model(x, t, cond), original.native_forward(x, t, cond))
            assert torch.equal(model(x, t, cond), expected)
            if variant == "lora":
                model.merge_adapters()
                assert torch.equal(model(x, t, cond), expected)


@pytest.mark.parametrize("name", FAMILIES)
def test_merged_adapters_match_unmerged(name):
    model, _ = make(name, "lora")
    perturb_lora(model)
    x, t, cond = inputs(name)
    with torch.no_grad():
        unmerged = {m: model(x, t, cond, m) for m in model.weak_modes}
        model.merge_adapters()
        for m in model.weak_modes:
            torch.testing.assert_close(model(x, t, cond, m), unmerged[m], atol=1e-5, rtol=1e-5)
        model.unmerge_adapters()
        for m in model.weak_modes:
            assert torch.equal(model(x, t, cond, m), unmerged[m])


@pytest.mark.parametrize("name", FAMILIES)
def test_lora_changes_only_the_weak_path(name):
    model, _ = make(name, "lora")
    x, t, cond = inputs(name)
    with torch.no_grad():
        before = {m: model(x, t, cond, m) for m in model.patches}
        perturb_lora(model)
        after = {m: model(x, t, cond, m) for m in model.patches}
    assert torch.equal(before["native"], after["native"])
    for m in model.weak_modes:
        assert not torch.allclose(before[m], after[m])


@pytest.mark.parametrize("src,dst", [((1, 2, 2), (1, 4, 4)), ((1, 1, 1), (1, 2, 2)), ((1, 2, 2), (2, 2, 2)),
                                     ((1, 2, 2), (1, 3, 3))])
def test_pi_resize_identity(src, dst):
    """<x, w> = <Bx, w_new> for random native patches x: a weak token of the resized patch equals the native one."""
    torch.manual_seed(0)
    w = torch.randn(16, 4, *src, dtype=torch.float64)
    w_new = pi_resize_embedding(w, dst)
    b = resize_matrix(src, dst)
    x = torch.randn(8, 4, *src, dtype=torch.float64)
    bx = (x.reshape(8, 4, -1) @ b.T).reshape(8, 4, *dst)
    native = torch.einsum("ncthw,dcthw->nd", x, w)
    weak = torch.einsum("ncthw,dcthw->nd", bx, w_new)
    torch.testing.assert_close(weak, native, atol=1e-10, rtol=1e-10)


def test_resize_matrix_resizes():
    """B really is the bilinear resize: a constant patch stays constant, a ramp stays a ramp."""
    b = resize_matrix((1, 2, 2), (1, 4, 4))
    assert torch.allclose(b @ torch.ones(4, dtype=torch.float64), torch.ones(16, dtype=torch.float64))
    ramp = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)  # columns 0 and 1
    up = (b @ ramp).reshape(4, 4)
    assert torch.all(up[:, 1:] >= up[:, :-1]) and torch.allclose(up[0], up[3])


def test_weak_output_projection_is_resized_native_output():
    torch.manual_seed(0)
    c, d, src, dst = 4, 16, (1, 2, 2), (1, 4, 4)
    w, bias = torch.randn(c, *src, d, dtype=torch.float64), torch.randn(c, *src, dtype=torch.float64)
    new_w, new_b = resize_output_projection(w, bias, dst)
    h = torch.randn(5, d, dtype=torch.float64)
    native = (torch.einsum("cthwd,nd->ncthw", w, h) + bias).reshape(5, c, -1)
    weak = (h @ new_w.T + new_b).reshape(5, c, -1)
    torch.testing.assert_close(weak, native @ resize_matrix(src, dst).T)


@pytest.mark.parametrize("name", FAMILIES)
def test_embedding_layers_follow_the_native_ones(name):
    """The flexible model's weak embed/proj are the PI-resize of the model's own native layers."""
    model, _ = make(name, "shared")
    fam = model.family
    w, b = fam.native_embedding()
    for mode, patch in model.weak_modes.items():
        expected = pi_resize_embedding(w.double(), patch).reshape(w.shape[0], -1).float()
        torch.testing.assert_close(model.embeds[mode].weight, expected)
        assert torch.equal(model.embeds[mode].bias, b)


@pytest.mark.parametrize("name, mode", [("shapes-256", "weak"), ("shapes-video", "temporal")])
def test_native_layers_from_weak_ones_undo_the_initialisation(name, mode):
    """Progressive training's switch: the weak layers resized back to the native patch. Where a native patch is
    the block average of the weak one (patch 1 -> 2; frames 1 -> 2) it undoes the weak layers' initialisation
    exactly; trained weak layers carry over, the patch-size embedding into the bias."""
    from flexi_core.registry import build_transformer, get_spec
    spec = get_spec(name)
    base = build_transformer(spec) if name == "shapes-256" else tiny_transformer(name, **OVERRIDES[name])
    model = FlexibleTransformer(base, spec.weak_patches if name == "shapes-256" else WEAK[name], "shared")
    fam = model.family
    before = [t.clone() for t in (*fam.native_embedding(), *fam.native_output_projection())]
    model.native_from_weak(mode)
    for old, new in zip(before, (*fam.native_embedding(), *fam.native_output_projection())):
        torch.testing.assert_close(new, old, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        model.patch_size_embeds[mode].fill_(0.5)
        model.embeds[mode].weight.mul_(2)
    model.native_from_weak(mode)
    torch.testing.assert_close(fam.native_embedding()[1], model.embeds[mode].bias + 0.5)
    torch.testing.assert_close(fam.native_embedding()[0], 2 * before[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
def test_native_embedding_layout_matches_the_model(name):
    """Our canonical (c, t, h, w) patch flattening reproduces the model's own patch embedding token by token."""
    model, _ = make(name, "shared")
    fam, x = model.family, inputs(name)[0]
    w, b = fam.native_embedding()
    tokens, _ = patchify(fam.to_bcthw(x), fam.native_patch)
    ours = tokens @ w.reshape(w.shape[0], -1).T + b
    if name == "shapes-video":
        theirs = fam.model.patch_embed(torch.zeros(2, 24, 384), x)[:, 24:] - fam.model.patch_embed(
            torch.zeros(2, 24, 384), torch.zeros_like(x))[:, 24:] + b
    else:
        pe = fam.model.pos_embed
        theirs = pe(x) - pe.pos_embed if pe.pos_embed is not None else pe(x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_patchify_roundtrip():
    x = torch.randn(2, 3, 4, 8, 8)
    for patch in [(1, 2, 2), (2, 2, 2), (1, 4, 4), (2, 4, 4)]:
        tokens, grid = patchify(x, patch)
        assert torch.equal(unpatchify(tokens, grid, patch, 3), x)


@pytest.mark.parametrize("name", FAMILIES)
def test_weak_positions_span_the_native_coordinates(name):
    """A weak token's positional embedding is the native embedding at the position it starts at."""
    model, _ = make(name, "shared")
    fam = model.family
    native_grid = (8, 4, 4) if name == "shapes-video" else (1, 4, 4)
    native = model.positional_embedding(native_grid, fam.native_patch).reshape(*native_grid, -1)
    for mode, patch in model.weak_modes.items():
        ratio = [p // q for p, q in zip(patch, fam.native_patch)]
        grid = tuple(g // r for g, r in zip(native_grid, ratio))
        weak = model.positional_embedding(grid, patch).reshape(*grid, -1)
        torch.testing.assert_close(weak, native[::ratio[0], ::ratio[1], ::ratio[2]], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("variant", ["lora", "shared"])
def test_flexify_file_roundtrip(tmp_path, variant):
    model, _ = make("shapes-video", variant)
    if variant == "lora":
        perturb_lora(model)
    with torch.no_grad():
        for p in model.patch_size_embeds.values():
            p.normal_()
    path = tmp_path / "flexify.safetensors"
    model.save_flexify(path, dtype=torch.float32)
    fresh = tiny_transformer("shapes-video", seed=0)
    loaded = FlexibleTransformer.from_flexify_file(fresh, path).eval()
    x, t, cond = inputs("shapes-video")
    with torch.no_grad():
        for m in model.patches:
            assert torch.equal(loaded(x, t, cond, m), model(x, t, cond, m))


def test_flexify_file_of_wrong_model_is_rejected(tmp_path):
    model, _ = make("shapes", "lora")
    path = tmp_path / "f.safetensors"
    model.save_flexify(path)
    other = tiny_transformer("shapes", num_attention_heads=4)
    with pytest.raises(ValueError, match="does not fit"):
        FlexibleTransformer.from_flexify_file(other, path)


def test_unknown_mode_is_a_clear_error():
    model, _ = make("shapes", "lora")
    x, t, cond = inputs("shapes")
    with pytest.raises(ValueError, match="unknown patch mode"):
        model(x, t, cond, "tiny")
