"""Trust boundaries: a checkpoint, a parameter file, a model folder or an --out path from someone else
never runs code and never destroys the user's files. Through the real command lines where there is
one: exit 2, one error line naming the value, no traceback, every prior file byte-identical, and a
payload's marker file never created."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ldlm
from ldlm import checkpoint, runs
from ldlm.config import ConfigError, make_config
from ldlm.experiment import Experiment
from ldlm.train import train

ROOT = Path(__file__).resolve().parents[1]


class RunsShell:
    """Pickles as a call of os.system: what a hostile ckpt.pt holds."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A trained run, a copy of it whose ckpt.pt runs `touch MARKER`, a saved model, a samples file."""
    root = tmp_path_factory.mktemp("trust")
    paths = {"run": root / "run", "evil": root / "evil", "marker": root / "MARKER", "model": root / "model",
             "samples": root / "samples.jsonl", "corpus": root / "corpus.txt", "csv": root / "out.csv"}
    train(make_config("smoke", max_steps=2, eval_every=100, ckpt_every=100), paths["run"], progress=False)
    shutil.copytree(paths["run"], paths["evil"], ignore=shutil.ignore_patterns(runs.LOCK_NAME))
    state = checkpoint.load(paths["run"])
    torch.save({**state, "model": RunsShell(f"touch {paths['marker']}")}, paths["evil"] / checkpoint.CKPT_NAME)
    ldlm.load(paths["run"], device="cpu").save_pretrained(paths["model"])
    paths["samples"].write_text("".join(json.dumps({"text": f"Sample {i} is about the city."}) + "\n" for i in range(4)))
    paths["corpus"].write_text("The first document.\n\nThe second one.\n\nThe third one.\n")
    return paths


def _files(*folders) -> dict:
    """Bytes of every file under `folders` (the run lock aside: a refused training may take it)."""
    found = {}
    for folder in folders:
        for f in ([folder] if folder.is_file() else folder.rglob("*")):
            if f.is_file() and f.name != runs.LOCK_NAME:
                found[f] = f.read_bytes()
    return found


def _run(args, answer=None):
    """The command line; `answer` is what it reads from stdin (a "y" to any question it asks)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          input=answer)


def _refused(proc, *named: str) -> str:
    """The one error line of a command that exited 2; it names each of `named`."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    last = lines[-1]
    assert last.startswith("error: ") and all(n in last for n in named), proc.stderr[-3000:]
    return last


# ---- 1. a checkpoint never runs code ----------------------------------------------------------------

