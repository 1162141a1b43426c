"""Result files under concurrent writers; the degenerate flag and how the tables mark it."""
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ldlm.evaluation import tables

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "results"

WRITER = """
import sys
from ldlm.evaluation.results import upsert_rows
path, who = sys.argv[1], int(sys.argv[2])
for i in range(30):
    upsert_rows(path, [dict(preset="t", dataset="d", variant=f"w{who}", seed=i, steps=1, run_id=f"r{who}-{i}", x=i)])
"""


def test_concurrent_writers_lose_no_rows(tmp_path):
    """Four processes upserting one CSV at once: every row arrives (without the lock 56 of 120 were lost)."""
    path = tmp_path / "main.csv"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w)]) for w in range(4)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    rows = pd.read_csv(path)
    assert len(rows) == 120 and rows["run_id"].is_unique


def test_run_id_changes_when_a_text_corpus_changes(tmp_path):
    from ldlm.config import make_config
    from ldlm.evaluation.results import run_id

    corpus = tmp_path / "c.txt"
    corpus.write_text("one doc.\n\nanother doc.\n")
    cfg = make_config("smoke", dataset=f"text:{corpus}").to_dict()
    first = run_id(cfg)
    assert run_id(cfg) == first
    corpus.write_text("one doc.\n\nan edited doc.\n")
    assert run_id(cfg) != first
    assert run_id(make_config("smoke").to_dict()).startswith("smoke-wiki-ldlm-full-s0-")  # named datasets: as before


def test_a_run_id_names_the_model_kind_and_for_ldlm_its_recipe_variant():
    """Sample files, curves and result rows are keyed by run id: a reader tells the models apart by name."""
    from ldlm.config import make_config
    from ldlm.evaluation.results import run_id

    assert run_id(make_config("smoke", model="mdlm", seed=1).to_dict()).startswith("smoke-wiki-mdlm-s1-")
    assert run_id(make_config("smoke", model="ar").to_dict()).startswith("smoke-wiki-ar-s0-")
    assert run_id(make_config("smoke", variant="naive").to_dict()).startswith("smoke-wiki-ldlm-naive-s0-")


# ----------------------------------------------------------------------------------------------
# degenerate rows: flagged in the CSV, marked in the tables


def reference_and(*rows, entropy=3.8, dataset="news"):
    """A main-table frame: held-out text's row (entropy 3.8) and `rows`."""
    ref = dict(model="reference", variant="reference", dataset=dataset, seed=0, steps=0, gen_ppl_tok=130.0,
               gen_ppl_seq=150.0, entropy=entropy, rep_4=0.001)
    return pd.DataFrame([ref, *[dict(dict(model="ldlm", variant="full", dataset="news", seed=0, steps=10), **r)
                                for r in rows]])


def test_a_periodic_sample_is_flagged_degenerate():
    """A loop ("a b c d a b c d ...") scores a low Gen PPL; its rep_4 flags it, with or without held-out text."""
    from ldlm.evaluation.metrics import rep_n
    from ldlm.evaluation.results import degenerate

    loop = rep_n([[1, 2, 3, 4] * 16])  # 61 4-grams, 4 unique
    assert loop == pytest.approx(1 - 4 / 61)
    rows = pd.DataFrame([dict(variant="full", entropy=math.log(4), rep_4=loop, gen_ppl_tok=4.0),
                         dict(variant="no_mse", entropy=math.log(4), rep_4=0.01, gen_ppl_tok=900.0)])
    assert degenerate(rows).tolist() == [True, False]


def test_a_row_far_below_the_held_out_entropy_is_flagged_degenerate():
    from ldlm.evaluation.results import DEGENERATE_ENTROPY_GAP, degenerate

    rows = reference_and(dict(entropy=3.8 - DEGENERATE_ENTROPY_GAP - 0.1, rep_4=0.0),  # 1.1 nats below
                         dict(entropy=3.8 - DEGENERATE_ENTROPY_GAP + 0.1, rep_4=0.0),  # 0.9 below: kept
                         dict(entropy=0.5, rep_4=0.0, dataset="wiki"))  # no wiki reference: entropy not judged
    assert degenerate(rows).tolist() == [False, True, False, False]


