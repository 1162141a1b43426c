import pytest

from ldlm.config import PRESETS, VARIANTS, Config, ConfigError, config_from_dict, make_config


def test_presets_build_and_defaults_are_paper_values():
    for name in PRESETS:
        assert make_config(name).preset == name
    owt = make_config("owt")
    assert (owt.frozen_lm, owt.lm_layer, owt.decoder_noise, owt.schedule_d, owt.self_cond_prob) == ("gpt2", -3, 3.0, 3.0, 0.5)
    assert (owt.enc_layers, owt.dit_layers, owt.dec_layers, owt.tok_layers, owt.dit_width) == (6, 12, 6, 3, 768)


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match="decoder_nosie"):
        make_config("tiny", decoder_nosie=1.0)
    with pytest.raises(ConfigError, match="bogus"):
        make_config("tiny", overrides=["bogus=1"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="max_steps"):
        make_config("tiny", overrides=["max_steps=abc"])
    with pytest.raises(ConfigError, match="max_steps"):
        make_config("tiny", overrides=["max_steps=1.5"])
    with pytest.raises(ConfigError, match="lr"):
        make_config("tiny", lr="fast")
    with pytest.raises(ConfigError, match="encoder_warmup"):
        make_config("tiny", overrides=["encoder_warmup=maybe"])


def test_command_line_values_are_typed():
    cfg = make_config("tiny", overrides=["max_steps=1e3", "encoder_warmup=off", "lr=3e-4", "dataset=news"])
    assert cfg.max_steps == 1000 and isinstance(cfg.max_steps, int)
    assert cfg.encoder_warmup is False and cfg.lr == 3e-4 and cfg.dataset == "news"


def test_unknown_preset_variant_and_choice():
    with pytest.raises(ConfigError, match="preset"):
        make_config("huge")
    with pytest.raises(ConfigError, match="variant"):
        make_config("tiny", variant="half")
    with pytest.raises(ConfigError, match="decoder_loss"):
        make_config("tiny", decoder_loss="l1")


def test_naive_variant_turns_all_four_components_off():
    naive = make_config("tiny", variant="naive")
    assert (naive.decoder_loss, naive.encoder_warmup, naive.time_sampling, naive.decoder_noise) == ("ce", False, "uniform", 0.0)
    full = make_config("tiny")
    assert (full.decoder_loss, full.encoder_warmup, full.time_sampling) == ("mse", True, "adaptive") and full.decoder_noise > 0
    # each single-removal variant changes exactly one recipe switch
    switches = ("decoder_loss", "encoder_warmup", "time_sampling", "decoder_noise")
    for name in VARIANTS:
        if name.startswith("no_"):
            changed = [k for k in switches if getattr(make_config("tiny", variant=name), k) != getattr(full, k)]
            assert len(changed) == 1, name


def test_explicit_override_beats_variant():
    cfg = make_config("tiny", variant="naive", decoder_noise=0.25)
    assert cfg.decoder_noise == 0.25


def test_config_round_trip():
    cfg = make_config("smoke", seed=3)
    assert config_from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="nope"):
        config_from_dict({**cfg.to_dict(), "nope": 1})
    assert isinstance(Config(), Config)


def test_encoder_warmup_is_one_fraction_of_every_budget():
    """S_wu is defined once (warmup_frac of max_steps): presets, notebook budgets and gpu_check agree."""
    from ldlm.experiments.experiment import Experiment
    from ldlm.tools.gpu_check import check_config

    assert "warmup_steps" not in Config.__dataclass_fields__
    assert make_config("owt").warmup_steps == 50_000  # the paper's 50k of 200k
    for name in PRESETS:
        cfg = make_config(name)
        assert cfg.warmup_frac == Config.warmup_frac and cfg.warmup_steps == round(0.25 * cfg.max_steps)
    for steps in (150, 400):
        assert Experiment.load("tiny", config={"max_steps": steps}).run_config("wiki").warmup_steps == round(0.25 * steps)
    assert check_config("owt", 300, "gpt2", {}).warmup_steps == 75


