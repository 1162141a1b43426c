"""Shareable models in the Hugging Face convention (huggingface_hub's ModelHubMixin).

A saved model is a folder (or a hub repository) of:

    model.safetensors     the EMA weights (float32 unless asked otherwise; no pickle anywhere)
    config.json           {"library": "ldlm", "format", "kit_version", "model_kind", "vocab_size",
                           "head_vocab", "lm_width", "frozen_lm", "frozen_lm_id", "weights_dtype",
                           "run": {run_id, summary, results}, "config": the kit's resolved config}
    tokenizer.json, tokenizer_config.json   the tokenizer, so generating needs no other download
    README.md             the model card (ldlm.trained.model_card): result rows and how to load it

`save_pretrained(dir)`, `from_pretrained(dir or hub id)` and `push_to_hub(repo_id)` come from the
mixin; the folder is built beside its place and swapped in whole (ldlm.io.atomic_dir), one export at a
time. The weights' safetensors metadata holds the
sha256 of config.json (all but its "run" provenance) and of the tokenizer files, and loading refuses a
folder whose files no longer match them (an edited lm_layer or pack_mode, another vocabulary) unless
asked with `allow_mismatch=True`; a model exported before they were recorded loads unchecked, with a
warning. A run folder's ckpt.pt stays the format to
resume training from. `ModelPipeline.load` reads all three sources (run folder, checkpoint, saved model).
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelHubMixin

from ..io import PathError, atomic_dir, atomic_path, check_output, dumps, hold_folder, write_json, write_text
from ..runtime import checkpoint
from ..version import __version__

FORMAT = 1
WEIGHTS_NAME, CONFIG_NAME, CARD_NAME = "model.safetensors", "config.json", "README.md"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HUB_FILES = [CONFIG_NAME, WEIGHTS_NAME, "tokenizer*.json", "*.txt", CARD_NAME]  # what from_pretrained downloads


def is_saved_model(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def saved_by_ldlm(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG_NAME).read_text()).get("library") == "ldlm"
    except (OSError, ValueError, AttributeError):
        return False


def check_save_folder(folder: str | Path, flag: str = "save_pretrained", inputs: dict | None = None) -> Path:
    """`folder` if a saved model may be written there: new, empty, or an earlier ldlm saved model; not
    one of `inputs` nor inside a run folder or another saved model (io.check_output)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PathError(f"{flag} {str(folder)!r} is a file; give a folder")
    if folder.is_dir() and any(folder.iterdir()) and not saved_by_ldlm(folder):
        raise PathError(f"{flag} {str(folder)!r} is a non-empty folder that holds no ldlm saved model; "
                        f"choose a new or empty folder")
    return check_output(folder, flag, inputs, folder=True)


def run_source(run: Path, cfg) -> dict:
    """Provenance of a run folder's weights: run id (of the resolved config, as results rows name it),
    the training summary if the run finished."""
    from ..evaluation.results import run_id

    folder = run if run.is_dir() else run.parent
    summary = folder / "summary.json"
    return {"run_id": run_id(cfg.to_dict()),
            "summary": json.loads(summary.read_text()) if summary.is_file() else None, "results": []}


def canonical_header(path: Path) -> None:
    """Rewrite a safetensors file's JSON header with sorted keys, in place and at its length: safetensors
    writes the metadata in hash-map order, so two exports of the same model would differ in bytes."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.dumps(json.loads(f.read(size)), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(header) <= size:  # the same JSON, reordered: never longer
            f.seek(8)
            f.write(header.ljust(size, b" "))


def config_sha256(config: dict) -> str:
    """sha256 of a saved model's config.json content, all but "run" (the model card's provenance)."""
    kept = {k: v for k, v in config.items() if k != "run"}
    return hashlib.sha256(dumps(kept, sort_keys=True).encode()).hexdigest()


def files_sha256(folder: Path, names: list[str]) -> str:
    """sha256 of files `names` in `folder` (name and bytes of each; a missing one counts as empty)."""
    digest = hashlib.sha256()
    for name in names:
        path = folder / name
        digest.update(f"{name}\0{path.stat().st_size if path.is_file() else -1}\0".encode())
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()


def check_readable(folder: Path) -> None:
    """CheckpointError in one line unless saved model `folder`'s config.json is JSON and its weights a
    whole safetensors file (a file cut short or overwritten would end in a parser's traceback)."""
    from safetensors import safe_open

    try:
        json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError) as err:
        raise checkpoint.CheckpointError(f"{str(folder / CONFIG_NAME)!r} is not readable JSON ({err}); restore "
                                         f"it or export the model again") from err
    try:
        with safe_open(folder / WEIGHTS_NAME, "pt") as f:
            f.keys()
    except Exception as err:  # safetensors raises its own SafetensorError for a cut or foreign file
        raise checkpoint.CheckpointError(f"{str(folder / WEIGHTS_NAME)!r} is not a whole safetensors file "
                                         f"({str(err).splitlines()[0]}); restore it or export the model again") from err


