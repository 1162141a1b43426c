"""The settings an experiment samples a model at: name (in sample file names), steps, top_p, temperature.

A kind's record says which knob its sweep varies (ldlm.kinds.registry.Kind.knob): the diffusion kinds are
sampled at each step count, the GPT (its steps fixed by the length) at each nucleus p. Then the
quality-diversity frontier: one setting at each of the experiment's temperatures for the kind.
"""
from __future__ import annotations

from ..kinds.protocol import TextModel
from ..kinds.registry import kind


def setting(model: TextModel, name: str, steps: int, top_p: float, temperature: float | None = None) -> dict:
    """One sampling setting; a temperature other than the kind's default is in its name (`name`-T0.5), so the
    default's keeps the name (and sample files) it had before temperatures."""
    t = model.temperature(temperature)
    return dict(name=name if t == model.default_temperature else f"{name}-T{t:g}", steps=steps, top_p=top_p,
                temperature=t)


def sampling_settings(model: TextModel, step_counts: list[int], top_ps: list[float], temperatures=()) -> list[dict]:
    """The sweep (each step count, or for a top_p kind each nucleus p, at the default temperature), then the
    frontier: the sweep's last setting without truncation (the largest step count; p = 1) at the default
    temperature and at each of `temperatures` (nothing without temperatures); a setting already there is not
    repeated."""
    if kind(model.cfg.model).knob == "top_p":
        steps = model.nfe(0)  # fixed by the length: one network call per token
        sweep = [setting(model, f"p{p:g}", steps, p) for p in top_ps]
        at = lambda t: setting(model, "p1", steps, 1.0, t)
    else:
        top = max(step_counts)
        sweep = [setting(model, f"k{k}", k, 1.0) for k in step_counts]
        at = lambda t: setting(model, f"k{top}", top, 1.0, t)
    points = dict.fromkeys([model.default_temperature, *map(float, temperatures)]) if temperatures else {}
    return list({s["name"]: s for s in [*sweep, *(at(t) for t in points)]}.values())
