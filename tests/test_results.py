"""Result files under concurrent writers; the degenerate flag and how the tables mark it."""
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ldlm import tables

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "results"

WRITER = """
import sys
from ldlm.results import upsert_rows
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
    from ldlm.results import run_id

    corpus = tmp_path / "c.txt"
    corpus.write_text("one doc.\n\nanother doc.\n")
    cfg = make_config("smoke", dataset=f"text:{corpus}").to_dict()
    first = run_id(cfg)
    assert run_id(cfg) == first
    corpus.write_text("one doc.\n\nan edited doc.\n")
    assert run_id(cfg) != first
    assert run_id(make_config("smoke").to_dict()).startswith("smoke-wiki-full-s0-")  # named datasets: as before


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
    from ldlm.metrics import rep_n
    from ldlm.results import degenerate

    loop = rep_n([[1, 2, 3, 4] * 16])  # 61 4-grams, 4 unique
    assert loop == pytest.approx(1 - 4 / 61)
    rows = pd.DataFrame([dict(variant="full", entropy=math.log(4), rep_4=loop, gen_ppl_tok=4.0),
                         dict(variant="no_mse", entropy=math.log(4), rep_4=0.01, gen_ppl_tok=900.0)])
    assert degenerate(rows).tolist() == [True, False]


def test_a_row_far_below_the_held_out_entropy_is_flagged_degenerate():
    from ldlm.results import DEGENERATE_ENTROPY_GAP, degenerate

    rows = reference_and(dict(entropy=3.8 - DEGENERATE_ENTROPY_GAP - 0.1, rep_4=0.0),  # 1.1 nats below
                         dict(entropy=3.8 - DEGENERATE_ENTROPY_GAP + 0.1, rep_4=0.0),  # 0.9 below: kept
                         dict(entropy=0.5, rep_4=0.0, dataset="wiki"))  # no wiki reference: entropy not judged
    assert degenerate(rows).tolist() == [False, True, False, False]


def test_old_rows_without_the_numbers_are_not_decided():
    from ldlm.results import degenerate, with_degenerate

    old = pd.DataFrame([dict(variant="full", dataset="news", entropy=0.0, gen_ppl_tok=4.0)])  # no rep_4, no reference
    assert degenerate(old).isna().all()
    assert "degenerate" not in with_degenerate(old)  # the CSV keeps its columns


def test_the_csv_flag_follows_the_whole_table_as_rows_arrive(tmp_path):
    """The model rows come first, held-out text last (as the notebooks write them): its arrival flags them."""
    from ldlm.results import upsert_rows, with_degenerate

    path = tmp_path / "main_news.csv"
    collapsed = dict(preset="t", dataset="news", variant="full", seed=0, steps=10, run_id="r", model="ldlm",
                     entropy=1.0, rep_4=0.2)
    upsert_rows(path, [collapsed], derive=with_degenerate)
    assert pd.read_csv(path)["degenerate"].tolist() == [False]  # rep_4 alone: not a loop
    upsert_rows(path, [dict(collapsed, variant="reference", model="reference", run_id="ref", steps=0, entropy=3.8,
                            rep_4=0.0)], derive=with_degenerate)
    assert pd.read_csv(path).set_index("run_id")["degenerate"].to_dict() == {"r": True, "ref": False}


def test_tables_mark_a_degenerate_gen_ppl_with_a_dagger_and_a_note(tmp_path):
    from ldlm.tables import DEGENERATE, DEGENERATE_NOTE, main_table, write_tables

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
    from ldlm.tables import ablation_table

    rows = reference_and(dict(variant="full", seed=0, gen_ppl_tok=4.0, entropy=0.0, rep_4=0.98),
                         dict(variant="full", seed=1, gen_ppl_tok=300.0, entropy=3.5, rep_4=0.0))
    table = ablation_table(rows, ["full"])
    assert list(table.index) == ["held-out text (ceiling)", "LDLM (full recipe)"]  # the reference first
    assert table["Gen PPL (tok) ↓"].iloc[1] == "152 ± 2.1e+02 † (1 of 2 seeds)"


def test_old_result_csvs_still_render():
    """Rows from before rep_4 (the committed fixtures): no Rep-4 column, the entropy check alone where there is
    held-out text (the smoke LDLM's entropy is 0), none where there is not; mixed with new rows: a dash."""
    from ldlm.tables import ablation_table, main_table

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
    assert list(table.index) == [tables.VARIANT_NAMES["full"]]  # naive's run has no report (an older row)
    assert table.loc[tables.VARIANT_NAMES["full"], "seeds"] == 2
    assert table.loc[tables.VARIANT_NAMES["full"], "Mean share ↓"].startswith("0.8 ± 0.14")
