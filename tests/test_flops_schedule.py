"""FLOPs by formula against torch's counter and the public anchors; budgets -> schedules."""
import pytest
import torch

from conftest import OVERRIDES, WEAK, inputs, tiny_transformer
from flexi_core import flops, registry
from flexi_core.flexible import FlexibleTransformer
from flexi_core.schedule import (LEAD_END_FACTOR, NATIVE_UNCOND_LEAST, NATIVE_UNCOND_SHARE, UNCOND_WEAK_FACTOR,
                                 Schedule, most_weak_uncond, schedule_for_budget, total_flops)


def test_dit_xl2_anchors():
    """DiT-XL/2 at 256 px: 237.3 GFLOPs at p=2, 58.2 at p=4 (the DiT paper's 118.6/29.1/7.4 GMACs)."""
    spec = registry.get_spec("dit-xl-2-256")
    assert flops.spec_flops(spec, (1, 2, 2)) / 1e9 == pytest.approx(237.3, rel=0.01)
    assert flops.spec_flops(spec, (1, 4, 4)) / 1e9 == pytest.approx(58.2, rel=0.01)
    assert flops.spec_flops(spec, (1, 8, 8)) / 2e9 == pytest.approx(7.4, rel=0.01)


def test_dit_xl2_formula_matches_counter_on_meta():
    spec = registry.get_spec("dit-xl-2-256")
    with torch.device("meta"):
        model = registry.build_transformer(spec)
        x, t, y = torch.randn(1, 4, 32, 32), torch.tensor([5]), torch.tensor([3])
    counted = flops.counted_flops(lambda: model(x, t, y))
    assert flops.spec_flops(spec) == pytest.approx(counted, rel=0.01)


@pytest.mark.parametrize("name", ["shapes", "shapes-text", "shapes-video"])
@pytest.mark.parametrize("rank", [0, 4])
def test_formula_matches_counter_for_every_patch(name, rank):
    """Built on CPU (PI-resize needs real numbers), counted on the meta device so attention is counted too."""
    spec = registry.get_spec(name)
    base = tiny_transformer(name, **OVERRIDES[name])
    config = dict(base.config)
    model = FlexibleTransformer(base, WEAK[name], "lora" if rank else "shared", rank or 8).to("meta")
    x, t, cond = (v.to("meta") if torch.is_tensor(v) else {k: c.to("meta") for k, c in v.items()}
                  for v in inputs(name, batch=1))
    for mode, patch in model.patches.items():
        counted = flops.counted_flops(lambda: model(x, t, cond, mode))
        lora = rank if mode != "native" else 0
        formula = flops.forward_flops(spec.family, config, tuple(x.shape[1:]), patch, 1, spec.text_tokens, lora)
        assert formula == pytest.approx(counted, rel=0.01), (mode, formula, counted)


def test_weak_patch_cuts_flops_at_least_fourfold_on_dit():
    spec = registry.get_spec("dit-xl-2-256")
    assert flops.spec_flops(spec, (1, 2, 2)) / flops.spec_flops(spec, (1, 4, 4)) >= 4


FLOPS_OF = {"native": 100, "weak": 23}


