"""Every registered model kind meets the one protocol the loop, samplers, benchmark and pipeline call."""
import math

import pytest
import torch

from ldlm.kinds.build import build_model, model_class
from ldlm.kinds.registry import KINDS
from ldlm.sampling.settings import sampling_settings
from ldlm.config import ConfigError, make_config
from ldlm.nets.noise import SampleNoise
from ldlm.kinds.protocol import LossOutput, TextModel

VOCAB, LM_WIDTH, B = 60, 24, 4


def small(kind: str) -> TextModel:
    cfg = make_config("smoke", model=kind, seq_len=12, batch_size=B)
    torch.manual_seed(0)
    return build_model(cfg, VOCAB, lm_width=LM_WIDTH)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (B, 12), generator=g)
    return torch.randn(B, 12, LM_WIDTH, generator=g), tokens, torch.tensor([12, 12, 9, 5])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_trains_evaluates_and_samples_through_the_protocol(kind):
    model = small(kind).train()
    h, tokens, lengths = batch()
    out = model.loss(h if model.uses_frozen_lm else None, tokens, lengths, SampleNoise(0, 3, range(B)), step=3)
    assert isinstance(out, LossOutput) and math.isfinite(out.loss.item()) and out.parts["loss"] == out.loss.item()
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())  # the loss trains it
    if out.t is not None:  # a kind that learns its timestep distribution gets the per-sample losses
        assert out.t.shape == out.per_sample.shape == (B,)
        model.observe(out.t, out.per_sample)
    model.eval()
    sums = model.held_out_sums(h if model.uses_frozen_lm else None, tokens, lengths, SampleNoise(0, 2**40, range(B)))
    assert tuple(sums) == model.held_out_keys
    metrics = model.held_out_metrics({k: float(v) for k, v in sums.items()})
    assert metrics["valid_tokens"] == int(lengths.sum())  # padding is not evaluated
    ids = model.generate(2, 3, torch.Generator().manual_seed(0))
    assert ids.shape == (2, 12) and ids.dtype == torch.long
    settings = sampling_settings(model, [3, 5], [0.9, 1.0])
    record = model.sampling_record(settings[0]["steps"], None, settings[0]["top_p"])
    assert {"steps", "top_p", "sampler", "draw_dtype"} <= set(record) and model.nfe(record["steps"]) >= 1
    assert KINDS[kind].forward_flops(model)["grad"] > 0 and model.compile_targets()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_compile_on_compiles_what_the_loss_runs(kind):
    # nn.Module.compile() compiled `forward`, which the baselines' losses never call: compile=on did nothing
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model, counter = small(kind).train(), CompileCounter()
    h, tokens, lengths = batch()
    eager = model.loss(h if model.uses_frozen_lm else None, tokens, lengths, SampleNoise(0, 3, range(B)), step=3).loss
    model.compile_hot_paths(backend=counter)
    compiled = model.loss(h if model.uses_frozen_lm else None, tokens, lengths, SampleNoise(0, 3, range(B)), step=3).loss
    assert counter.frame_count >= len(model.compile_targets())  # every target traced on the loss's path
    assert torch.allclose(compiled, eager, rtol=1e-5)
    assert not any("_orig_mod" in k for k in model.state_dict())  # checkpoints keep their keys


def test_the_same_seed_gives_the_same_samples_for_every_kind():
    for kind in KINDS:
        model = small(kind).eval()
        draw = lambda: model.generate(2, 3, torch.Generator().manual_seed(7))
        assert torch.equal(draw(), draw()), kind


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_samples_at_a_temperature_and_records_it(kind):
    """One knob through the one protocol: the default is the kind's (LDLM 0, the baselines 1) and gives the
    samples of no temperature at all; another temperature gives other samples; bad values are named."""
    model = small(kind).eval()
    draw = lambda t: model.generate(2, 3, torch.Generator().manual_seed(7), temperature=t)
    default = model.default_temperature
    assert default == {"ldlm": 0.0, "mdlm": 1.0, "ar": 1.0}[kind]
    other = 0.5 if default == 0 else 0.0  # MDLM's zero-initialised head is uniform at every T > 0
    assert torch.equal(draw(None), draw(default)) and not torch.equal(draw(default), draw(other))
    assert model.sampling_record(3, None, 1.0)["temperature"] == default
    assert model.sampling_record(3, None, 1.0, 0.5)["temperature"] == 0.5
    for bad in (-1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match=f"temperature={bad!r}: must be a number >= 0"):
            draw(bad)


def test_the_frontier_settings_come_after_the_sweep_at_one_setting():
    """LDLM and MDLM: the step counts at the default temperature, then the largest step count at the
    frontier's temperatures (its default once); the GPT: its nucleus p values, then p = 1 at each temperature.
    A setting at the default temperature keeps its name (and its sample files); no temperatures, no frontier."""
    ldlm, gpt = small("ldlm"), small("ar")
    names = lambda model, *args: [s["name"] for s in sampling_settings(model, *args)]
    assert names(ldlm, [10, 30, 100], [0.9], [0.5, 1.0, 0.0]) == ["k10", "k30", "k100", "k100-T0.5", "k100-T1"]
    assert names(ldlm, [10, 30], [0.9]) == ["k10", "k30"]
    assert names(gpt, [10], [0.9, 1.0], [0.7]) == ["p0.9", "p1", "p1-T0.7"]
    assert names(gpt, [10], [0.9], [0.7]) == ["p0.9", "p1", "p1-T0.7"]  # the frontier's own default point
    frontier = sampling_settings(small("mdlm"), [10, 100], [0.9], [0.8])[-1]
    assert frontier == dict(name="k100-T0.8", steps=100, top_p=1.0, temperature=0.8)


def test_an_unknown_kind_names_the_registry():
    with pytest.raises(ConfigError, match="ldlm"):
        model_class("diffusion-gpt")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_computes_the_gelu_its_config_names_with_the_same_weights(kind):
    from torch import nn

    from ldlm.config import config_from_dict

    models = {}
    for form in ("tanh", "exact"):
        cfg = make_config("smoke", model=kind, seq_len=12, batch_size=B, gelu=form)
        torch.manual_seed(0)
        models[form] = build_model(cfg, VOCAB, lm_width=LM_WIDTH).eval()
    forms = {form: {m.approximate for m in model.modules() if isinstance(m, nn.GELU)} for form, model in models.items()}
    assert forms == {"tanh": {"tanh"}, "exact": {"none"}}
    with torch.no_grad():  # weights away from the zero-initialised outputs, so every block's GELU shows in the loss
        for p in models["tanh"].parameters():
            p.add_(0.05 * torch.randn_like(p))
    models["exact"].load_state_dict(models["tanh"].state_dict())  # the form is no parameter: a checkpoint loads either way
    h, tokens, lengths = batch()
    losses = [models[f].loss(h if models[f].uses_frozen_lm else None, tokens, lengths, SampleNoise(0, 3, range(B)), step=3)
              .loss.item() for f in ("tanh", "exact")]
    assert losses[0] != losses[1] and math.isclose(*losses, rel_tol=1e-2)  # the two GELUs differ by < 1e-3
    # a config saved before the key existed (earlier versions' runs and saved models) keeps the tanh it was trained with
    saved = make_config("smoke", model=kind).to_dict()
    del saved["gelu"]
    assert config_from_dict(saved).gelu == "tanh"
    with pytest.raises(ConfigError, match="gelu"):
        make_config("smoke", gelu="erf")
