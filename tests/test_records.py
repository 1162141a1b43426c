"""One record per concept: a model kind, a recipe variant and a measured column are each written once, and the
config key, result rows, tables, figures, readings and model cards read them from there."""
import pandas as pd
import pytest

from ldlm.config import VARIANTS, ConfigError, make_config
from ldlm.evaluation import columns, plotstyle, reading, tables
from ldlm.evaluation.results import RESULT_COLUMNS, result_row
from ldlm.experiments.experiment import from_dict
from ldlm.kinds.build import model_class
from ldlm.kinds.registry import KINDS
from ldlm.trained.model_card import CARD_COLUMNS, card_text


def test_every_header_a_table_or_card_shows_is_a_column_record_s_and_a_result_row_column():
    labelled = {c.name: c.header for c in columns.COLUMNS if c.label}
    assert tables.METRIC_COLUMNS == labelled
    assert {k: v for k, v in CARD_COLUMNS.items() if k in labelled} == {c.name: c.header for c in columns.COLUMNS if c.card}
    assert set(labelled) <= set(RESULT_COLUMNS)
    assert columns.names("samples") == [c for c in RESULT_COLUMNS if c in columns.names("samples")]  # the CSV keeps its order


def test_a_run_s_result_columns_are_the_ema_held_out_metrics_its_summary_has():
    ldlm = {"ema_recon_acc": 0.6, "ema_valid_loss_h": 0.1, "ema_valid_tokens": 100, "step": 5}
    assert columns.run_columns(ldlm) == {"recon_acc": 0.6}
    assert columns.run_columns({"ema_valid_loss": 4.2, "ema_valid_tokens": 100}) == {"valid_loss": 4.2}
    assert result_row(**columns.run_columns(ldlm))  # every run column is a result-row column


@pytest.mark.parametrize("name", list(KINDS))
def test_a_kind_s_record_names_it_in_the_config_key_figures_tables_readings_and_its_card(name):
    record = KINDS[name]
    assert model_class(name) is record.model
    assert (plotstyle.PALETTE[name], plotstyle.MARKERS[name], plotstyle.label(name)) == (record.colour, record.marker, record.label)
    assert tables.setting_label(name, 100, 0.9).startswith(record.label + ", ")
    assert reading.NAMES[name] == record.called
    config = {"model_kind": name, "kit_version": "0", "weights_dtype": "float32", "frozen_lm_id": "m", "frozen_lm": "minilm",
              "lm_layer": 6, "config": make_config("smoke", model=name).to_dict()}
    assert record.about in card_text(config)
    assert from_dict({"models": [name]}).models == [name]


def test_an_unknown_kind_is_refused_by_the_experiment_spec_and_by_name_lookup():
    with pytest.raises(ConfigError, match="unknown model kind 'gpt'"):
        from_dict({"models": ["ldlm", "gpt"]}, "params/x.yaml")
    with pytest.raises(ConfigError, match=r"model='gpt': choose one of \['ar', 'ldlm', 'mdlm'\]"):
        model_class("gpt")


def test_a_variant_s_record_sets_its_config_and_names_it_in_tables_figures_and_readings():
    for name, variant in VARIANTS.items():
        cfg = make_config("tiny", variant=name)
        assert all(getattr(cfg, k) == v for k, v in variant.overrides.items())
        assert tables.variant_title(name) == variant.title
        assert (plotstyle.PALETTE[name], plotstyle.label(name)) == (variant.colour, variant.label)
    rows = pd.DataFrame({"variant": ["full", "full", "naive", "naive"], "gen_ppl_tok": [10.0, 11.0, 50.0, 52.0],
                         "entropy": [4.0] * 4, "rep_4": [0.0] * 4, "seed": [0, 1, 0, 1]})
    text = reading.ablation_reading(rows, ["full", "naive"])  # names a variant as its record calls it
    assert VARIANTS["naive"].called in text and "naive (" not in text


def test_a_column_s_aggregation_is_how_the_tables_average_its_seeds(monkeypatch):
    rows = pd.DataFrame({"variant": ["full"] * 3, "gen_ppl_tok": [1.0, 2.0, 9.0], "seed": [0, 1, 2]})
    assert tables.ablation_table(rows, ["full"]).iloc[0]["Gen PPL (tok) ↓"].startswith("4 ± ")
    monkeypatch.setitem(tables.AGGREGATE, "gen_ppl_tok", "median")
    assert tables.ablation_table(rows, ["full"]).iloc[0]["Gen PPL (tok) ↓"].startswith("2 ± ")