def test_old_rows_without_the_numbers_are_not_decided():
    from ldlm.evaluation.results import degenerate, with_degenerate

    old = pd.DataFrame([dict(variant="full", dataset="news", entropy=0.0, gen_ppl_tok=4.0)])  # no rep_4, no reference
    assert degenerate(old).isna().all()
    assert "degenerate" not in with_degenerate(old)  # the CSV keeps its columns


def test_the_csv_flag_follows_the_whole_table_as_rows_arrive(tmp_path):
    """The model rows come first, held-out text last (as the notebooks write them): its arrival flags them."""
    from ldlm.evaluation.results import upsert_rows, with_degenerate

    path = tmp_path / "main_news.csv"
    collapsed = dict(preset="t", dataset="news", variant="full", seed=0, steps=10, run_id="r", model="ldlm",
                     entropy=1.0, rep_4=0.2)
    upsert_rows(path, [collapsed], derive=with_degenerate)
    assert pd.read_csv(path)["degenerate"].tolist() == [False]  # rep_4 alone: not a loop
    upsert_rows(path, [dict(collapsed, variant="reference", model="reference", run_id="ref", steps=0, entropy=3.8,
                            rep_4=0.0)], derive=with_degenerate)
    assert pd.read_csv(path).set_index("run_id")["degenerate"].to_dict() == {"r": True, "ref": False}


def test_tables_mark_a_degenerate_gen_ppl_with_a_dagger_and_a_note(tmp_path):
    from ldlm.evaluation.tables import DEGENERATE, DEGENERATE_NOTE, main_table, write_tables

    rows = reference_and(dict(steps=10, gen_ppl_tok=159.0, gen_ppl_seq=160.0, entropy=0.08, rep_4=0.97),
                         dict(steps=100, gen_ppl_tok=2000.0, gen_ppl_seq=2100.0, entropy=3.0, rep_4=0.0))
    table = main_table(rows)
    assert table.loc["LDLM, 10 steps", "Gen PPL (tok) ↓"] == f"159 {DEGENERATE}"
    assert table.loc["LDLM, 10 steps", "Rep-4"] == "0.97"
    assert DEGENERATE not in table.loc["LDLM, 100 steps", "Gen PPL (tok) ↓"]
    assert DEGENERATE not in table.loc["held-out text (ceiling)", "Gen PPL (seq) ↓"]
    write_tables(table, tmp_path / "t1", caption="wiki")
    md, tex = (tmp_path / "t1.md").read_text(), (tmp_path / "t1.tex").read_text()
    assert md.rstrip().endswith(DEGENERATE_NOTE) and "159 †" in md
    assert "rep-4 > 0.5" in tex and "\\caption{wiki" in tex
    write_tables(main_table(rows[rows["steps"] != 10]), tmp_path / "clean")
    assert DEGENERATE_NOTE not in (tmp_path / "clean.md").read_text()  # no mark, no note


def test_a_collapsed_seed_is_counted_in_the_mark():
    """One collapsed seed pulls the mean Gen PPL down: the mean is marked, with how many seeds."""
    from ldlm.evaluation.tables import ablation_table

    rows = reference_and(dict(variant="full", seed=0, gen_ppl_tok=4.0, entropy=0.0, rep_4=0.98),
                         dict(variant="full", seed=1, gen_ppl_tok=300.0, entropy=3.5, rep_4=0.0))
    table = ablation_table(rows, ["full"])
    assert list(table.index) == ["held-out text (ceiling)", "LDLM (full recipe)"]  # the reference first
    assert table["Gen PPL (tok) ↓"].iloc[1] == "152 ± 2.1e+02 † (1 of 2 seeds)"


