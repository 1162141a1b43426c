"""Notebook templates: committed without outputs, executed with papermill on the smoke parameters."""
import json
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from ldlm.config import make_config
from ldlm.evaluation.diagnostics import report_columns
from ldlm.experiments.experiment import Experiment

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMOKE = Experiment.load("smoke")
GPT_STEPS = SMOKE.run_config("wiki").seq_len - 1  # one token per step
ROW_COLUMNS = {"preset", "dataset", "variant", "seed", "steps", "top_p", "temperature", "sampler", "judge", "featurizer",
               "n_samples", "dtype", "run_id", "gen_ppl_tok", "gen_ppl_seq", "entropy", "mauve", "n_empty", "recon_acc"}
FIGURES = {"pareto", "ablation", "speed_quality", "training_curves", "latents",  # from the pipeline's results
           "time_sampling", "warmup_gamma", "trajectory", "recon_noise", "denoising"}  # 40_latents' diagnostics


def test_templates_are_stripped_and_parameterised():
    assert {p.name for p in NOTEBOOKS} >= {"01_run.ipynb", "10_ablation.ipynb", "20_main.ipynb", "30_speed.ipynb",
                                           "40_latents.ipynb", "90_figures.ipynb"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0]
        assert first.cell_type == "markdown" and ("Time" in first.source or "seconds" in first.source), path
        assert "parameters" in nb.cells[1].metadata.get("tags", []), path
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


def run(name, tmp, **params):
    import papermill

    out = tmp / "executed" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(ROOT / "notebooks" / name), str(out), cwd=str(ROOT), kernel_name="python3",
                               parameters={"preset": "smoke", **({} if name == "90_figures.ipynb" else {"runs_dir": str(tmp / "runs")}),
                                           "results_dir": str(tmp / "results"), **params}, progress_bar=False)
    return out


def outputs_text(path) -> str:
    """Every text an executed notebook shows: streams, and the plain text of results and displays."""
    parts = []
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def has_inline_figure(path) -> bool:
    return any("image/png" in out.get("data", {}) for cell in nbformat.read(path, as_version=4).cells
               for out in cell.get("outputs", []))


@pytest.fixture(scope="module")
def smoke_pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pipeline")
    for dataset in ("wiki", "news"):
        run("20_main.ipynb", tmp, dataset=dataset)
    run("10_ablation.ipynb", tmp, dataset="news", spec={"n_samples": 4})
    run("30_speed.ipynb", tmp, dataset="wiki")
    run("40_latents.ipynb", tmp, dataset="wiki", model_dir="")  # the main run, as make reproduce does
    run("01_run.ipynb", tmp, dataset="wiki", variant="naive", spec={"step_counts": [2]})
    return tmp


@pytest.mark.slow
def test_main_notebook_rows(smoke_pipeline):
    for dataset in ("wiki", "news"):
        rows = pd.read_csv(smoke_pipeline / "results" / f"main_{dataset}.csv")
        assert ROW_COLUMNS <= set(rows.columns)
        ldlm = rows[rows["model"] == "ldlm"]
        sweep = ldlm[ldlm["temperature"] == 0]  # LDLM's default: argmax decoding
        assert sorted(sweep["steps"]) == sorted(SMOKE.step_counts) and (ldlm["n_samples"] == SMOKE.n_samples).all()
        # every model's frontier: its temperatures at one setting (the largest step count; the GPT at p = 1)
        for kind, temperatures in SMOKE.frontier_temperatures.items():
            frontier = rows[(rows["model"] == kind) & rows["temperature"].isin(temperatures)]
            at = {(int(k), p) for k, p in zip(frontier["steps"], frontier["top_p"].fillna(1.0))}
            assert len(frontier) == len(temperatures) and at == {(GPT_STEPS if kind == "ar" else max(SMOKE.step_counts), 1.0)}
        assert (rows["model"] == "reference").sum() == 1
        assert {"rep_4", "distinct_4", "degenerate"} <= set(rows.columns) and rows["degenerate"].notna().all()
        # every LDLM row carries its run's latent report; the baselines have none
        assert ldlm[report_columns()].notna().all().all() and rows.loc[rows["model"] != "ldlm", "mean_share"].isna().all()
        assert (smoke_pipeline / "results" / f"table1_{dataset}.md").exists()
        for rid in ldlm["run_id"].unique():
            record = json.loads((smoke_pipeline / "results" / "runs" / f"{rid}.json").read_text())
            assert record["config"]["preset"] == "smoke" and "torch" in record["versions"]
            assert Path(record["samples"][f"k{SMOKE.step_counts[0]}"]).exists()
        # the baselines: same training budget, MDLM over the same steps, the GPT over nucleus p
        mdlm, ar = rows[rows["model"] == "mdlm"], rows[rows["model"] == "ar"]
        assert sorted(mdlm.loc[mdlm["temperature"] == 1, "steps"]) == sorted(SMOKE.step_counts)
        assert (ar["temperature"] == 1).sum() == 2 and ar["top_p"].notna().all()
        assert set(mdlm["train_steps"]) == set(ar["train_steps"]) == set(ldlm["train_steps"])
        assert (rows.loc[rows["model"] != "reference", "valid_loss"].notna() == rows.loc[rows["model"] != "reference", "model"].ne("ldlm")).all()
        assert "AR (GPT), nucleus p = 0.9" in (smoke_pipeline / "results" / f"table1_{dataset}.md").read_text()