def check_hashes(folder: Path, config: dict, allow_mismatch: bool) -> None:
    """The config and tokenizer files of saved model `folder` are those its weights were exported with
    (hashes in the safetensors metadata): else CheckpointError, or a warning with `allow_mismatch`."""
    from safetensors import safe_open

    with safe_open(folder / WEIGHTS_NAME, "pt") as f:
        meta = f.metadata() or {}
    if "ldlm_config_sha256" not in meta:
        warnings.warn(f"saved model {folder} was exported before config and tokenizer hashes were recorded: its "
                      f"{CONFIG_NAME} and tokenizer are not checked (python -m ldlm.trained.export adds them)")
        return
    tokenizer_files = [n for n in meta.get("ldlm_tokenizer_files", "").split(",") if n]
    changed = [what for what, recorded, actual in (
        (str(folder / CONFIG_NAME), meta["ldlm_config_sha256"], config_sha256(config)),
        (f"tokenizer ({', '.join(tokenizer_files)}) of {folder}", meta.get("ldlm_tokenizer_sha256"),
         files_sha256(folder, tokenizer_files))) if recorded != actual]
    if not changed:
        return
    message = (f"{' and '.join(changed)} does not match the saved model's weights (hash recorded at export differs: "
               f"edited or swapped since)")
    if not allow_mismatch:
        raise checkpoint.CheckpointError(f"{message}; restore the exported files (or export again), or load it "
                                         f"anyway with ldlm.load(..., allow_mismatch=True)")
    warnings.warn(f"{message}; loading it anyway (allow_mismatch=True): results may be wrong")


def hub_error(name: str, err: Exception) -> checkpoint.CheckpointError:
    return checkpoint.CheckpointError(
        f"{name!r} is no local run folder, checkpoint or saved model, and the Hugging Face hub gave no model of "
        f"that id ({type(err).__name__}); check the path, or the id and network (HF_HUB_OFFLINE=1 forbids downloads)")