def test_old_result_csvs_still_render():
    """Rows from before rep_4 (the committed fixtures): no Rep-4 column, the entropy check alone where there is
    held-out text (the smoke LDLM's entropy is 0), none where there is not; mixed with new rows: a dash."""
    from ldlm.evaluation.tables import ablation_table, main_table

    old = pd.read_csv(FIXTURE / "main_news.csv")
    table = main_table(old)
    assert "Rep-4" not in table and table["Gen PPL (tok) ↓"].str.endswith("†").tolist() == [True, True, False]
    ablation = ablation_table(pd.read_csv(FIXTURE / "ablation.csv"), ["full", "naive"])
    assert "Rep-4" not in ablation and not ablation["Gen PPL (tok) ↓"].str.contains("†").any()  # no reference row
    mixed = main_table(pd.concat([old, old.iloc[:1].assign(steps=5, rep_4=0.1)]))
    assert mixed["Rep-4"].tolist() == ["–", "–", "–", "0.1"]


def test_the_latent_table_counts_each_run_once_and_leaves_out_runs_without_a_report():
    report = {"mean_share": 0.9, "participation_ratio": 2.0, "decoder_acc": 0.5, "dit_acc_t0.001": 0.1,
              "dit_acc_t0.2": 0.05, "dit_r2_t0.2": 0.1, "wiener_r2_t0.2": 0.4}
    rows = pd.DataFrame(
        [dict(report, variant="full", run_id="a", steps=k) for k in (10, 30, 100)]  # one run, three sample rows
        + [dict(report, variant="full", run_id="b", steps=10, mean_share=0.7)]
        + [dict(variant="reference", run_id="ref", steps=0), dict(variant="naive", run_id="c", steps=10)])
    table = tables.latent_table(rows, order=["full", "naive"])
    assert list(table.index) == [tables.variant_title("full")]  # naive's run has no report (an older row)
    assert table.loc[tables.variant_title("full"), "seeds"] == 2
    assert table.loc[tables.variant_title("full"), "Mean share ↓"].startswith("0.8 ± 0.14")


# ----------------------------------------------------------------------------------------------
# sampling settings in the key: temperature, top_p, sampler


def setting_row(**values):
    base = dict(preset="tiny", dataset="wiki", variant="full", seed=0, steps=100, top_p=None, temperature=0.0,
                sampler="ddpm", judge="smollm2", featurizer="minilm", n_samples=32, dtype="float32", run_id="r",
                model="ldlm", gen_ppl_tok=1000.0, entropy=3.0)
    return dict(base, **values)


def test_rows_that_differ_only_in_temperature_both_stay(tmp_path):
    """A later run with fewer settings (here: only T = 1) leaves the T = 0.5 row alone, and replaces its own."""
    from ldlm.evaluation.results import ROW_KEYS, upsert_rows

    assert {"top_p", "temperature", "sampler"} <= set(ROW_KEYS)
    path = tmp_path / "main_wiki.csv"
    upsert_rows(path, [setting_row(temperature=0.5, entropy=3.4), setting_row(temperature=1.0, entropy=3.6)])
    upsert_rows(path, [setting_row(temperature=1.0, entropy=3.7)])
    rows = pd.read_csv(path).set_index("temperature")
    assert rows["entropy"].to_dict() == {0.5: 3.4, 1.0: 3.7}


def test_rows_that_differ_only_in_top_p_or_sampler_both_stay(tmp_path):
    from ldlm.evaluation.results import upsert_rows

    path = tmp_path / "main_wiki.csv"
    upsert_rows(path, [setting_row(model="ar", steps=63, top_p=p, temperature=1.0, sampler="nucleus") for p in (0.9, 1.0)])
    upsert_rows(path, [setting_row(sampler=s) for s in ("ddpm", "ddim")])
    upsert_rows(path, [setting_row(model="ar", steps=63, top_p=1.0, temperature=1.0, sampler="nucleus", entropy=3.9)])
    rows = pd.read_csv(path)
    assert len(rows) == 4 and rows.loc[rows["top_p"] == 1.0, "entropy"].tolist() == [3.9]


