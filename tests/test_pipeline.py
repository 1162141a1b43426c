import pytest

from ldlm.experiments import pipeline


def test_scores_are_reused_until_their_key_changes(tmp_path):
    cache, calls = tmp_path / "scores" / "s.json", []

    def compute():
        calls.append(1)
        return {"gen_ppl_tok": 10.0 * len(calls)}

    from ldlm.text.data import load_corpus

    key = pipeline.score_key(load_corpus("news"), samples_sha256="abc", judge="smollm2", seed=0)
    first = pipeline.scores(cache, key, compute)
    assert pipeline.scores(cache, key, compute) == first and len(calls) == 1
    changed = pipeline.scores(cache, dict(key, samples_sha256="abd"), compute)
    assert len(calls) == 2 and changed["gen_ppl_tok"] == 20.0
    cache.write_text("{not json")  # a damaged cache file is recomputed, not an error
    assert pipeline.scores(cache, key, compute)["gen_ppl_tok"] == 30.0


def test_score_key_follows_the_held_out_text(tmp_path):
    from ldlm.text.data import load_corpus

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"document {i} with a few words" for i in range(40)))
    key = pipeline.score_key(load_corpus(f"text:{corpus}"), judge="smollm2")
    assert key["metrics_version"] and "torch" in key["versions"]
    assert pipeline.score_key(load_corpus(f"text:{corpus}"), judge="smollm2") == key
    corpus.write_text(corpus.read_text() + "\n\none more held-out document")
    assert pipeline.score_key(load_corpus(f"text:{corpus}"), judge="smollm2")["held_out_sha256"] != key["held_out_sha256"]


def test_evaluation_holds_out_what_the_run_held_out(tmp_path):
    """The references come from the run's own held-out split (its valid_docs), not the dataset's default."""
    from ldlm.config import make_config

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"document {i} with a few words" for i in range(40)))
    default = pipeline.held_out(make_config("smoke", dataset=f"text:{corpus}"))
    mine = pipeline.held_out(make_config("smoke", dataset=f"text:{corpus}", valid_docs=7))
    assert len(mine.valid) == 7 and len(default.valid) == 2  # the default: 1 in 20 documents
    assert mine.valid[-1] == default.valid[-1] == "document 39 with a few words"


TRAIN_SAME_RUN = """
import json, sys
from ldlm.experiments import pipeline
from ldlm.config import make_config
run_dir, summary = pipeline.train_or_resume(make_config("smoke", max_steps=10), sys.argv[1])
print(json.dumps(dict(run=str(run_dir), step=summary["step"])))
"""


