"""Figures from a results folder alone (ldlm.evaluation.figures, ldlm.evaluation.diagnostic_figures, ldlm.evaluation.plotstyle)."""
import subprocess
import sys
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.collections import PathCollection

from ldlm.config import VARIANTS
from ldlm.evaluation import figures
from ldlm.evaluation import plotstyle as ps

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "results"

KEEPS_BACKEND = """
import matplotlib
matplotlib.use("svg")
before = (matplotlib.get_backend(), dict(matplotlib.rcParams))
import ldlm.evaluation.figures
assert (matplotlib.get_backend(), dict(matplotlib.rcParams)) == before, "import changed matplotlib"
print(matplotlib.get_backend())
"""


def test_importing_figures_leaves_the_backend_and_rc_settings_alone():
    out = subprocess.run([sys.executable, "-c", KEEPS_BACKEND], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg"


def test_every_figure_renders_from_the_fixture_results(tmp_path):
    backend, rc = matplotlib.get_backend(), dict(matplotlib.rcParams)
    written = [Path(p) for p in figures.make_all(FIXTURE, tmp_path)]
    assert {p.stem for p in written if p.suffix == ".png"} == set(figures.FIGURES) == {p.stem for p in written if p.suffix == ".pdf"}
    assert all(p.stat().st_size > 1000 for p in written)
    assert (matplotlib.get_backend(), dict(matplotlib.rcParams)) == (backend, rc)  # styled inside a context only
    for name in figures.FIGURES:  # single-column panels, at most two side by side
        width = figures.draw(name, FIXTURE).get_figwidth()
        assert width / ps.PANEL_WIDTH in (1, 2), name


def test_a_figure_shows_itself_as_png_in_a_notebook():
    png = figures.draw("recon_noise", FIXTURE)._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_results_folder_without_inputs_draws_nothing(tmp_path):
    assert figures.make_all(tmp_path / "empty", tmp_path / "figures") == []
    assert all(figures.draw(name, tmp_path / "empty") is None for name in figures.FIGURES)


def test_each_model_and_variant_has_its_own_colour_and_the_full_recipe_is_ldlm():
    assert ps.PALETTE["full"] == ps.PALETTE["ldlm"]
    keys = ["ldlm", "mdlm", "ar", "reference", *[v for v in VARIANTS if v != "full"]]
    assert len({ps.PALETTE[k] for k in keys}) == len(keys)


def test_step_labels_of_clustered_points_do_not_overlap(tmp_path):
    """Three MDLM settings at almost the same point, next to the GPT's two: no label covers another."""
    base = dict(preset="smoke", dataset="wiki", seed=0, judge="smollm2")
    rows = [dict(base, model="mdlm", steps=s, entropy=3.80 + 0.001 * i, gen_ppl_tok=4000 + 10 * i)
            for i, s in enumerate((10, 30, 100))]
    rows += [dict(base, model="ar", steps=63, top_p=p, entropy=3.81, gen_ppl_tok=g) for p, g in ((0.9, 3900), (1.0, 4100))]
    rows += [dict(base, model="ldlm", steps=s, entropy=e, gen_ppl_tok=g) for s, e, g in ((10, 3.2, 1500), (100, 3.0, 1100))]
    pd.DataFrame(rows).to_csv(tmp_path / "main_wiki.csv", index=False)
    fig = figures.draw("pareto", tmp_path)
    fig.draw_without_rendering()
    (ax,) = fig.axes
    boxes = [text.get_window_extent() for text in ax.texts]
    assert len(boxes) == 7
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_degenerate_bars_are_hatched_and_degenerate_points_hollow(tmp_path):
    """The tables' † in the figures: the collapsed full recipe's Gen PPL bar is hatched, its front point hollow."""
    base = dict(preset="smoke", dataset="news", judge="smollm2", seed=0)
    reference = dict(base, variant="reference", model="reference", steps=0, gen_ppl_tok=130.0, entropy=3.8, rep_4=0.0)
    rows = [reference, dict(base, variant="full", model="ldlm", steps=50, gen_ppl_tok=4.0, entropy=0.1, rep_4=0.97),
            dict(base, variant="no_mse", model="ldlm", steps=50, gen_ppl_tok=900.0, entropy=3.5, rep_4=0.0)]
    pd.DataFrame(rows).to_csv(tmp_path / "ablation.csv", index=False)
    fig = figures.draw("ablation", tmp_path)
    ppl = next(ax for ax in fig.axes if ax.get_title().startswith("Gen PPL"))
    assert [bar.get_hatch() for bar in ppl.patches] == [ps.DEGENERATE_HATCH, None]  # full, no_mse
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {ps.DEGENERATE_LABEL, "held-out text"}

    pd.DataFrame([reference, dict(rows[1], steps=10), dict(rows[2], variant="full", steps=100)]).to_csv(
        tmp_path / "main_news.csv", index=False)  # LDLM at 10 steps collapsed, at 100 not
    fig = figures.draw("pareto", tmp_path)
    hollow = [c for c in fig.axes[0].collections if isinstance(c, PathCollection) and len(c.get_offsets())
              and (c.get_facecolors() == 1).all()]  # white
    assert len(hollow) == 1 and hollow[0].get_offsets().tolist() == [[0.1, 4.0]]  # the collapsed setting only
    assert ps.DEGENERATE_LABEL in {t.get_text() for t in fig.legends[0].get_texts()}


def test_each_models_frontier_is_a_line_through_its_temperatures(tmp_path):
    """LDLM: a dotted sweep over steps (T = 0) and a solid line through T = 0, 0.5, 1 at 100 steps, labelled
    by temperature where the sweep does not label the point; its collapsed T = 0 point stays hollow."""
    base = dict(preset="tiny", dataset="wiki", judge="smollm2", seed=0, variant="full")
    rows = [dict(base, model="reference", variant="reference", steps=0, entropy=3.8, gen_ppl_tok=50.0, rep_4=0.0)]
    rows += [dict(base, model="ldlm", steps=k, temperature=t, entropy=e, gen_ppl_tok=g, rep_4=r) for k, t, e, g, r in
             [(10, 0.0, 3.1, 1200, 0.0), (100, 0.0, 3.0, 1000, 0.9), (100, 0.5, 3.4, 2000, 0.0), (100, 1.0, 3.7, 3000, 0.0)]]
    rows += [dict(base, model="mdlm", steps=100, temperature=t, entropy=e, gen_ppl_tok=g, rep_4=0.0)
             for t, e, g in ((1.0, 3.9, 4000), (0.8, 3.6, 2500))]
    pd.DataFrame(rows).to_csv(tmp_path / "main_wiki.csv", index=False)
    fig = figures.draw("pareto", tmp_path)
    (ax,) = fig.axes
    solid = [line for line in ax.lines if line.get_linestyle() == "-" and len(line.get_xdata()) > 1]
    assert sorted(line.get_xdata().tolist() for line in solid) == [[3.0, 3.4, 3.7], [3.6, 3.9]]  # by temperature
    dotted = [line.get_xdata().tolist() for line in ax.lines if line.get_linestyle() == ":"]
    assert [3.1, 3.0] in dotted  # LDLM's sweep: 10, 100 steps
    assert {t.get_text() for t in ax.texts} == {"10", "100", "T=0.5", "T=1", "T=0.8"}
    hollow = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())
              and (c.get_facecolors() == 1).all()]
    assert {tuple(p) for c in hollow for p in c.get_offsets().tolist()} == {(3.0, 1000.0)}


