"""The experiment spec: what the pipeline's notebooks run besides each model's config.

    exp = Experiment.load("tiny")                 # params/tiny.yaml over the defaults below
    exp = Experiment.load("tiny", seeds=[0])      # ... with overrides (a notebook's `spec` parameter)
    exp = Experiment.load("tiny", config={"max_steps": 50})  # config: key by key over the file's
    python -m ldlm.experiments.experiment --preset tiny judge # one value, for the Makefile: smollm2

The runs' configs are the preset's (ldlm/config.py) with `config` (the main comparison's runs) or
`ablation_config` (the ablation's) over it: any Config key, typed by config.make_config, the one loader;
the recipe variants apply on top. A list is a list, an int an int. Unknown keys and wrong types are
errors that name the key and the file. The names the Makefile pastes into commands
(datasets, judge, featurizer) must be known names or paths of a safe character set: a parameter file
never runs shell code.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..config import (TEMPERATURE_RULE, VARIANTS, Config, ConfigError, is_temperature, make_config,
    parse_problem)
from ..evaluation.judges import DEFAULT_FEATURIZER, DEFAULT_JUDGE
from ..evaluation.results import reference_run_id, run_id
from ..kinds.registry import KINDS
from ..text.data import HUB_DATASETS

PARAMS_DIR = Path(__file__).resolve().parents[2] / "params"


@dataclass
class Experiment:
    preset: str = "tiny"
    datasets: list[str] = field(default_factory=lambda: ["wiki"])  # main comparison: one table each
    # --- main comparison: every model, the same budget -------------------------------------------
    models: list[str] = field(default_factory=lambda: list(KINDS))
    config: dict[str, object] = field(default_factory=dict)  # Config keys over the preset's (budget, recipe)
    seeds: list[int] = field(default_factory=lambda: [0])
    step_counts: list[int] = field(default_factory=lambda: [100])  # sampling steps of LDLM and MDLM
    top_ps: list[float] = field(default_factory=lambda: [0.9, 1.0])  # the GPT's nucleus p
    # The quality-diversity frontier: per model kind, the temperatures it is also sampled at, at one setting
    # (LDLM and MDLM: the largest of step_counts; the GPT: p = 1), beside its default (LDLM 0, the others 1).
    # Per kind, since the kinds start far apart: LDLM's argmax samples are less diverse than held-out text,
    # the baselines' T = 1 samples as diverse; a kind left out (or an empty list) gets no frontier.
    frontier_temperatures: dict[str, list[float]] = field(default_factory=dict)
    # --- evaluation --------------------------------------------------------------------------------
    n_samples: int = 64
    sample_batch: int = 128
    reference_length: int = 64          # tokens per held-out reference row (the models' seq_len)
    reference_seed: int = 0             # which held-out rows play the samples and the MAUVE references
    judge: str = DEFAULT_JUDGE
    featurizer: str = DEFAULT_FEATURIZER
    # --- ablation ----------------------------------------------------------------------------------
    ablation_dataset: str | None = None  # None = the last of `datasets`
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    ablation_config: dict[str, object] = field(default_factory=dict)  # its runs' Config keys over the preset's
    ablation_seeds: list[int] = field(default_factory=lambda: [0])
    ablation_step_count: int = 50
    # --- speed benchmark and latent inspection -----------------------------------------------------
    bench_step_counts: list[int] = field(default_factory=lambda: [10, 30, 100])
    bench_batches: list[int] = field(default_factory=lambda: [1, 64])
    bench_repeats: int = 3
    bench_compile: bool = False  # also time training with compile=on, beside the eager rows
    bench_threads: list[int] = field(default_factory=list)  # also time eager training on these CPU thread counts
    n_sentences: int = 64
    trajectory_steps: int = 50

    @classmethod
    def load(cls, preset: str = "tiny", params_dir: str | Path | None = None, **overrides) -> "Experiment":
        """The defaults, then params/<preset>.yaml if there is one, then `overrides`."""
        import yaml

        path = Path(params_dir or PARAMS_DIR) / f"{preset}.yaml"
        values = {}
        if path.is_file():
            try:  # safe_load: a !!python/object tag is refused, never built
                values = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: not a readable YAML experiment spec ({parse_problem(err)}); fix it") from None
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: expected a mapping of experiment keys")
        from_dict(values, source=str(path))  # a bad file is named as such
        source = f"{path} with spec {overrides}"
        merged = {k: {**values.get(k, {}), **overrides[k]} for k in ("config", "ablation_config")  # key by key
                  if isinstance(values.get(k, {}), dict) and isinstance(overrides.get(k), dict)}
        exp = from_dict({**values, "preset": preset, **overrides, **merged}, source=source)
        make_config(exp.preset)  # an unknown preset fails here
        for key in ("config", "ablation_config"):  # typed and checked by the one config loader, at load
            try:
                make_config(exp.preset, base=getattr(exp, key))
            except ConfigError as err:
                raise ConfigError(f"{source}: {key}: {err}") from None
        return exp

    def ablation(self) -> "Experiment":
        """The ablation's experiment: its dataset, config, seeds and sampling steps in the main fields."""
        return dataclasses.replace(self, datasets=[self.ablation_on], config=self.ablation_config,
                                   seeds=self.ablation_seeds, step_counts=[self.ablation_step_count],
                                   frontier_temperatures={})

    @property
    def ablation_on(self) -> str:
        """The ablation's dataset."""
        return self.ablation_dataset or self.datasets[-1]

    @property
    def all_datasets(self) -> list[str]:
        """Every dataset the experiment trains on (its caches): the main ones, then the ablation's."""
        return list(dict.fromkeys([*self.datasets, self.ablation_on]))

    def run_config(self, dataset: str, kind: str = "ldlm", variant: str = "full", seed: int = 0) -> Config:
        """The config of one run (`kind`: ldlm | mdlm | ar): the preset, this experiment's `config` over it,
        then the recipe variant."""
        return make_config(self.preset, base=self.config, dataset=dataset, model=kind, variant=variant, seed=seed)

    def runs(self) -> list[Run]:
        """Every run the notebooks make: the main comparison's, then the ablation's."""
        ablation = self.ablation()
        main = [Run(self, d, k, "full", s) for d in self.datasets for s in self.seeds for k in self.models]
        return main + [Run(ablation, ablation.ablation_on, "ldlm", v, s) for s in ablation.seeds for v in ablation.variants]

    def run_ids(self) -> set[str]:
        """Every run id this spec makes, as the notebooks run it: its runs' and each dataset's reference row's.
        Its tables and figures show these runs' rows (results.of_runs); any other run id in results/ is a
        renamed or removed run's (its rows stay there) or another spec's."""
        return {run_id(r.config().to_dict()) for r in self.runs()} | {reference_run_id(d) for d in self.all_datasets}