class SavedModelMixin(ModelHubMixin, library_name="ldlm", pipeline_tag="text-generation",
                      paper_url="https://arxiv.org/abs/2605.07933",
                      tags=["latent-diffusion", "diffusion-language-model", "ldlm"]):
    """save_pretrained / from_pretrained / push_to_hub of a ModelPipeline (ldlm.trained.api)."""

    # -- reading --------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: str = "auto", allow_mismatch: bool = False):
        """A run folder, a checkpoint file, a saved-model folder, or a hub id of a saved model.
        allow_mismatch: load a saved model whose config or tokenizer differ from those it was exported
        with (a warning instead of an error)."""
        from ..kinds.build import load_run
        from ..text.frozen_lm import load_tokenizer
        from ..runtime.distributed import default_device

        local = Path(path)
        if local.is_dir() and is_saved_model(local):
            check_readable(local)
            return cls.from_pretrained(local, device=device, allow_mismatch=allow_mismatch)
        if local.exists() or str(path).count("/") != 1:  # a run folder or ckpt.pt (or its clear error)
            model, cfg = load_run(local, default_device(device))
            return cls(model, load_tokenizer(cfg.frozen_lm), run_source(local, cfg))
        try:
            return cls.from_pretrained(str(path), device=device, allow_mismatch=allow_mismatch)
        except checkpoint.CheckpointError:
            raise
        except Exception as err:  # the mixin's own download of config.json: offline, unknown id, no access
            raise hub_error(str(path), err) from err

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         device: str = "auto", config: dict | None = None, allow_mismatch: bool = False, **_):
        from transformers import AutoTokenizer
        from safetensors.torch import load_model

        from ..kinds.build import build_model
        from ..text.frozen_lm import load_tokenizer, load_without_remote_code
        from ..runtime.distributed import default_device

        folder = Path(model_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            try:
                folder = Path(snapshot_download(model_id, revision=revision, cache_dir=cache_dir, token=token,
                                                force_download=force_download, local_files_only=local_files_only,
                                                allow_patterns=HUB_FILES))
            except Exception as err:  # offline, unknown id, no access: one clear error
                raise hub_error(model_id, err) from err
            config = json.loads((folder / CONFIG_NAME).read_text()) if (folder / CONFIG_NAME).is_file() else None
        if not is_saved_model(folder) or not config or config.get("library") != "ldlm":
            raise checkpoint.CheckpointError(f"{model_id!r} holds no ldlm saved model ({CONFIG_NAME} with "
                                             f"library 'ldlm' and {WEIGHTS_NAME}); export one with python -m ldlm.trained.export")
        if config.get("format") != FORMAT:
            raise checkpoint.CheckpointError(f"{model_id!r} is a saved model of format {config.get('format')}; this "
                                             f"ldlm reads format {FORMAT}: install the ldlm version that wrote it")
        check_hashes(folder, config, allow_mismatch)
        cfg = checkpoint.load_config({"config": config["config"]})
        model = build_model(cfg, config["vocab_size"], config["head_vocab"], config["lm_width"])
        try:
            load_model(model, folder / WEIGHTS_NAME, strict=True)
        except RuntimeError as err:
            raise checkpoint.CheckpointError(f"{str(folder / WEIGHTS_NAME)!r} does not match the model its config "
                                             f"builds: {str(err).splitlines()[0]}") from err
        has_tokenizer = (folder / "tokenizer_config.json").is_file()
        try:
            tokenizer = (load_without_remote_code(AutoTokenizer, folder) if has_tokenizer
                         else load_tokenizer(cfg.frozen_lm))
        except ValueError as err:
            raise checkpoint.CheckpointError(f"the tokenizer of saved model {model_id!r} could not be loaded: "
                                             f"{' '.join(str(err).split())[:300]}") from err
        return cls(model.to(default_device(device)).eval(), tokenizer, config.get("run"))

    # -- writing --------------------------------------------------------------------------------------
    def saved_config(self, weights_dtype: str = "float32") -> dict:
        from ..text.frozen_lm import hub_id

        model = self.model
        lm_width = getattr(model, "h_mean", None)
        return {"library": "ldlm", "format": FORMAT, "kit_version": __version__, "model_kind": self.cfg.model,
                "vocab_size": len(model.to_head), "head_vocab": len(model.head_ids),
                "lm_width": len(lm_width) if lm_width is not None else None,
                "frozen_lm": self.cfg.frozen_lm, "frozen_lm_id": hub_id(self.cfg.frozen_lm), "lm_layer": self.cfg.lm_layer,
                "weights": "ema", "weights_dtype": weights_dtype, "run": self.source, "config": self.cfg.to_dict()}

    def save_pretrained(self, save_directory: str | Path, *, weights_dtype: str = "float32",
                        results: list[dict] | None = None, push_to_hub: bool = False, repo_id: str | None = None,
                        config=None, model_card_kwargs=None, **push_to_hub_kwargs):
        """Write the saved model into `save_directory` (new, empty, or an earlier ldlm saved model).
        weights_dtype: float32 (default, what was trained), float16 or bfloat16 (storage only: loading
        casts back to float32). results: result rows of this run for the model card. `config` and
        `model_card_kwargs` (the mixin's) are not used: both are derived from the run."""
        if weights_dtype not in DTYPES:
            raise ValueError(f"weights_dtype={weights_dtype!r}: choose one of {sorted(DTYPES)}")
        folder = check_save_folder(save_directory)
        folder = folder.resolve() if folder.is_symlink() else folder  # the linked folder is replaced, not the link
        if results is not None:
            self.source["results"] = results
        self._weights_dtype = weights_dtype
        busy = f"{str(folder)!r} is being written by another export; wait for it to finish, or choose another folder"
        with hold_folder(folder, busy), atomic_dir(folder, complete=lambda _: False) as build:
            self._save_pretrained(build)  # beside the folder, swapped in whole: a kill leaves the old model
            foreign = sorted({p.name for p in folder.iterdir()} - {p.name for p in build.iterdir()})
            if foreign:
                raise PathError(f"{str(folder)!r} holds files an export does not write ({', '.join(foreign[:5])}); "
                                f"not replacing it. Move them out, or export into a new folder")
        if push_to_hub:
            return self.push_to_hub(repo_id or folder.name, **push_to_hub_kwargs)
        return None

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_model

        from .model_card import card_text

        save_directory.mkdir(parents=True, exist_ok=True)
        dtype = getattr(self, "_weights_dtype", "float32")
        model = self.model
        if dtype != "float32":  # a copy with its floating tensors in the storage dtype (ints stay)
            import copy

            model = copy.deepcopy(model).to(DTYPES[dtype])
        config = self.saved_config(dtype)
        with tempfile.TemporaryDirectory() as tok_dir:
            tok_files = sorted({Path(name).name for name in self.tokenizer.save_pretrained(tok_dir)})
            metadata = {"format": "pt", "ldlm_config_sha256": config_sha256(json.loads(dumps(config))),
                        "ldlm_tokenizer_files": ",".join(tok_files),
                        "ldlm_tokenizer_sha256": files_sha256(Path(tok_dir), tok_files)}
            with atomic_path(save_directory / WEIGHTS_NAME, suffix=".safetensors") as tmp:
                mode = tmp.stat().st_mode
                save_model(model, str(tmp), metadata=metadata)  # ties stored once
                canonical_header(tmp)  # same bytes every time
                tmp.chmod(mode)  # safetensors recreates the file as 0600; keep atomic_path's readable mode
            for name in tok_files:
                with atomic_path(save_directory / name) as tmp:
                    tmp.write_bytes((Path(tok_dir) / name).read_bytes())
        write_text(save_directory / CARD_NAME, card_text(config))
        write_json(save_directory / CONFIG_NAME, config)  # last: a folder with config.json is complete

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        from .model_card import card_text

        return ModelCard(card_text(self.saved_config(getattr(self, "_weights_dtype", "float32"))))