def _ablation_rows(tmp_path, mauve: float) -> Path:
    base = dict(preset="smoke", dataset="news", judge="smollm2", seed=0, steps=50, model="ldlm")
    rows = [dict(base, variant="reference", model="reference", steps=0, gen_ppl_tok=130.0, entropy=3.8, rep_4=0.0, mauve=0.9),
            dict(base, variant="full", gen_ppl_tok=4.0, entropy=0.1, rep_4=0.97, mauve=mauve),
            dict(base, variant="no_mse", gen_ppl_tok=900.0, entropy=3.5, rep_4=0.0, mauve=mauve * 1.1)]
    pd.DataFrame(rows).to_csv(tmp_path / "ablation.csv", index=False)
    return tmp_path


def test_a_degenerate_variant_is_hatched_in_every_panel_that_scores_samples(tmp_path):
    fig = figures.draw("ablation", _ablation_rows(tmp_path, 0.3))
    for title in ("Gen PPL", "unigram entropy", "MAUVE"):
        ax = next(ax for ax in fig.axes if ax.get_title().startswith(title))
        assert [bar.get_hatch() for bar in ax.patches] == [ps.DEGENERATE_HATCH, None], title  # full, no_mse


def test_mauve_is_drawn_on_its_whole_range_and_a_floor_is_named(tmp_path):
    for mauve, at_floor in ((0.004, True), (0.3, False)):
        fig = figures.draw("ablation", _ablation_rows(tmp_path, mauve))
        ax = next(ax for ax in fig.axes if ax.get_title().startswith("MAUVE"))
        assert ax.get_ylim() == (0, 1)
        assert any("floor" in t.get_text() for t in ax.texts) == at_floor


