"""`make lab` (issue 26): it starts as root, serves the repository root (results/executed and models/ in
reach) and the notebooks run from that root."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from ldlm.runtime.workdir import REPO_ROOT, work_in_repo_root

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # JupyterLab's start: seconds on an idle machine, minutes on a loaded one
def test_make_lab_serves_the_repository_root(tmp_path):
    port, env = free_port(), {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
                              "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    args = f"--no-browser --port={port} --ServerApp.port_retries=0 --IdentityProvider.token=t"
    # -o: the shared .venv counts as installed (make must not reinstall it from this checkout's pyproject.toml)
    lab = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "lab", f"LAB_ARGS={args}"],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        listing, deadline = None, time.time() + 300
        while time.time() < deadline and lab.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/?token=t", timeout=5) as reply:
                    listing = json.load(reply)
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, lab.communicate(timeout=10)[0] if lab.poll() is not None else "no answer"
        assert {"ldlm", "notebooks", "models"} <= {item["name"] for item in listing["content"]}
        servers = subprocess.run([sys.executable, "-m", "jupyter", "server", "list", "--json"], env=env,
                                 capture_output=True, text=True, check=True).stdout.splitlines()
        roots = [json.loads(line)["root_dir"] for line in servers if line.strip()]
        assert [Path(r).resolve() for r in roots] == [ROOT.resolve()]
    finally:
        os.killpg(lab.pid, signal.SIGTERM)  # the make process group this test started
        lab.wait(timeout=30)


def test_a_kernel_started_in_notebooks_moves_to_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO_ROOT / "notebooks")
    assert work_in_repo_root() == REPO_ROOT and Path.cwd() == REPO_ROOT
    monkeypatch.chdir(tmp_path)  # anywhere else (papermill's --cwd, a user's folder): it stays
    assert work_in_repo_root() == tmp_path


def test_every_notebook_moves_to_the_repository_root_first():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        setup = nbformat.read(path, as_version=4).cells[2].source
        assert "work_in_repo_root()" in setup, path.name