@pytest.mark.slow
def test_executed_notebooks_read_like_a_paper_section(smoke_pipeline):
    """A figure inline, each model's (variant's) first samples, a reading, one line per training run and no
    path of this machine's Python (training logs live in the run folders)."""
    executed = smoke_pipeline / "executed"  # 20_main: its last execution, on news
    for name, table, key in (("20_main.ipynb", "main_news", "model"), ("10_ablation.ipynb", "ablation", "variant")):
        text = outputs_text(executed / name)
        assert has_inline_figure(executed / name), name
        rows = pd.read_csv(smoke_pipeline / "results" / f"{table}.csv")
        rows = rows[rows["model"] != "reference"].sort_values("seed", kind="stable")
        for _, first in rows.groupby(key):  # the first seed's run of each model (variant): its first sample
            # its sample files (not its run record's list: a run shared by the main table and the ablation, as on
            # smoke, has the record of the notebook that ran last)
            rid = first["run_id"].iloc[0]
            samples = [p for p in (smoke_pipeline / "results" / "samples").glob(f"{rid}-*.jsonl") if "-T" not in p.name]
            assert any(" ".join(json.loads(Path(p).read_text().splitlines()[0])["text"].split())[:300] in text
                       for p in samples), (name, first["run_id"].iloc[0])
        assert "Held-out text scores" in text or "The full recipe" in text
        assert sys.prefix not in text and "step 1/" not in text  # no interpreter path, no training log lines
        for rid in rows["run_id"].unique():
            assert f"run {rid}:" in text and (smoke_pipeline / "runs" / rid / "train.log").exists()


@pytest.mark.slow
def test_ablation_rows_and_tables(smoke_pipeline):
    rows = pd.read_csv(smoke_pipeline / "results" / "ablation.csv")
    # the six variants, and held-out text's row (the main experiment's first seed) for the degenerate flag
    assert set(rows["variant"]) == {"full", "no_mse", "no_warmup", "no_adaptive", "no_decoder_noise", "naive", "reference"}
    seeds = SMOKE.ablation_seeds
    assert ROW_COLUMNS <= set(rows.columns) and rows["run_id"].nunique() == 6 * len(seeds) + 1
    assert sorted(rows["seed"].unique()) == sorted(seeds) and (rows["variant"] == "reference").sum() == 1
    assert {"rep_4", "distinct_4", "degenerate"} <= set(rows.columns) and rows["degenerate"].notna().all()
    md = (smoke_pipeline / "results" / "ablation_table.md").read_text()
    assert "naive joint training" in md and "held-out text (ceiling)" in md and "Rep-4" in md
    assert "\\begin{table}" in (smoke_pipeline / "results" / "ablation_table.tex").read_text()
    assert f"seeds {seeds}" in md and " ± " in md  # every seed in the table, as mean ± std
    latents = (smoke_pipeline / "results" / "ablation_latents.md").read_text()
    assert "Mean share" in latents and "naive joint training" in latents and "held-out text" not in latents