def test_speed_quality_gives_each_line_style_one_meaning():
    fig = figures.draw("speed_quality", FIXTURE)
    left, right = fig.axes[:2]
    style = lambda ax: {line.get_linestyle() for line in ax.get_lines() if line.get_linestyle() != "None"}
    assert style(left) and style(right) and not style(left) & style(right)  # batch sizes vs datasets


def test_a_figure_leaves_out_rows_of_runs_the_spec_no_longer_makes(tmp_path, capsys):
    """A change that renames runs (a new config key: a new hash) leaves the old runs' rows and curves in
    results/ beside the new ones. Given the spec's run ids, the figures draw its runs only, selected as its
    tables are (results.of_runs), and make_all says how many it left out; it deletes nothing."""
    from ldlm.experiments.experiment import Experiment

    exp = Experiment(preset="smoke", datasets=["wiki"], models=["ldlm"], variants=["full"])
    (current,) = [rid for rid in exp.run_ids() if rid.startswith("smoke-wiki-ldlm-full-s0-")]
    stale = current[:-8] + "00000000"  # the same run under an older config
    base = dict(preset="smoke", dataset="wiki", variant="full", seed=0, judge="smollm2", model="ldlm", steps=100)
    rows = [dict(base, variant="reference", model="reference", steps=0, run_id="reference-wiki", entropy=3.8,
                 gen_ppl_tok=50.0),
            dict(base, run_id=current, entropy=3.0, gen_ppl_tok=1000.0),
            dict(base, run_id=stale, entropy=2.0, gen_ppl_tok=9000.0)]
    pd.DataFrame(rows).to_csv(tmp_path / "main_wiki.csv", index=False)
    (tmp_path / "curves").mkdir()
    for rid in (current, stale):
        (tmp_path / "curves" / f"{rid}.jsonl").write_text('{"step": 1, "loss_diff": 1.0}\n{"step": 2, "loss_diff": 0.5}\n')
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def points(fig):
        return {tuple(p) for c in fig.axes[0].collections if isinstance(c, PathCollection) for p in c.get_offsets().tolist()}

    assert (2.0, 9000.0) in points(figures.draw("pareto", tmp_path))  # no spec given: every row, the stale one too
    drawn = points(figures.draw("pareto", tmp_path, exp.run_ids()))
    assert (3.0, 1000.0) in drawn and (3.8, 50.0) in drawn and (2.0, 9000.0) not in drawn
    assert len(figures.draw("training_curves", tmp_path, exp.run_ids()).axes[0].lines) == 1

    figures.make_all(tmp_path, tmp_path / "figures", exp.run_ids())
    assert "left out 1 result row(s) and 1 training curve(s) of runs the experiment spec does not make" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in before} == before