def test_a_rerun_replaces_the_rows_an_older_kit_wrote_without_the_knobs(tmp_path):
    """A row from before temperature and sampler existed (empty cells) is the same setting as the new
    row that agrees on the rest: it is replaced, not kept beside it as a second T = 0 point."""
    from ldlm.evaluation.results import upsert_rows

    path = tmp_path / "main_wiki.csv"
    old = {k: v for k, v in setting_row().items() if k not in ("temperature", "sampler")}
    pd.DataFrame([old, dict(old, steps=10)]).to_csv(path, index=False)
    upsert_rows(path, [setting_row(entropy=3.1), setting_row(temperature=0.5, entropy=3.4)])
    rows = pd.read_csv(path)
    assert sorted(zip(rows["steps"], rows["temperature"].fillna(-1), rows["entropy"])) == [
        (10, -1, 3.0), (100, 0.0, 3.1), (100, 0.5, 3.4)]  # the 10-step row is another setting: it stays


def test_rows_written_before_temperatures_get_their_kinds_default():
    from ldlm.evaluation.results import at_default_temperature, with_settings

    rows = pd.DataFrame([dict(model="ldlm", steps=100), dict(model="mdlm", steps=100), dict(model="ar", top_p=0.9),
                         dict(model="ldlm", temperature=0.5), dict(model="reference", steps=0)])
    filled = with_settings(rows)
    assert filled["temperature"].tolist()[:4] == [0.0, 1.0, 1.0, 0.5] and math.isnan(filled["temperature"].iloc[4])
    assert filled["top_p"].tolist() == [1.0, 1.0, 0.9, 1.0, 1.0]
    assert at_default_temperature(rows).tolist() == [True, True, True, False, False]


def test_a_models_frontier_is_its_setting_with_the_most_temperatures():
    from ldlm.evaluation.results import frontier_rows, frontier_setting, with_settings

    rows = with_settings(pd.DataFrame([dict(model="ldlm", steps=k, temperature=t) for k, t in
                                       [(10, 0.0), (30, 0.0), (100, 0.0), (30, 0.5), (30, 1.0)]]
                                      + [dict(model="mdlm", steps=k) for k in (10, 100)]))
    assert frontier_setting(rows[rows["model"] == "ldlm"]) == (30, 1.0)
    assert frontier_setting(rows[rows["model"] == "mdlm"]) == (100, 1.0)  # a tie: the most steps
    assert sorted(zip(*frontier_rows(rows)[["model", "temperature"]].to_numpy().T)) == [
        ("ldlm", 0.0), ("ldlm", 0.5), ("ldlm", 1.0), ("mdlm", 1.0)]


# ----------------------------------------------------------------------------------------------
# the speed-up at matched entropy, read from LDLM's frontier


def frontier_frame(*extra):
    """Held-out text at entropy 3.8; LDLM's frontier at 100 steps: (entropy, Gen PPL) = (3.0, 1000) at T = 0,
    (3.4, 2000) at T = 0.5, (3.8, 3000) at T = 1; LDLM at 10 steps (T = 0) off the frontier."""
    ref = dict(model="reference", variant="reference", dataset="wiki", seed=0, steps=0, gen_ppl_tok=50.0, entropy=3.8,
               rep_4=0.0)
    ldlm = [dict(model="ldlm", steps=100, temperature=t, entropy=e, gen_ppl_tok=g, rep_4=0.0)
            for t, e, g in ((0.0, 3.0, 1000.0), (0.5, 3.4, 2000.0), (1.0, 3.8, 3000.0))]
    ldlm.append(dict(model="ldlm", steps=10, temperature=0.0, entropy=3.9, gen_ppl_tok=10.0, rep_4=0.0))
    return pd.DataFrame([ref, *[dict(dict(variant="full", dataset="wiki", seed=0), **r) for r in [*ldlm, *extra]]])


SPEED = pd.DataFrame([dict(model=m, steps=k, batch=64, samples_per_s=v) for m, k, v in
                      [("ldlm", 10, 60.0), ("ldlm", 100, 8.0), ("mdlm", 100, 4.0), ("ar", 63, 16.0)]])


