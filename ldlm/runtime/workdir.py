"""Where the notebooks run: the repository root, so that their relative paths (results/, runs/,
models/) mean the same in JupyterLab as under papermill and make (`--cwd` the root). JupyterLab starts
a kernel in the notebook's own folder; the notebooks' first cell calls `work_in_repo_root()`."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def work_in_repo_root() -> Path:
    """Move to the repository root when the kernel started in its notebooks/ folder; anywhere else
    (papermill's --cwd, a user's own folder) stay. Returns the working directory."""
    if Path.cwd().resolve() == (REPO_ROOT / "notebooks").resolve():
        os.chdir(REPO_ROOT)
    return Path.cwd()
