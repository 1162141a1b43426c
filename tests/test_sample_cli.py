"""The sample command's small conveniences (issue 26, item 8): `--out -` is stdout, and the progress bar
moves within one batch."""
import json
from pathlib import Path

import ldlm
from ldlm.sampling.rows import SeededBatches, sample_ids
from ldlm.trained.sample import main

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "tiny-wiki-ldlm"


def test_out_dash_writes_the_samples_to_stdout_and_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--run", str(SHIPPED), "--n", "2", "--steps", "3", "--threads", "1", "--out", "-"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 2 and all(isinstance(r["text"], str) for r in rows)
    assert "wrote 2 samples to stdout" in captured.err and not list(tmp_path.iterdir())


def test_the_progress_bar_counts_reverse_steps_within_one_batch(capsys):
    pipe = ldlm.load(SHIPPED, device="cpu", threads=1)
    sample_ids(pipe.model, pipe.cfg, SeededBatches(2, batch_size=64), dict(steps=3), progress=True)
    assert "3/3" in capsys.readouterr().err  # one batch: the bar counted its 3 steps
