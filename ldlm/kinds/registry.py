"""The model kinds, one record each: everything the kit says about a kind besides its class's code.

Training, sampling and evaluation read a kind's class (`TextModel`); tables, figures, readings, model cards,
experiment specs and the `model=` config key read this record. Adding a kind: its class (a module in
kinds/, its networks in nets/) and one `Kind` here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..config import ConfigError
from .baselines import Autoregressive, MaskedDiffusion, ar_forward_flops, mdlm_forward_flops
from .ldlm import LDLM, ldlm_forward_flops
from .protocol import TextModel


@dataclass(frozen=True)
class Kind:
    name: str                   # the `model=` config key's value, in run ids and result rows
    model: type[TextModel]
    label: str                  # in tables, figure legends and sample headers
    called: str                 # in a sentence ("... the GPT's Gen PPL ...")
    about: str                  # a saved model's card says what it is
    colour: str                 # in every figure (seaborn's colorblind palette)
    marker: str
    forward_flops: Callable     # (model, classes) -> {"grad", "no_grad"}: FLOPs of a training sequence (nets.flops)
    knob: str = "steps"         # the sampling setting its main-table sweep varies: steps, or the GPT's top_p


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("ldlm", LDLM, "LDLM", "LDLM", "LDLM (latent diffusion language model, jointly trained latent space)",
         "#0173b2", "o", ldlm_forward_flops),
    Kind("mdlm", MaskedDiffusion, "MDLM", "MDLM", "MDLM baseline (masked diffusion over tokens)", "#de8f05", "s",
         mdlm_forward_flops),
    Kind("ar", Autoregressive, "AR (GPT)", "the GPT", "GPT baseline (autoregressive)", "#029e73", "^",
         ar_forward_flops, knob="top_p"),
)}


def kind(name: str) -> Kind:
    """The record of kind `name`; a ConfigError naming it and the kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"model={name!r}: choose one of {sorted(KINDS)}") from None