def test_runs_saved_with_warmup_steps_still_load():
    old = {k: v for k, v in make_config("smoke").to_dict().items() if k != "warmup_frac"}
    cfg = config_from_dict({**old, "warmup_steps": 15, "max_steps": 30})
    assert cfg.warmup_frac == 0.5 and cfg.warmup_steps == 15


# -- the command line's config UX (python -m ldlm.training.train --help / --print-config / --config) -------------

def _help(capsys, *args) -> dict[str, str]:
    """--help's line of each config key, by key."""
    from ldlm.training.train import main

    with pytest.raises(SystemExit) as exit_:
        main([*args, "--help"])
    assert exit_.value.code == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("    ")]
    return {parts[0]: " ".join(parts[1:]) for parts in lines if parts}


def test_help_lists_every_key_with_type_default_and_comment(capsys):
    import dataclasses, json

    shown, owt = _help(capsys, "--preset", "owt"), make_config("owt")  # the paper-scale preset
    for f in dataclasses.fields(Config):
        assert shown[f.name].startswith(f"{f.type} {json.dumps(getattr(owt, f.name))}"), f.name
        if getattr(owt, f.name) != f.default and f.name != "preset":  # and the dataclass's beside it
            assert shown[f.name].endswith(f"(dataclass: {json.dumps(f.default)})"), f.name
    assert shown["lm_layer"] == "int -3 hidden_states index; paper: third-to-last [S]"
    assert shown["logger"].startswith('str "tensorboard" tensorboard (RUN/tb/) | jsonl | wandb')


def test_bare_help_lists_the_tiny_defaults_a_bare_run_uses(capsys):
    from ldlm.training.train import main

    tiny = make_config("tiny")
    shown = _help(capsys)
    assert shown["max_steps"].startswith(f"int {tiny.max_steps} ") and shown["preset"].startswith('str "tiny"')
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "defaults: --preset tiny, which a run without --preset uses" in capsys.readouterr().out


def test_help_with_a_preset_shows_its_values_beside_the_dataclass_default(capsys):
    shown = _help(capsys, "--preset", "smoke")
    assert shown["max_steps"] == "int 30 (dataclass: 200000)"
    assert shown["decoder_noise"] == "float 0.5 sigma_dec; 0 = off [S] (dataclass: 3.0)"
    assert shown["lm_layer"] == "int -3 hidden_states index; paper: third-to-last [S]"  # not changed by the preset


def test_print_config_round_trips_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import json
    from ldlm.training.train import main

    monkeypatch.chdir(tmp_path)
    assert main(["--preset", "smoke", "--variant", "naive", "--print-config", "max_steps=7", "logger=jsonl"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert config_from_dict(printed) == make_config("smoke", variant="naive", max_steps=7, logger="jsonl")
    assert list(tmp_path.iterdir()) == []


def test_yaml_config_resolves_like_the_same_json_config(tmp_path, capsys):
    import json
    from ldlm.training.train import main

    cfg = make_config("smoke", seed=3)
    (tmp_path / "c.json").write_text(cfg.to_json())
    text = "\n".join(f"{k}: {json.dumps(v)}" for k, v in cfg.to_dict().items() if k not in ("lr", "encoder_warmup"))
    (tmp_path / "c.yaml").write_text(text + "\nlr: 1e-3\nencoder_warmup: on\n")  # YAML 1.1: a string and a bool
    printed = []
    for name in ("c.json", "c.yaml"):
        assert main(["--config", str(tmp_path / name), "--print-config", "max_steps=9"]) == 0
        printed.append(json.loads(capsys.readouterr().out))
    assert printed[0] == printed[1] == {**cfg.to_dict(), "max_steps": 9}


@pytest.mark.parametrize("text,why", [("max_steps: [1\n", "line 2 column 1"), ("- a\n- b\n", "got a list"),
                                      ("bogus_key: 1\n", "bogus_key")])
def test_bad_yaml_config_is_one_line_and_exit_2(tmp_path, capsys, text, why):
    from ldlm.training.train import main

    (tmp_path / "bad.yml").write_text(text)
    assert main(["--config", str(tmp_path / "bad.yml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and why in err
    assert not (tmp_path / "run").exists()