@dataclass(frozen=True)
class Run:
    """One run of an experiment (the main comparison or its ablation): a model kind and recipe variant trained
    on a dataset with a seed."""
    exp: Experiment
    dataset: str
    kind: str = "ldlm"
    variant: str = "full"
    seed: int = 0

    def config(self) -> Config:
        return self.exp.run_config(self.dataset, self.kind, self.variant, self.seed)


_TYPES = typing.get_type_hints(Experiment)


def _temperatures(key: str, value, source: str) -> dict[str, list[float]]:
    """A {model kind: [temperatures]} mapping: known kinds, each a list of numbers >= 0 (one number: a list)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}={value!r} is not a mapping of model kind to temperatures, "
                          f"e.g. {{ldlm: [0.5, 1.0], mdlm: [0.8]}}")
    out = {}
    for kind, temperatures in value.items():
        check_kind(key, kind, source)
        temperatures = temperatures if isinstance(temperatures, list) else [temperatures]
        if not all(is_temperature(t) for t in temperatures):
            raise ConfigError(f"{source}: {key}[{kind}]={temperatures!r}: each {TEMPERATURE_RULE}")
        out[kind] = [float(t) for t in temperatures]
    return out


def check_kind(key: str, name: str, source: str) -> None:
    """ConfigError unless `name` is a model kind (ldlm.kinds.registry.KINDS)."""
    if name not in KINDS:
        raise ConfigError(f"{source}: {key} has an unknown model kind {name!r}; kinds: {list(KINDS)}")


RUN_NAMED = {"preset", "dataset", "model", "variant", "seed"}  # set per run by the experiment's own keys


def _config(key: str, value, source: str) -> dict:
    """Config keys over the preset's; the experiment names its runs itself (datasets, models, variants, seeds)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}={value!r} is not a mapping of config keys, e.g. {{max_steps: 150}}")
    named = sorted(set(value) & RUN_NAMED)
    if named:
        raise ConfigError(f"{source}: {key} sets {named}, which the experiment sets per run: use the keys "
                          f"datasets, models, variants and seeds")
    return dict(value)


