"""One FLOP model for every kind (ldlm.nets.flops, ldlm.tools.flops), checked against torch's FLOP counter on a real training
loss + backward: the MFU that bench and gpu_check report rests on it."""
import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ldlm.kinds.build import build_model
from ldlm.config import make_config
from ldlm.tools.flops import training_flops
from ldlm.nets.noise import SampleNoise

LM_WIDTH, VOCAB, B = 24, 500, 3


def counted(fn) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # math SDPA: counted matmuls
        fn()
    return counter.get_total_flops()


def small(model: str, **overrides):
    cfg = make_config("smoke", model=model, adaptive_head=False, corpus_vocab=False, seq_len=16, batch_size=B, **overrides)
    torch.manual_seed(0)
    return build_model(cfg, VOCAB, lm_width=LM_WIDTH).train(), cfg


@pytest.mark.parametrize("self_cond_prob,latent_len", [(0.0, 0), (1.0, 0), (1.0, 8)])
def test_ldlm_count_matches_the_flop_counter(self_cond_prob, latent_len):
    from ldlm.kinds.losses import ldlm_loss

    model, cfg = small("ldlm", latent_len=latent_len, self_cond_prob=self_cond_prob)
    T = cfg.seq_len
    h, tokens = torch.randn(B, T, LM_WIDTH), torch.randint(0, VOCAB, (B, T))
    measured = counted(lambda: ldlm_loss(model, h, tokens, cfg, 1.0, model.time_sampler,
                                         SampleNoise(0, 0, range(B))).loss.backward()) / (B * T)
    # not model FLOPs, but in the count: the loss's progress accuracy (head forward on <= 256 positions) ...
    measured -= 2 * model.token_decoder.head.weight.numel() * min(256, B * T) / (B * T)
    # ... and the input gradients autograd skips (encoder and token decoder inputs need none)
    measured += 2 * (model.encoder.in_proj.weight.numel() + model.token_decoder.in_proj.weight.numel())
    f = training_flops(model)
    assert f["frozen_lm"] == 0 and f["total"] == pytest.approx(measured, rel=0.01)
    assert f["params_trainable"] == sum(p.numel() for p in model.parameters())


def test_gpt_count_matches_the_flop_counter():
    model, cfg = small("ar")
    T = cfg.seq_len
    tokens, valid = torch.randint(0, VOCAB, (B, T)), torch.ones(B, T, dtype=torch.bool)
    measured = counted(lambda: model.token_loss(tokens, valid, SampleNoise(0, 0, range(B)))[0].backward()) / (B * T)
    assert training_flops(model)["total"] == pytest.approx(measured, rel=0.01)


def test_mdlm_count_matches_the_flop_counter_at_its_expected_masking():
    """The head runs at masked positions only; the model counts the expected half, so the measured
    count is moved from this draw's masked positions to half of them before comparing."""
    from ldlm.nets.mdlm import mask_tokens

    model, cfg = small("mdlm")
    T = cfg.seq_len
    tokens, valid = torch.randint(0, VOCAB, (B, T)), torch.ones(B, T, dtype=torch.bool)
    measured = counted(lambda: model.token_loss(tokens, valid, SampleNoise(0, 0, range(B)))[0].backward())
    noise = SampleNoise(0, 0, range(B))  # the same draws again: t, then the mask
    t = model.times(noise)
    _, masked = mask_tokens(tokens, t, noise.uniform(T), model.net.mask_id)
    head = 3 * 2 * model.net.out.weight.numel()  # forward + backward of the head, per position
    measured += head * (B * T / 2 - int(masked.sum()))
    assert training_flops(model)["total"] == pytest.approx(measured / (B * T), rel=0.01)


def test_a_frozen_lm_run_every_step_is_counted_and_needs_its_shape():
    model, _ = small("ldlm", cache_hidden=False)
    with pytest.raises(ValueError, match="shape"):
        training_flops(model)
    lm = dict(params=1000, layers=2, width=LM_WIDTH)
    assert training_flops(model, lm)["frozen_lm"] == (2 * 1000 * 16 + 4 * LM_WIDTH * 2 * 16 * 16) / 16


def adaptive(model: str, vocab: int = 9000):
    """A small model with an adaptive head over `vocab` classes: a 2k shortlist and two tail clusters."""
    cfg = make_config("smoke", model=model, adaptive_head=True, corpus_vocab=True, seq_len=16, batch_size=B)
    torch.manual_seed(0)
    return build_model(cfg, vocab, lm_width=LM_WIDTH).train(), cfg


def test_an_adaptive_head_is_counted_as_it_runs_not_whole():
    """Shortlist head on every row, each tail only on the rows whose target is in its cluster."""
    from ldlm.nets.flops import head_forward, linear_weights, tail_shares
    from ldlm.nets.layers import head_nll, vocab_head

    torch.manual_seed(0)
    head, n = vocab_head(32, 9000, adaptive=True), 400
    targets = torch.cat([torch.randint(0, 2048, (300,)), torch.randint(2048, 8192, (80,)), torch.randint(8192, 9000, (20,))])
    features = torch.randn(n, 32, requires_grad=True)
    measured = counted(lambda: head_nll(head, features, targets).sum().backward())
    assert tail_shares(head, targets) == pytest.approx([80 / n, 20 / n])
    assert 3 * head_forward(head, targets) * n == pytest.approx(measured, rel=0.01)
    assert head_forward(head, targets) < 0.6 * 2 * linear_weights(head)  # about half of the head counted whole
    with pytest.raises(ValueError, match="targets"):
        head_forward(head, None)


def test_gpt_count_with_an_adaptive_head_matches_the_flop_counter_on_its_targets():
    model, cfg = adaptive("ar")
    T = cfg.seq_len
    tokens, valid = torch.randint(0, 9000, (B, T)), torch.ones(B, T, dtype=torch.bool)
    measured = counted(lambda: model.token_loss(tokens, valid, SampleNoise(0, 0, range(B)))[0].backward()) / (B * T)
    targets = tokens[:, 1:].flatten().numpy()  # next-token targets: the shares the count prices the tails at
    assert training_flops(model, targets=targets)["total"] == pytest.approx(measured, rel=0.01)
    with pytest.raises(ValueError, match="targets"):
        training_flops(model)


def test_train_targets_leave_out_padding():
    from ldlm.text.data import TokenData

    blocks = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], dtype=np.uint16)
    data = TokenData(blocks, blocks[:0], np.array([3, 2], dtype=np.int32), np.zeros(0, np.int32), 0, "pad", {})
    assert data.train_targets().tolist() == [5, 6, 7, 8, 9]


def test_train_targets_read_evenly_spaced_rows_when_capped_and_only_for_an_adaptive_head():
    from ldlm.text.data import TokenData
    from ldlm.tools.flops import head_targets

    blocks = np.arange(40, dtype=np.int32).reshape(10, 4)  # row r holds 4r .. 4r + 3
    data = TokenData(blocks, blocks[:0], np.full(10, 4, np.int32), np.zeros(0, np.int32), 0, "wrap", {})
    assert data.train_targets(max_tokens=12).tolist() == [0, 1, 2, 3, 16, 17, 18, 19, 36, 37, 38, 39]  # rows 0, 4, 9
    assert data.train_targets(max_tokens=40).tolist() == list(range(40))  # under the cap: all of them
    assert head_targets(make_config("smoke", adaptive_head=False, corpus_vocab=True), data) is None
    assert head_targets(make_config("smoke"), data).tolist() == list(range(40))
