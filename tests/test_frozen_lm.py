from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from ldlm import checksum
from ldlm.text.frozen_lm import (ModelUnavailable, attention_mask, cached_hidden_states, load_frozen_lm, load_tokenizer,
                            model_location)


@pytest.fixture(scope="module")
def minilm_tokens():
    tok = load_tokenizer("minilm")
    enc = tok(["the cat sat on the mat.", "a longer sentence about the history of the city of paris."],
              padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("layer", [-3, -1, 2])
def test_truncated_lm_gives_the_full_models_hidden_state(minilm_tokens, layer):
    ids, mask = minilm_tokens
    full = AutoModel.from_pretrained(model_location("minilm")).eval()
    with torch.no_grad():
        ref = full(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
    lm = load_frozen_lm("minilm", layer)
    assert torch.allclose(lm(ids, mask), ref, atol=1e-5)


def test_lm_is_frozen(minilm_tokens):
    lm = load_frozen_lm("minilm", -3)
    lm.train()
    assert not lm.model.training
    assert all(not p.requires_grad for p in lm.parameters())
    ids, mask = minilm_tokens
    assert not lm(ids, mask).requires_grad


def test_layer_out_of_range():
    with pytest.raises(ValueError, match="lm_layer"):
        load_frozen_lm("minilm", 9)


def test_unavailable_model_says_what_works_offline():
    with pytest.raises(ModelUnavailable, match="frozen_lm=minilm"):
        load_tokenizer("gpt2")


def test_hidden_state_cache_reused_and_repaired(tmp_path):
    lm = load_frozen_lm("minilm", -3)
    blocks = np.array([[101, 1996, 4937, 102], [101, 7592, 102, 0]], dtype=np.int32)
    lengths = np.array([4, 3], dtype=np.int32)
    first = cached_hidden_states(lm, "minilm", blocks, lengths)
    with torch.no_grad():
        direct = lm(torch.as_tensor(blocks).long(), attention_mask(lengths, 4)).numpy()
    assert np.allclose(first, direct, atol=1e-2)  # stored in float16
    path = first.filename
    del first
    with open(path, "r+b") as f:  # a cache file cut short before checksums were kept: recomputed, not trusted
        f.truncate(100)
    checksum.sidecar(Path(path)).unlink()  # (with its checksum it is refused instead: tests/test_integrity.py)
    again = cached_hidden_states(lm, "minilm", blocks, lengths)
    assert np.allclose(again, direct, atol=1e-2)


def test_a_local_model_loads_without_a_progress_bar_and_leaves_bars_on(capfd):
    from transformers.utils import logging as hf_logging

    from ldlm.text.frozen_lm import load_frozen_lm

    load_frozen_lm("minilm", -3)
    assert "Loading weights" not in capfd.readouterr().err  # transformers draws one per load otherwise
    assert hf_logging.is_progress_bar_enabled()  # hub downloads keep theirs
