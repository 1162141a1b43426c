"""The experiment spec: params/<preset>.yaml read in one place, passed whole, asked for by the Makefile."""
import subprocess
import sys
from pathlib import Path

import pytest

from ldlm.config import ConfigError, make_config
from ldlm.experiments.experiment import Experiment

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", ["smoke", "tiny", "gpu", "lm1b", "owt"])
def test_every_parameter_file_is_a_valid_spec(preset):
    exp = Experiment.load(preset)
    assert exp.preset == preset and exp.datasets and all(isinstance(s, int) for s in exp.seeds)


def test_a_run_config_is_the_presets_with_the_specs_config_over_it():
    exp = Experiment.load("smoke")
    assert exp.config == {} and exp.run_config("wiki") == make_config("smoke", dataset="wiki")
    assert Experiment.load("smoke", config={"max_steps": 7}).run_config("wiki", kind="mdlm", seed=3).max_steps == 7
    cfg = Experiment.load("tiny", config={"max_steps": 9}).run_config("news", variant="no_mse", seed=1)
    assert (cfg.max_steps, cfg.dataset, cfg.decoder_loss, cfg.seed) == (9, "news", "ce", 1)


def test_any_config_key_can_be_set_in_a_spec_typed_by_the_config_loader():
    exp = Experiment.load("smoke", config={"decoder_noise": 2, "gamma_max": "0.3", "encoder_warmup": "off"})
    cfg = exp.run_config("wiki")
    assert (cfg.decoder_noise, cfg.gamma_max, cfg.encoder_warmup) == (2.0, 0.3, False)


def test_a_recipe_variant_still_turns_its_component_off_over_the_specs_config():
    exp = Experiment.load("smoke", config={"decoder_noise": 2.0})
    assert exp.run_config("wiki", variant="no_decoder_noise").decoder_noise == 0.0
    assert exp.run_config("wiki", variant="no_mse").decoder_noise == 2.0


def test_a_notebooks_config_is_merged_key_by_key_over_the_files():
    exp = Experiment.load("tiny", config={"max_steps": 9})
    assert exp.config == {"max_steps": 9, "decoder_noise": 0.5}


def test_the_tiny_spec_states_its_decoder_noise_for_both_halves():
    exp = Experiment.load("tiny")
    assert exp.config["decoder_noise"] == exp.ablation_config["decoder_noise"] == 0.5
    assert exp.run_config("wiki").decoder_noise == exp.ablation().run_config("news").decoder_noise == 0.5


@pytest.mark.parametrize("bad, named", [({"max_step": 1}, "max_step"), ({"max_steps": "many"}, "max_steps"),
                                        ({"seed": 3}, "seeds"), ({"variant": "naive"}, "variants")])
def test_a_bad_config_key_in_a_spec_names_the_key_and_the_file(bad, named):
    with pytest.raises(ConfigError, match=named) as err:
        Experiment.load("smoke", config=bad)
    assert "smoke.yaml" in str(err.value)
    with pytest.raises(ConfigError, match="ablation_config"):
        Experiment.load("smoke", ablation_config=bad)


def test_the_ablation_brings_its_own_config_seeds_and_sampling_steps():
    exp = Experiment.load("tiny")
    ablation = exp.ablation()
    assert ablation.config == exp.ablation_config and ablation.config != exp.config
    assert ablation.seeds == exp.ablation_seeds and ablation.step_counts == [exp.ablation_step_count]
    assert ablation.run_config("news").batch_size == exp.ablation_config["batch_size"]
    assert ablation.datasets == [exp.ablation_on]


def test_the_ablation_runs_on_its_own_dataset_else_on_the_last_main_one():
    assert Experiment.load("smoke", datasets=["wiki", "news"]).ablation_on == "news"
    exp = Experiment.load("smoke", datasets=["wiki"], ablation_dataset="news")
    assert exp.ablation_on == "news" and exp.all_datasets == ["wiki", "news"]
    assert Experiment.load("smoke", datasets=["wiki"], ablation_dataset="wiki").all_datasets == ["wiki"]
    with pytest.raises(ConfigError, match="ablation_dataset"):  # the Makefile pastes it into commands
        Experiment.load("smoke", ablation_dataset="news;id")


def test_one_seed_of_the_main_comparison_draws_the_same_reference_rows():
    # make reproduce runs each seed alone: their reference rows (one score cache file) must agree
    assert Experiment.load("tiny", seeds=[1]).reference_seed == Experiment.load("tiny").reference_seed


@pytest.mark.parametrize("bad, named", [(dict(seeds="x"), "seeds"), (dict(config=[1]), "config"),
                                        (dict(nope=1), "nope"), (dict(step_counts=[1.5]), "step_counts"),
                                        (dict(bench_compile=1), "bench_compile"), (dict(n_samples=True), "n_samples")])
def test_bad_spec_values_name_the_key(bad, named):
    with pytest.raises(ConfigError, match=named):
        Experiment.load("smoke", **bad)


def test_a_bool_key_takes_a_bool():
    assert Experiment.load("smoke", bench_compile=True).bench_compile is True


def test_a_bad_parameter_file_is_named(tmp_path):
    (tmp_path / "smoke.yaml").write_text("judge: [1, 2]\n")
    with pytest.raises(ConfigError, match="smoke.yaml"):
        Experiment.load("smoke", params_dir=tmp_path)


def test_the_makefile_asks_the_library_for_values():
    ask = lambda key: subprocess.run([sys.executable, "-m", "ldlm.experiments.experiment", "--preset", "tiny", key], cwd=ROOT,
                                     capture_output=True, text=True)
    exp = Experiment.load("tiny")
    assert ask("judge").stdout.strip() == exp.judge
    assert ask("ablation_seeds").stdout.split() == [str(s) for s in exp.ablation_seeds]
    assert ask("datasets").stdout.split() == exp.datasets
    wrong = ask("no_such_key")
    assert wrong.returncode == 2 and "no_such_key" in wrong.stderr


def test_frontier_temperatures_are_per_kind_and_the_ablation_has_none():
    exp = Experiment.load("tiny")
    assert set(exp.frontier_temperatures) == {"ldlm", "mdlm", "ar"} and exp.ablation().frontier_temperatures == {}
    assert Experiment.load("smoke", frontier_temperatures={"ar": 0.7}).frontier_temperatures == {"ar": [0.7]}
    assert Experiment().frontier_temperatures == {}  # without the key: no frontier, the sweeps only


@pytest.mark.parametrize("bad, named", [({"gpt": [0.5]}, "unknown model kind 'gpt'"), ({"ldlm": [-0.5]}, r"\[-0.5\]"),
                                        ({"ldlm": [float("nan")]}, r"\[nan\]"), ([0.5], "not a mapping")])
def test_bad_frontier_temperatures_name_the_value(bad, named):
    with pytest.raises(ConfigError, match=named):
        Experiment.load("smoke", frontier_temperatures=bad)