@pytest.mark.slow
def test_notebooks_asking_for_the_same_run_train_it_once(tmp_path):
    """Two processes (notebooks side by side) ask for one run: one trains, the other waits and reuses it."""
    import json
    import subprocess
    import sys

    from ldlm.io import read_jsonl

    procs = [subprocess.Popen([sys.executable, "-c", TRAIN_SAME_RUN, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]  # relayed log first
    assert all(p.returncode == 0 for p in procs) and outs[0] == outs[1] and outs[0]["step"] == 10
    steps = [r["step"] for r in read_jsonl(f"{outs[0]['run']}/metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps))  # one writer: no line twice


def _sample_file(path, n, **extra):
    import json

    rows = [dict(text=f"sample {i}", raw_ids=[1, 2, 3], n_other=0, **extra) for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_sample_file_is_reused_only_whole_and_drawn_by_this_sampler_version(tmp_path, monkeypatch):
    from ldlm.nets.samplers import SAMPLER_VERSION

    whole = _sample_file(tmp_path / "whole.jsonl", 8, sampler_version=SAMPLER_VERSION)
    assert pipeline.reusable_samples(whole, 8)
    assert not pipeline.reusable_samples(whole, 16)  # another n_samples
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(whole.read_text().splitlines(keepends=True)[:4]))  # cut to 4 of 8 rows
    assert not pipeline.reusable_samples(cut, 8)
    torn = tmp_path / "torn.jsonl"
    torn.write_text(whole.read_text()[:-20])  # the last row cut mid-line
    assert not pipeline.reusable_samples(torn, 8)
    assert not pipeline.reusable_samples(_sample_file(tmp_path / "old.jsonl", 8, sampler_version="0"), 8)
    assert not pipeline.reusable_samples(tmp_path / "none.jsonl", 8)
    (tmp_path / "list.jsonl").write_text("[1, 2]\n" * 8)
    assert not pipeline.reusable_samples(tmp_path / "list.jsonl", 8)
    monkeypatch.setattr(pipeline, "SAMPLER_VERSION", "2")  # the sampling code changed
    assert not pipeline.reusable_samples(whole, 8)


def test_sample_files_drawn_before_sampler_versions_count_as_version_1(tmp_path, monkeypatch):
    """The committed results/samples/ files carry no sampler_version: they were drawn by version 1."""
    monkeypatch.setattr(pipeline, "SAMPLER_VERSION", "1")
    assert pipeline.reusable_samples(_sample_file(tmp_path / "committed.jsonl", 8), 8)


def test_a_scores_cache_that_is_no_json_object_is_recomputed(tmp_path):
    cache = tmp_path / "s.json"
    for text in ("[1, 2]", "3", '"text"', "null"):
        cache.write_text(text)
        assert pipeline.scores(cache, {"k": 1}, lambda: {"gen_ppl_tok": 5.0})["gen_ppl_tok"] == 5.0


@pytest.mark.slow
def test_the_pipeline_draws_a_cut_or_outdated_sample_file_again(tmp_path, monkeypatch):
    """run_experiment on the smoke spec: a sample file cut to 4 of 8 rows is drawn again (its row then has 8),
    and so is every file after a change of SAMPLER_VERSION; a whole current file is reused."""
    from ldlm.experiments.experiment import Experiment, Run
    from ldlm.io import read_jsonl

    exp = Experiment.load("smoke", step_counts=[2], frontier_temperatures={})
    drawn = []
    real = pipeline.sample_rows
    monkeypatch.setattr(pipeline, "sample_rows", lambda *a, **k: drawn.append(1) or real(*a, **k))
    run = lambda: pipeline.run_experiment(Run(exp, "news"), results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    run()
    paths = sorted((tmp_path / "results" / "samples").glob("*.jsonl"))
    assert len(drawn) == len(paths) >= 1 and all(len(read_jsonl(p)) == 8 for p in paths)
    run()
    assert len(drawn) == len(paths)  # whole and current: reused
    path = paths[0]
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:4]))
    rows = run()
    assert len(drawn) == len(paths) + 1 and len(read_jsonl(path)) == 8 and set(rows["n_samples"]) == {8}
    monkeypatch.setattr(pipeline, "SAMPLER_VERSION", "2")
    monkeypatch.setattr("ldlm.sampling.rows.SAMPLER_VERSION", "2")
    run()
    assert len(drawn) == 2 * len(paths) + 1
    assert all({r["sampler_version"] for r in read_jsonl(p)} == {"2"} for p in paths)


def test_a_training_log_goes_to_the_run_folder_and_a_failure_shows_its_last_lines(tmp_path, capsys):
    """The notebooks show one line per run (pipeline.run_line); the training command's output lives in the
    run folder's log, added to on a resume; a failure prints its end; a folder that is no run gets no file."""
    import sys

    from ldlm.runtime import runs
    from ldlm.config import make_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(make_config("smoke").to_json())
    speak = lambda text, status=0: [sys.executable, "-c", f"print({text!r}); raise SystemExit({status})"]
    assert runs.relay(speak("step 1/2"), log=run / runs.TRAIN_LOG) == (0, "step 1/2")
    assert capsys.readouterr().out == ""
    assert runs.relay(speak("error: it broke", 2), log=run / runs.TRAIN_LOG) == (2, "error: it broke")
    assert capsys.readouterr().out.strip().endswith("error: it broke")
    log = (run / runs.TRAIN_LOG).read_text()
    assert "step 1/2" in log and "error: it broke" in log and log.count(sys.executable) == 2
    foreign = tmp_path / "mine"
    foreign.mkdir()
    runs.relay(speak("error: not a run folder", 2), log=foreign / runs.TRAIN_LOG)
    assert not list(foreign.iterdir())
    line = pipeline.run_line(run, dict(step=2, train_seconds=3.4, train_tokens_per_s=1234.4))
    assert line == f"run run: 2 steps in 3 s (1,234 tokens/s); log {run / runs.TRAIN_LOG}"