def _check(key: str, value, source: str):
    kind, given = _TYPES[key], value
    if key in ("config", "ablation_config"):
        return _config(key, value, source)
    if typing.get_origin(kind) is dict:
        return _temperatures(key, value, source)
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    if value is None and optional:
        return None
    base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind  # int | None -> int
    origin = typing.get_origin(base)
    if origin is list:
        item = typing.get_args(base)[0]
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, item) or (item is float and isinstance(v, int)) for v in value):
            return [item(v) for v in value]
    elif isinstance(value, base) and (base is bool or not isinstance(value, bool)) or (base is float and isinstance(value, int)):
        return base(value)
    raise ConfigError(f"{source}: {key}={given!r} is not a {getattr(base, '__name__', base)}"
                      f"{' or null (= the preset value)' if optional else ''}")


DATASETS = ("wiki", "news", *HUB_DATASETS)
SAFE_PATH = re.compile(r"[A-Za-z0-9._/+-]+")  # no blank, quote, $, ;, :, ... : safe in a make target and a shell word
SAFE_MODEL = re.compile(r"[A-Za-z0-9._/][A-Za-z0-9._/-]*")  # a judge's name, hub id or folder; not an option


def _check_name(key: str, value: str, source: str) -> None:
    """ConfigError unless the Makefile may paste `value` of `key` into a target name and a command."""
    if key in ("datasets", "ablation_dataset"):
        kind, _, path = value.partition(":")
        if not (value in DATASETS or kind in ("text", "jsonl") and SAFE_PATH.fullmatch(path)):
            raise ConfigError(f"{source}: {key} entry {value!r} is not a dataset: choose {', '.join(DATASETS)}, "
                              f"text:PATH or jsonl:PATH with PATH of letters, digits and . _ / + - only")
    elif not SAFE_MODEL.fullmatch(value):
        raise ConfigError(f"{source}: {key}={value!r} is not a model name: use letters, digits and . _ / - only, "
                          f"not a leading - (a name such as smollm2, a hub id or a folder)")


def from_dict(values: dict, source: str = "experiment") -> Experiment:
    names = {f.name for f in dataclasses.fields(Experiment)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown experiment key(s) {unknown}; known: {sorted(names)}")
    checked = {k: _check(k, v, source) for k, v in values.items()}
    for name in checked.get("models", []):
        check_kind("models", name, source)
    for key in [k for k in ("datasets", "ablation_dataset", "judge", "featurizer") if checked.get(k) is not None]:
        for name in checked[key] if key == "datasets" else [checked[key]]:  # what the Makefile pastes into commands
            _check_name(key, name, source)
    return Experiment(**checked)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldlm.experiments.experiment", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny", help="the experiment spec params/<preset>.yaml (its runs' budgets "
                                                         "over the preset's own)")
    parser.add_argument("key", help="the experiment key to print (lists: space-separated)")
    args = parser.parse_args(argv)
    try:
        exp = Experiment.load(args.preset)
        if args.key not in {f.name for f in dataclasses.fields(exp)} | {"ablation_on", "all_datasets"}:
            raise ConfigError(f"unknown experiment key {args.key!r}")
        value = getattr(exp, args.key)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(" ".join(map(str, value)) if isinstance(value, list) else ("" if value is None else value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