@pytest.mark.parametrize("guidance", [False, True])
@pytest.mark.parametrize("lead", [0, 6])
@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_budget_never_exceeded_and_monotone(guidance, lead, sampler):
    steps, previous = 50, -1
    static = total_flops(Schedule.static(steps), FLOPS_OF, guidance)
    for b in [i / 100 for i in range(24, 101)]:
        s = schedule_for_budget(b, steps, FLOPS_OF, guidance, lead=lead, sampler=sampler)
        used = total_flops(s, FLOPS_OF, guidance)
        assert used <= b * static + 1e-9
        assert used >= previous  # more budget never buys fewer native steps
        previous = used
        weak_cond, weak_uncond = steps - s.native_cond, steps - s.native_uncond
        if not guidance:
            assert weak_uncond == weak_cond
            continue
        assert weak_cond <= weak_uncond <= min(steps, UNCOND_WEAK_FACTOR * weak_cond)
        assert s.native_uncond >= int(NATIVE_UNCOND_SHARE[sampler] * s.native_cond)  # a native guidance base
        assert s.native_uncond >= min(s.native_cond, NATIVE_UNCOND_LEAST[sampler])  # ... and at least its last step
        # and it is the best one: one more native conditional step (even with the unconditional pass as weak as
        # allowed) or one more native unconditional step would break the budget
        over = lambda wc, wu, lead=s.lead: total_flops(  # noqa: E731
            Schedule(steps, steps - wc, steps - wu, lead=lead), FLOPS_OF, guidance) > b * static
        assert LEAD_END_FACTOR * s.lead <= s.native_cond  # leading native steps never displace the native end
        if s.lead < lead:  # ... and there are as many as the budget allows under that rule
            longer = steps - LEAD_END_FACTOR * (s.lead + 1)
            assert over(longer, most_weak_uncond(steps, longer, sampler), s.lead + 1)
        if weak_cond > 0:
            assert over(weak_cond - 1, most_weak_uncond(steps, weak_cond - 1, sampler))
        if weak_uncond > weak_cond:
            assert over(weak_cond, weak_uncond - 1)
    assert schedule_for_budget(1.0, steps, FLOPS_OF, guidance).weak_steps == 0


def test_guided_schedules_keep_the_unconditional_pass_weak_longer():
    """The paper's x/y schedules: at 56% of the FLOPs the conditional pass runs native for more steps than the
    unconditional one; with the budget the weak model alone costs, both are weak throughout."""
    s = schedule_for_budget(0.56, 25, FLOPS_OF, True)
    assert s.native_cond > s.native_uncond and s.label == "15/6"  # weak: 10 conditional, 19 unconditional steps
    assert schedule_for_budget(0.4, 10, FLOPS_OF, True).label == "4/0"
    # ... with DPM-Solver++ never without a native guidance base at the end: 3/0 and 2/0 collapse few-step samples
    assert schedule_for_budget(0.56, 25, FLOPS_OF, True, sampler="dpm").label == "14/7"
    assert schedule_for_budget(0.4, 10, FLOPS_OF, True, sampler="dpm").label == "3/1"
    assert schedule_for_budget(0.23, 25, FLOPS_OF, True).label == "0/0"
    assert schedule_for_budget(1.0, 25, FLOPS_OF, True).label == "25/25"


def test_weak_steps_without_guidance_skip_the_unconditional_pass():
    s = Schedule(10, 4, 2, weak_guidance=False)
    modes = [s.modes(i) for i in range(10)]
    assert modes == [("weak", None)] * 6 + [("native", "weak")] * 2 + [("native", "native")] * 2
    assert total_flops(s, FLOPS_OF, True) == 6 * 23 + 2 * (100 + 23) + 2 * 200  # no unconditional weak pass
    assert s.label == "4/2, weak unguided" and s.runs(unconditional=True)[0] == (None, 1, 6)
    assert Schedule(10, 10, 10, weak_guidance=False).label == "10/10"  # no weak step: nothing to say
    assert Schedule.parse("4/2", 10, weak_guidance=False) == s


@pytest.mark.parametrize("sampler", ["ddim", "dpm"])
def test_budgets_below_unguided_below_buy_more_native_steps(sampler):
    """Below `unguided_below` the weak steps run without guidance: within the budget still, and with at least as
    many native conditional steps as the guided rule affords; at and above it the guided rule, unchanged."""
    steps = 10
    static = total_flops(Schedule.static(steps), FLOPS_OF, True)
    for b in [i / 100 for i in range(24, 101)]:
        s = schedule_for_budget(b, steps, FLOPS_OF, True, sampler=sampler, unguided_below=0.5)
        guided = schedule_for_budget(b, steps, FLOPS_OF, True, sampler=sampler)
        assert total_flops(s, FLOPS_OF, True) <= b * static + 1e-9
        if b >= 0.5:
            assert s == guided
        else:
            assert not s.weak_guidance and s.native_cond >= guided.native_cond
    assert schedule_for_budget(0.4, steps, FLOPS_OF, True, sampler="dpm", unguided_below=0.5).label == \
        "4/2, weak unguided"  # the guided rule: 3/1
    # without guidance there is no unconditional pass to skip
    assert schedule_for_budget(0.4, steps, FLOPS_OF, False, unguided_below=0.5).weak_guidance