def test_the_speedup_reads_ldlms_frontier_at_the_baselines_entropy():
    """MDLM (T = 0.8) at entropy 3.6: LDLM's frontier there is halfway from 2000 to 3000 = 2500 <= 2600 (no
    worse; 8 / 4 samples/s = 2x). The GPT at 3.2: 1500 > 1200, worse (the ratio is shown, not counted).
    MDLM at T = 1 (entropy 3.95) is beyond the frontier's 3.0-3.8: not matched, though LDLM's 10-step
    point sits at 3.9 with Gen PPL 10 (it is no frontier point: another speed, another knob)."""
    from ldlm.evaluation.tables import quality_matched_speedup

    main = frontier_frame(dict(model="mdlm", steps=100, temperature=0.8, entropy=3.6, gen_ppl_tok=2600.0, rep_4=0.0),
                          dict(model="mdlm", steps=100, temperature=1.0, entropy=3.95, gen_ppl_tok=4000.0, rep_4=0.0),
                          dict(model="ar", steps=63, top_p=1.0, temperature=1.0, entropy=3.2, gen_ppl_tok=1200.0, rep_4=0.0))
    table = quality_matched_speedup(main, SPEED, batch=64)
    mdlm, hot, ar = (table.loc[k] for k in ("MDLM, 100 steps, T = 0.8", "MDLM, 100 steps", "AR (GPT), nucleus p = 1"))
    assert (mdlm["LDLM Gen PPL at that entropy"], mdlm["LDLM no worse"], mdlm["speed-up"]) == ("2500", "yes", "2.00x")
    assert (ar["LDLM Gen PPL at that entropy"], ar["LDLM no worse"], ar["speed-up"]) == ("1500", "no", "0.50x")
    assert (hot["LDLM Gen PPL at that entropy"], hot["LDLM no worse"], hot["speed-up"]) == ("not matched", "–", "–")
    assert mdlm["LDLM frontier entropy"] == "3–3.8 (100 steps)"


def test_a_degenerate_frontier_point_never_counts_as_a_match():
    """LDLM's T = 0 point repeats itself (rep_4 0.9): left out, the frontier starts at 3.4, and a baseline at
    3.2 is not matched, though the T = 0 point's Gen PPL would have beaten it."""
    from ldlm.evaluation.tables import quality_matched_speedup

    main = frontier_frame(dict(model="mdlm", steps=100, temperature=0.5, entropy=3.2, gen_ppl_tok=5000.0, rep_4=0.0))
    main.loc[(main["model"] == "ldlm") & (main["temperature"] == 0.0) & (main["steps"] == 100), "rep_4"] = 0.9
    row = quality_matched_speedup(main, SPEED, batch=64).iloc[0]
    assert row["LDLM Gen PPL at that entropy"] == "not matched" and row["LDLM frontier entropy"] == "3.4–3.8 (100 steps)"


def test_a_degenerate_baseline_is_not_a_quality_to_match():
    from ldlm.evaluation.tables import DEGENERATE, quality_matched_speedup

    main = frontier_frame(dict(model="ar", steps=63, top_p=1.0, temperature=0.3, entropy=3.5, gen_ppl_tok=9.0, rep_4=0.8))
    row = quality_matched_speedup(main, SPEED, batch=64).loc["AR (GPT), nucleus p = 1, T = 0.3"]
    assert row["baseline Gen PPL"] == f"9 {DEGENERATE}" and row["LDLM Gen PPL at that entropy"] == "not matched"


def test_the_main_table_names_a_temperature_other_than_the_default():
    from ldlm.evaluation.tables import main_table

    table = main_table(frontier_frame())
    assert list(table.index) == ["held-out text (ceiling)", "LDLM, 100 steps", "LDLM, 100 steps, T = 0.5",
                                 "LDLM, 100 steps, T = 1", "LDLM, 10 steps"]
