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
from ldlm.runtime import checkpoint, runs
from ldlm.config import ConfigError, make_config
from ldlm.experiments.experiment import Experiment
from ldlm.io import PathError, hold_folder
from ldlm.training.train import train

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
    ("sample", ["ldlm.trained.sample", "--run", "{evil}", "--out", "{root}/s.jsonl"]),
    ("sample on the file", ["ldlm.trained.sample", "--run", "{evil}/ckpt.pt", "--out", "{root}/s.jsonl"]),
    ("export", ["ldlm.trained.export", "--run", "{evil}", "--out", "{root}/exported"]),
    ("bench", ["ldlm.tools.bench", "--run", "{evil}", "--out", "{csv}", "--steps", "2", "--batch", "1", "--repeats", "1"]),
    ("train --resume", ["ldlm.training.train", "--out", "{evil}", "--resume", "--no-progress", "max_steps=4"]),
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
    assert not marker.exists() and "ldlm.tools.prepare" not in proc.stdout


@pytest.mark.slow
@needs_venv
def test_make_quotes_the_names_it_pastes_into_commands(tmp_path):
    """DATASETS from make's command line is not checked by ldlm.experiments.experiment: the quoting alone keeps it a word."""
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
    ("sample --out RUN/ckpt.pt", ["ldlm.trained.sample", "--run", "{run}", "--out", "{run}/ckpt.pt"], "--out '{run}/ckpt.pt'"),
    ("sample --out its --run file", ["ldlm.trained.sample", "--run", "{run}/ckpt.pt", "--out", "{run}/ckpt.pt"], "--run"),
    ("sample --out a link to the checkpoint", ["ldlm.trained.sample", "--run", "{run}", "--out", "{root}/link.jsonl"], "--run"),
    ("sample --out inside the run folder", ["ldlm.trained.sample", "--run", "{run}", "--out", "{run}/samples.jsonl"],
     "inside the command's --run"),
    ("sample --out inside another run", ["ldlm.trained.sample", "--run", "{model}", "--out", "{run}/more/s.jsonl"],
     "inside the run folder"),
    ("sample --out inside a saved model", ["ldlm.trained.sample", "--run", "{run}", "--out", "{model}/s.jsonl"],
     "inside the saved model"),
    ("sample --out config.json elsewhere", ["ldlm.trained.sample", "--run", "{run}", "--out", "{root}/config.json"],
     "named like a file the kit writes"),
    ("evaluate --out its --samples", ["ldlm.evaluation.evaluate", "--samples", "{samples}", "--dataset", "wiki", "--out",
                                      "{samples}"], "is the command's --samples"),
    ("evaluate --out a hard link of --samples", ["ldlm.evaluation.evaluate", "--samples", "{samples}", "--dataset", "wiki",
                                                 "--out", "{root}/hard.jsonl"], "--samples"),
    ("evaluate --out its text: corpus", ["ldlm.evaluation.evaluate", "--samples", "{samples}", "--dataset", "text:{corpus}",
                                         "--out", "{corpus}"], "--dataset"),
    ("evaluate --out RUN/metrics.jsonl", ["ldlm.evaluation.evaluate", "--samples", "{samples}", "--dataset", "wiki", "--out",
                                          "{run}/metrics.jsonl"], "metrics.jsonl"),
    ("bench --out inside the run", ["ldlm.tools.bench", "--run", "{run}", "--out", "{run}/speed.csv"], "--run"),
    ("export --out inside the run", ["ldlm.trained.export", "--run", "{run}", "--out", "{run}/model"], "--run"),
    ("export --out inside a saved model", ["ldlm.trained.export", "--run", "{run}", "--out", "{model}/again"], "saved model"),
    ("gpu_check --out inside its --run-dir", ["ldlm.tools.gpu_check", "--allow-cpu", "--preset", "smoke", "--run-dir",
                                              "{root}/gc", "--out", "{root}/gc/c.csv"], "--run-dir"),
    ("train --out inside a run", ["ldlm.training.train", "--preset", "smoke", "--no-progress", "--out", "{run}/sub"],
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
        argv = ["ldlm.evaluation.evaluate", "--samples", str(w["samples"]), "--dataset", "wiki", "--judge", str(folder),
                "--out", str(tmp_path / "row.json")]
    else:
        folder = tmp_path / "model"
        shutil.copytree(w["model"], folder)
        argv = ["ldlm.trained.sample", "--run", str(folder), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.jsonl")]
    _with_custom_code(folder, marker)
    before = _files(folder)
    last = _refused(_run(argv, answer="y\n" * 4), str(folder))
    # a saved model's edited tokenizer files no longer match the hashes its weights hold: refused before its tokenizer loads
    assert "custom code" in last or (case.startswith("sample") and "does not match the saved model's weights" in last), last
    assert not marker.exists(), "the folder's code ran"
    assert _files(folder) == before


# ---- 5. a re-export swaps the whole folder in, one export at a time (issue 24, items 8 and 11) ----------

def _exported(w, tmp_path) -> Path:
    """A copy of the fixture's saved model (float32), to export over."""
    folder = tmp_path / "model"
    shutil.copytree(w["model"], folder)
    return folder


def test_an_interrupted_re_export_leaves_the_old_model_whole(w, tmp_path, monkeypatch):
    """Killed after the new weights are written but before config.json: the old folder is byte-identical
    (not new weights under the old config), and no build folder is left beside it."""
    import ldlm.trained.hub

    folder = _exported(w, tmp_path)
    before = _files(folder)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ldlm.trained.hub, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        ldlm.load(w["run"], device="cpu").save_pretrained(folder, weights_dtype="float16")
    assert _files(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_re_export_replaces_the_folder_whole(w, tmp_path):
    folder = _exported(w, tmp_path)
    ldlm.load(w["run"], device="cpu").save_pretrained(folder, weights_dtype="float16")
    assert json.loads((folder / "config.json").read_text())["weights_dtype"] == "float16"
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} >= {torch.float16}
        assert torch.float32 not in {weights.get_tensor(k).dtype for k in weights.keys()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_re_export_into_a_saved_model_with_files_of_the_users_is_refused(w, tmp_path):
    folder = _exported(w, tmp_path)
    (folder / "notes.txt.bak").write_text("mine\n")
    before = _files(folder)
    with pytest.raises(PathError, match=r"holds files an export does not write \(notes.txt.bak\)"):
        ldlm.load(w["run"], device="cpu").save_pretrained(folder)
    assert _files(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.slow
def test_the_loser_of_two_exports_into_one_folder_exits_2_with_one_line(w, tmp_path):
    """This process holds the folder as a running export does; a real second export is refused."""
    folder = _exported(w, tmp_path)
    before = _files(folder)
    with hold_folder(folder, "held"):
        proc = _run(["ldlm.trained.export", "--run", str(w["run"]), "--out", str(folder), "--dtype", "float16"])
    _refused(proc, str(folder), "being written by another export")
    assert _files(folder) == before


# ---- 6. one line instead of a traceback (issue 24, item 11) ----------------------------------------------

def _without(w, tmp_path, key: str) -> Path:
    """A copy of the run whose ckpt.pt lacks `key`."""
    run = tmp_path / f"no-{key}"
    shutil.copytree(w["run"], run, ignore=shutil.ignore_patterns(runs.LOCK_NAME))
    state = checkpoint.load(run)
    del state[key]
    torch.save(state, run / checkpoint.CKPT_NAME)
    return run


def test_a_checkpoint_without_its_ema_weights_is_one_error_line(w, tmp_path):
    run = _without(w, tmp_path, "ema")
    with pytest.raises(checkpoint.CheckpointError, match="lacks ema") as err:
        ldlm.load(run, device="cpu")
    assert str(run) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sample", "train --resume"])
def test_every_command_refuses_a_checkpoint_without_its_ema_weights_with_one_line(w, tmp_path, command):
    run = _without(w, tmp_path, "ema")
    before = _files(run)
    argv = (["ldlm.trained.sample", "--run", str(run), "--out", str(tmp_path / "s.jsonl"), "--n", "2", "--steps", "2"]
            if command == "sample" else ["ldlm.training.train", "--out", str(run), "--resume", "--no-progress", "max_steps=4"])
    _refused(_run(argv), str(run), "lacks ema")
    assert _files(run) == before and not (tmp_path / "s.jsonl").exists()


@pytest.mark.parametrize("given", ["/etc/passwd", "{root}/notes.pt", "{root}/elsewhere/ckpt.pt"])
def test_a_file_that_is_no_checkpoint_is_never_advised_to_be_deleted(tmp_path, given):
    """Only a run folder's own ckpt.pt may be deleted to start over; anything else is the user's."""
    path = Path(given.format(root=tmp_path))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("my notes\n")
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(path)
    assert str(path) in str(err.value) and "delete" not in str(err.value) and "give a run folder" in str(err.value)


def test_a_run_folders_own_corrupt_checkpoint_may_be_deleted_to_start_over(w, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(w["run"], run, ignore=shutil.ignore_patterns(runs.LOCK_NAME))
    (run / checkpoint.CKPT_NAME).write_bytes(b"cut short")
    with pytest.raises(checkpoint.CheckpointError, match="delete it to start the run over"):
        checkpoint.load(run)


@pytest.mark.slow
def test_sample_run_etc_passwd_is_one_line_that_does_not_advise_deleting_it(tmp_path):
    proc = _run(["ldlm.trained.sample", "--run", "/etc/passwd", "--out", str(tmp_path / "s.jsonl")])
    assert "delete" not in _refused(proc, "'/etc/passwd'")


def test_a_params_file_with_a_python_object_tag_is_one_error_line_and_builds_nothing(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "smoke.yaml").write_text(f"seeds: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"smoke.yaml: not a readable YAML experiment spec \(could not determine a "
                                          r"constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system', "
                                          r"line 1 column 8\)") as err:
        Experiment.load("smoke", params_dir=tmp_path)
    assert "\n" not in str(err.value) and not marker.exists()


def test_a_frozen_lm_of_another_width_is_one_error_line(w, tmp_path):
    """The run's frozen LM is a local folder that now holds another model (width 32, not MiniLM's 384)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ldlm.text.frozen_lm import ModelUnavailable, model_location

    narrow = tmp_path / "narrow-lm"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=6, num_attention_heads=2, intermediate_size=64)
              ).save_pretrained(narrow)
    AutoTokenizer.from_pretrained(model_location("minilm")).save_pretrained(narrow)
    run = tmp_path / "run"
    shutil.copytree(w["run"], run, ignore=shutil.ignore_patterns(runs.LOCK_NAME))
    state = checkpoint.load(run)
    state["config"]["frozen_lm"] = str(narrow)
    torch.save(state, run / checkpoint.CKPT_NAME)
    pipe = ldlm.load(run, device="cpu")
    with pytest.raises(ModelUnavailable, match=f"frozen LM '{narrow}' has width 32, but the model was trained on its "
                                               f"states at width 384") as err:
        pipe.encode(["A short text."], progress=False)
    assert "\n" not in str(err.value)
