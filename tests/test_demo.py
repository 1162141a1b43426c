"""`make demo` (issue 26): the shipped model generates, reconstructs and draws one figure whose path it prints."""
import subprocess
from pathlib import Path

from ldlm.tools.demo import FIGURE, SENTENCES, main

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_generates_reconstructs_and_writes_the_figure_it_names(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--n", "2", "--steps", "5", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    png = tmp_path / f"{FIGURE}.png"
    assert png.stat().st_size > 1000 and f"step by step: {png}" in out
    assert out.count("\n  - ") == 2 and all(s in out for s in SENTENCES) and out.count("  -> ") == len(SENTENCES)


def test_a_missing_model_is_one_line(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_make_demo_runs_the_demo():
    plan = subprocess.run(["make", "-n", "-o", ".venv/.installed", "demo"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    assert "-m ldlm.tools.demo" in plan