@pytest.mark.slow
def test_speed_and_latent_rows(smoke_pipeline):
    speed = pd.read_csv(smoke_pipeline / "results" / "speed.csv")
    sampling = speed[speed["kind"] == "sampling"]
    assert set(sampling["batch"]) == set(SMOKE.bench_batches) and set(sampling["model"]) == {"ldlm", "mdlm", "ar"}
    assert set(sampling.loc[sampling["model"] != "ar", "steps"]) == set(SMOKE.bench_step_counts)
    assert {"hardware", "threads", "dtype", "samples_per_s"} <= set(speed.columns)
    training = speed[speed["kind"] == "training"]
    assert (training["mfu"] > 0).all() and set(training["model"]) == {"ar", "ldlm", "mdlm"}
    # each model timed on the default threads and again on each of bench_threads (1), with its own peak
    assert training.groupby("model").size().tolist() == [1 + len(SMOKE.bench_threads)] * 3
    assert set(SMOKE.bench_threads) <= set(training["threads"])
    speedup = (smoke_pipeline / "results" / "speedup_wiki.md").read_text()
    assert "MDLM, 2 steps" in speedup and "AR (GPT)" in speedup
    pca = pd.read_csv(smoke_pipeline / "results" / "latents_pca.csv")
    assert len(pca) == SMOKE.n_sentences and {"pc1", "pc2"} <= set(pca.columns)
    # the diagnostics: two trajectories (from noise, from a sentence) of trajectory_steps + 1 rows, p(t) sums to 1
    trajectory = pd.read_csv(smoke_pipeline / "results" / "trajectory.csv")
    assert trajectory.groupby("start").size().tolist() == [SMOKE.trajectory_steps + 1] * 2
    assert pd.read_csv(smoke_pipeline / "results" / "time_sampling.csv")["p_adaptive"].sum() == pytest.approx(1)
    assert set(pd.read_csv(smoke_pipeline / "results" / "recon_noise.csv")["kind"]) == {"diffusion", "decoder"}
    denoising = pd.read_csv(smoke_pipeline / "results" / "denoising.csv")
    assert (denoising["wiener_r2"] <= 1).all() and denoising["t"].is_monotonic_increasing
    assert 0 <= pd.read_csv(smoke_pipeline / "results" / "latent_geometry.csv")["mean_share"].iloc[0] <= 1
    assert pd.read_csv(smoke_pipeline / "results" / "warmup_gamma.csv")["gamma"].iloc[-1] == make_config("smoke").gamma_max


@pytest.mark.slow
def test_rerun_reuses_finished_runs(smoke_pipeline):
    def stamps():  # checkpoints and the cached scores of every sample file
        files = [*(smoke_pipeline / "runs").glob("*/ckpt.pt"), *(smoke_pipeline / "runs" / "scores").glob("*.json")]
        return {p: p.stat().st_mtime_ns for p in files}

    before = stamps()
    assert any(p.parent.name == "scores" for p in before)
    run("01_run.ipynb", smoke_pipeline, dataset="wiki", variant="naive", spec={"step_counts": [2]})
    run("20_main.ipynb", smoke_pipeline, dataset="news")  # nothing retrained, resampled or re-scored
    assert before == stamps()


@pytest.mark.slow
def test_figures_notebook_on_pipeline_results(smoke_pipeline):
    figures = smoke_pipeline / "figures"
    run("90_figures.ipynb", smoke_pipeline, figures_dir=str(figures))
    assert {p.stem for p in figures.glob("*.png")} == FIGURES == {p.stem for p in figures.glob("*.pdf")}


def test_figures_notebook_on_fixture(tmp_path):
    fixture = ROOT / "tests" / "fixtures" / "results"
    # the fixture's run ids are those of an older smoke config: no spec makes them, so every row is drawn
    run("90_figures.ipynb", tmp_path, preset="", results_dir=str(fixture), figures_dir=str(tmp_path / "figures"))
    assert {p.stem for p in (tmp_path / "figures").glob("*.png")} == FIGURES


def test_parameters_cells_parse_cleanly_under_papermill():
    """Every assignment of a parameters cell is one papermill sees (an apostrophe in a comment hid them)."""
    import papermill

    for path in NOTEBOOKS:
        cell = nbformat.read(path, as_version=4).cells[1].source
        names = {line.split("=", 1)[0].strip() for line in cell.splitlines() if "=" in line.split("#", 1)[0]}
        assert set(papermill.inspect_notebook(str(path))) == names, path.name


@pytest.mark.slow
def test_latents_notebook_runs_from_the_shipped_model_without_training(tmp_path):
    out = run("40_latents.ipynb", tmp_path, spec={"n_sentences": 8, "trajectory_steps": 5})  # its defaults
    assert "model: the saved model models/tiny-wiki-ldlm" in outputs_text(out)
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder
    pca = pd.read_csv(tmp_path / "results" / "latents_pca.csv")
    assert len(pca) == 8 and set(pca["preset"]) == {"tiny"} and set(pca["dataset"]) == {"wiki"}


def test_a_bad_parameter_stops_the_notebook_with_the_specs_message(tmp_path):
    """A wrong key or type fails in the first cell after the parameters, naming it, before any work."""
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="unknown experiment key.*no_such_key"):
        run("01_run.ipynb", tmp_path, spec={"no_such_key": 1})
    with pytest.raises(papermill.PapermillExecutionError, match="seeds"):
        run("20_main.ipynb", tmp_path, spec={"seeds": "zero"})
    assert not (tmp_path / "runs").exists()  # nothing trained