HOSTILE = [
    ("sample", ["ldlm.sample", "--run", "{evil}", "--out", "{root}/s.jsonl"]),
    ("sample on the file", ["ldlm.sample", "--run", "{evil}/ckpt.pt", "--out", "{root}/s.jsonl"]),
    ("export", ["ldlm.export", "--run", "{evil}", "--out", "{root}/exported"]),
    ("bench", ["ldlm.bench", "--run", "{evil}", "--out", "{csv}", "--steps", "2", "--batch", "1", "--repeats", "1"]),
    ("train --resume", ["ldlm.train", "--out", "{evil}", "--resume", "--no-progress", "max_steps=4"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("case,argv", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_a_checkpoint_that_runs_code_is_refused_by_every_command_and_runs_nothing(w, case, argv):
    fill = lambda s: s.format(root=w["run"].parent, **{k: str(v) for k, v in w.items()})
    before = _files(w["evil"])
    proc = _run([fill(a) for a in argv])
    _refused(proc, str(w["evil"]), "system", "not loading it")
    assert not w["marker"].exists(), "the checkpoint's code ran"
    assert _files(w["evil"]) == before and not w["csv"].exists()


def test_ldlm_load_refuses_a_checkpoint_that_runs_code(w):
    with pytest.raises(checkpoint.CheckpointError, match="system"):
        ldlm.load(w["evil"], device="cpu")
    assert not w["marker"].exists()


def test_a_checkpoint_holds_tensors_and_plain_values_only(w):
    state = torch.load(w["run"] / checkpoint.CKPT_NAME, weights_only=True)  # no allow-list needed
    assert state["step"] == 2 and isinstance(state["rng"]["numpy"][1], torch.Tensor)


def test_a_checkpoint_written_before_still_loads_and_resumes_its_numpy_generator(w, tmp_path):
    """What ldlm wrote before: the NumPy RNG state as an ndarray (np.random.get_state() as is)."""
    old = tmp_path / "old"
    shutil.copytree(w["run"], old, ignore=shutil.ignore_patterns(runs.LOCK_NAME))
    state = checkpoint.load(old)
    np.random.seed(3)
    numpy_state = np.random.get_state()
    expected = np.random.rand(4)
    torch.save({**state, "rng": {**state["rng"], "numpy": numpy_state}}, old / checkpoint.CKPT_NAME)
    assert "numpy._core.multiarray._reconstruct" in torch.serialization.get_unsafe_globals_in_checkpoint(
        old / checkpoint.CKPT_NAME)
    loaded = checkpoint.load(old)
    checkpoint.set_rng_state(loaded["rng"])
    assert np.array_equal(np.random.rand(4), expected)
    assert train(make_config("smoke", max_steps=3, eval_every=100, ckpt_every=100), old, resume=True,
                 progress=False)["step"] == 3


# ---- 2. a parameter file never runs shell code ------------------------------------------------------

@pytest.mark.parametrize("spec, named", [
    ("datasets: ['wiki;touch MARKER;#']", "'wiki;touch MARKER;#'"),
    ("datasets: ['text:/data/my corpus.txt']", "'text:/data/my corpus.txt'"),
    ("datasets: ['wiki', 'text:$(id).txt']", "'text:$(id).txt'"),
    ("datasets: [wikipedia]", "'wikipedia'"),
    ("judge: \"smollm2' && id '\"", "judge="),
    ("featurizer: '-rf'", "featurizer='-rf'"),
])
def test_a_name_the_makefile_pastes_into_commands_must_be_safe(tmp_path, spec, named):
    (tmp_path / "smoke.yaml").write_text(spec + "\n")
    with pytest.raises(ConfigError, match="smoke.yaml") as err:
        Experiment.load("smoke", params_dir=tmp_path)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_dataset_paths_hub_ids_and_folders_stay_allowed(tmp_path):
    (tmp_path / "smoke.yaml").write_text("datasets: [wiki, 'text:/data/a_b-1.txt', 'jsonl:rel/x+y.jsonl', lm1b]\n"
                                         "judge: org/model-1.5\nfeaturizer: ./models/minilm\n")
    exp = Experiment.load("smoke", params_dir=tmp_path)
    assert exp.datasets[1:3] == ["text:/data/a_b-1.txt", "jsonl:rel/x+y.jsonl"] and exp.judge == "org/model-1.5"


def _make(args, cwd, extra_env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    env.pop("MAKEFLAGS", None)
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


needs_venv = pytest.mark.skipif(not (ROOT / ".venv" / ".installed").exists() or shutil.which("make") is None,
                                reason="drives make with the repository's .venv (make setup)")


@pytest.mark.slow
@needs_venv
def test_make_stops_on_a_parameter_file_that_would_run_shell_and_runs_nothing(tmp_path):
    """A copy of the kit whose params/smoke.yaml carries the payload (the repository's params/ stays as is)."""
    kit = tmp_path / "kit"
    shutil.copytree(ROOT / "ldlm", kit / "ldlm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, kit / name)
    (kit / ".venv").symlink_to((ROOT / ".venv").resolve(), target_is_directory=True)
    (kit / "params").mkdir()
    marker = tmp_path / "MARKER"
    (kit / "params" / "smoke.yaml").write_text(f"datasets: ['wiki;touch {marker};#']\n")
    proc = _make(["prepare", "PRESET=smoke"], kit)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"datasets entry 'wiki;touch {marker};#' is not a dataset" in proc.stderr
    assert "fix params/smoke.yaml" in proc.stderr.strip().splitlines()[-1]
    assert not marker.exists() and "ldlm.prepare" not in proc.stdout


@pytest.mark.slow
@needs_venv
def test_make_quotes_the_names_it_pastes_into_commands(tmp_path):
    """DATASETS from make's command line is not checked by ldlm.experiment: the quoting alone keeps it a word."""
    marker = tmp_path / "MARKER"
    proc = _make(["prepare", "PRESET=smoke", f"DATASETS=wiki;id>{marker}"], ROOT)
    assert proc.returncode != 0 and "unknown dataset 'wiki;id>" in proc.stderr
    assert not marker.exists()


@needs_venv
def test_make_names_a_text_dataset_in_its_stamps_without_breaking_the_targets(tmp_path):
    """text:/path in a target name was `multiple target patterns`; -n: nothing runs."""
    corpus = "text:/data/my_corpus.txt"
    stamps = "runs/stamps/smoke" + str(tmp_path).replace("/", "_")  # the Makefile's STAMPS for RESULTS=tmp_path
    proc = _make(["-n", f"{stamps}/figures", "PRESET=smoke", f"RESULTS={tmp_path}", f"DATASETS=wiki {corpus}"], ROOT)
    assert proc.returncode == 0, proc.stderr
    assert f"-p dataset '{corpus}' notebooks/20_main.ipynb" in proc.stdout
    assert "main_text_c_sdata_smy_ucorpus.txt" in proc.stdout  # decodes back: '_' is escaped


# ---- 3. --out never destroys an input or a run ------------------------------------------------------

# (case, command line, what the error line names); {run} a trained run, {model} a saved model
OUTS = [
    ("sample --out RUN/ckpt.pt", ["ldlm.sample", "--run", "{run}", "--out", "{run}/ckpt.pt"], "--out '{run}/ckpt.pt'"),
    ("sample --out its --run file", ["ldlm.sample", "--run", "{run}/ckpt.pt", "--out", "{run}/ckpt.pt"], "--run"),
    ("sample --out a link to the checkpoint", ["ldlm.sample", "--run", "{run}", "--out", "{root}/link.jsonl"], "--run"),
    ("sample --out inside the run folder", ["ldlm.sample", "--run", "{run}", "--out", "{run}/samples.jsonl"],
     "inside the command's --run"),
    ("sample --out inside another run", ["ldlm.sample", "--run", "{model}", "--out", "{run}/more/s.jsonl"],
     "inside the run folder"),
    ("sample --out inside a saved model", ["ldlm.sample", "--run", "{run}", "--out", "{model}/s.jsonl"],
     "inside the saved model"),
    ("sample --out config.json elsewhere", ["ldlm.sample", "--run", "{run}", "--out", "{root}/config.json"],
     "named like a file the kit writes"),
    ("evaluate --out its --samples", ["ldlm.evaluate", "--samples", "{samples}", "--dataset", "wiki", "--out",
                                      "{samples}"], "is the command's --samples"),
    ("evaluate --out a hard link of --samples", ["ldlm.evaluate", "--samples", "{samples}", "--dataset", "wiki",
                                                 "--out", "{root}/hard.jsonl"], "--samples"),
    ("evaluate --out its text: corpus", ["ldlm.evaluate", "--samples", "{samples}", "--dataset", "text:{corpus}",
                                         "--out", "{corpus}"], "--dataset"),
    ("evaluate --out RUN/metrics.jsonl", ["ldlm.evaluate", "--samples", "{samples}", "--dataset", "wiki", "--out",
                                          "{run}/metrics.jsonl"], "metrics.jsonl"),
    ("bench --out inside the run", ["ldlm.bench", "--run", "{run}", "--out", "{run}/speed.csv"], "--run"),
    ("export --out inside the run", ["ldlm.export", "--run", "{run}", "--out", "{run}/model"], "--run"),
    ("export --out inside a saved model", ["ldlm.export", "--run", "{run}", "--out", "{model}/again"], "saved model"),
    ("gpu_check --out inside its --run-dir", ["ldlm.gpu_check", "--allow-cpu", "--preset", "smoke", "--run-dir",
                                              "{root}/gc", "--out", "{root}/gc/c.csv"], "--run-dir"),
    ("train --out inside a run", ["ldlm.train", "--preset", "smoke", "--no-progress", "--out", "{run}/sub"],
     "inside the run folder"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case,argv,named", OUTS, ids=[c[0] for c in OUTS])
def test_an_out_that_is_an_input_or_inside_a_run_exits_2_and_changes_nothing(w, tmp_path, case, argv, named):
    root = tmp_path
    (root / "link.jsonl").symlink_to(w["run"] / checkpoint.CKPT_NAME)
    os.link(w["samples"], root / "hard.jsonl")
    fill = lambda s: s.format(root=root, **{k: str(v) for k, v in w.items()})
    before = _files(w["run"], w["model"], w["samples"], w["corpus"])
    names = lambda: {p for folder in (w["run"], w["model"], root) for p in folder.rglob("*")}
    listed = names()
    proc = _run([fill(a) for a in argv])
    _refused(proc, fill(named))
    assert _files(w["run"], w["model"], w["samples"], w["corpus"]) == before and names() == listed


# ---- 4. a model folder's own code never runs --------------------------------------------------------

def _with_custom_code(folder: Path, marker: Path) -> None:
    """`folder`'s config and tokenizer files name a module of its own, which touches `marker` on import:
    transformers asks on stdin whether to run it, unless trust_remote_code is False."""
    (folder / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    for name, extra in (("config.json", {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                                         "AutoModelForCausalLM": "evil.EvilModel"}), ("tokenizer_config.json", {})):
        values = json.loads((folder / name).read_text()) if (folder / name).is_file() else {"model_type": "evil"}
        values["auto_map"] = {**values.get("auto_map", {}), **extra, "AutoTokenizer": ["evil.EvilTokenizer", None]}
        values.pop("tokenizer_class", None)  # no class of transformers' own to fall back on
        (folder / name).write_text(json.dumps(values))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["evaluate --judge FOLDER", "sample --run SAVED_MODEL"])
def test_a_model_folder_with_its_own_code_is_refused_even_on_a_yes(w, tmp_path, case):
    marker = tmp_path / "MARKER"
    if case.startswith("evaluate"):
        folder = tmp_path / "judge"
        folder.mkdir()
        argv = ["ldlm.evaluate", "--samples", str(w["samples"]), "--dataset", "wiki", "--judge", str(folder),
                "--out", str(tmp_path / "row.json")]
    else:
        folder = tmp_path / "model"
        shutil.copytree(w["model"], folder)
        argv = ["ldlm.sample", "--run", str(folder), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.jsonl")]
    _with_custom_code(folder, marker)
    before = _files(folder)
    _refused(_run(argv, answer="y\n" * 4), str(folder), "custom code")
    assert not marker.exists(), "the folder's code ran"
    assert _files(folder) == before