def test_a_models_unconditional_share_keeps_more_native_guidance():
    """`uncond_share` (shapes-video's spatial mode: 2/3) raises the sampler's share; never lowers it."""
    assert schedule_for_budget(0.45, 8, FLOPS_OF, True, sampler="dpm").label == "3/1"
    assert schedule_for_budget(0.45, 8, FLOPS_OF, True, sampler="dpm", uncond_share=2 / 3).label == "2/2"
    assert schedule_for_budget(0.45, 8, FLOPS_OF, True, sampler="dpm", uncond_share=0.1).label == "3/1"
    assert most_weak_uncond(8, 5, "ddim", uncond_share=2 / 3) == 6  # 3 native conditional steps keep 2


def test_dpm_keeps_a_native_guidance_base_for_a_single_native_step():
    """With DPM-Solver++ one native conditional step is never guided from the weak model (1/0 collapses): the
    schedule is 1/1 where that fits, else the weak model alone; DDIM may take 1/0."""
    assert most_weak_uncond(6, 5, "dpm") == 5 and most_weak_uncond(6, 5, "ddim") == 6
    weak_alone = total_flops(Schedule(6, 0, 0), FLOPS_OF, True) / total_flops(Schedule.static(6), FLOPS_OF, True)
    one_native = total_flops(Schedule(6, 1, 0), FLOPS_OF, True) / total_flops(Schedule.static(6), FLOPS_OF, True)
    assert schedule_for_budget(one_native, 6, FLOPS_OF, True, sampler="ddim").label == "1/0"
    assert schedule_for_budget(one_native, 6, FLOPS_OF, True, sampler="dpm").label == "0/0"
    assert weak_alone < one_native


@pytest.mark.parametrize("budget", [0, -0.5, 1.5, float("nan"), 0.1])
def test_bad_budgets_are_refused(budget):
    with pytest.raises(ValueError):
        schedule_for_budget(budget, 50, FLOPS_OF, True)


def test_schedule_modes_and_xy_notation():
    s = Schedule.parse("7/3", 10)
    modes = [s.modes(i) for i in range(10)]
    assert modes[:3] == [("weak", "weak")] * 3  # weak first
    assert modes[3:7] == [("native", "weak")] * 4  # cond native for the last 7, uncond for the last 3
    assert modes[7:] == [("native", "native")] * 3
    reverse = Schedule(10, 7, 7, weak_last=True)
    assert [reverse.modes(i)[0] for i in range(10)] == ["native"] * 7 + ["weak"] * 3
    assert total_flops(s, FLOPS_OF, True) == (7 * 100 + 3 * 23) + (3 * 100 + 7 * 23)


def test_leading_native_steps_come_before_the_weak_ones_in_both_passes():
    s = Schedule(10, 4, 1, lead=2)
    assert [s.modes(i) for i in range(10)] == [("native", "native")] * 2 + [("weak", "weak")] * 4 + \
        [("native", "weak")] * 3 + [("native", "native")]
    assert s.label == "4/1 after 2 native" and s.weak_steps == 4
    assert s.runs() == [("native", 1, 2), ("weak", 3, 6), ("native", 7, 10)]
    assert s.runs(unconditional=True) == [("native", 1, 2), ("weak", 3, 9), ("native", 10, 10)]
    reverse = Schedule(10, 4, 1, lead=2, weak_last=True)  # the same steps, in reverse order
    assert [reverse.modes(i) for i in range(10)] == [s.modes(9 - i) for i in range(10)]
    assert Schedule(10, 10, 10, lead=2).label == "10/10" and Schedule(10, 9, 9, lead=3).label == "9/9 after 1 native"
    fitted = schedule_for_budget(0.45, 10, FLOPS_OF, True, lead=3)  # the budget cannot pay for 3 leading steps
    assert fitted.lead == 1 and fitted.label == "3/0 after 1 native"
    assert schedule_for_budget(0.4, 10, FLOPS_OF, True, lead=3).label == "4/0"  # a lead would leave 2 native < 3 x 1
    assert schedule_for_budget(0.3, 10, FLOPS_OF, True, lead=3).label == "1/0"  # not "0/0 after 1 native"
    with pytest.raises(ValueError):
        Schedule(10, 4, 1, lead=11)
