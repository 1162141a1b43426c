import math

import pytest
import torch

from ldlm.nets.categorical import sample_categorical, sample_inverse_cdf
from ldlm.nets.ar import GPT, ar_loss, ar_sample, top_p_filter
from ldlm.nets.mdlm import EPS, MDLM, log_linear_alpha, mask_tokens, mdlm_loss, mdlm_sample
from ldlm.nets.size import ar_layers_for, backbone_parameters
from ldlm.nets.layers import DiT, Stack

torch.set_num_threads(1)

V, T, W, L, H = 50, 16, 32, 2, 2


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fixed_batch(b: int = 8) -> torch.Tensor:
    tokens = torch.randint(0, V, (b, T), generator=gen(0))
    tokens[:, 0] = torch.arange(b)  # distinct first tokens: every next token is determined by its prefix
    return tokens


def mdlm(seed: int = 0) -> MDLM:
    torch.manual_seed(seed)
    return MDLM(V, T, Stack(W, L, H)).eval()


def gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(V, T, W, L, H).eval()


# ---------------------------------------------------------------------------------------------- MDLM


def test_log_linear_schedule():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(log_linear_alpha(t), torch.tensor([1.0, 1 - 0.5 * (1 - EPS), EPS], dtype=torch.float64))


def test_mask_fraction_matches_schedule():
    tokens = torch.randint(0, V, (512, 64), generator=gen(1))
    u = torch.rand(tokens.shape, generator=gen(2))
    for t in (1.0, 0.5, 0.02):
        x_t, masked = mask_tokens(tokens, torch.full((512,), t), u, V)
        assert (x_t[masked] == V).all() and (x_t[~masked] == tokens[~masked]).all()
        assert abs(masked.float().mean().item() - (1 - log_linear_alpha(torch.tensor(t)).item())) < 0.01


def test_mdlm_shapes_and_no_mask_class():
    model = mdlm()
    x = torch.randint(0, V + 1, (3, T))
    assert model(x, torch.rand(3)).shape == (3, T, V)  # logits over the real classes only


def test_mdlm_loss_pure_and_weighted():
    """Zero-init head: CE = log V at every masked token, so loss = masked fraction * log V / t exactly."""
    model, tokens = mdlm(), torch.randint(0, V, (64, T), generator=gen(3))
    u = torch.rand(tokens.shape, generator=gen(4))
    for t_val in (1.0, 0.3, 0.01):
        t = torch.full((64,), t_val)
        loss, per_sample = mdlm_loss(model, tokens, t, u)
        assert torch.equal(loss, mdlm_loss(model, tokens, t, u)[0])  # pure: same inputs, same loss
        masked = mask_tokens(tokens, t, u, V)[1]
        assert loss.item() == pytest.approx(masked.float().mean().item() * math.log(V) / t_val, rel=1e-5)
        assert per_sample.shape == (64,) and not per_sample.requires_grad
        assert per_sample.mean().item() == pytest.approx(loss.item(), rel=1e-5)
    # in expectation over the mask the weight 1/t makes the loss ~ (1 - eps) log V at any t
    tokens = torch.randint(0, V, (512, T), generator=gen(3))
    u = torch.rand(tokens.shape, generator=gen(4))
    loss = mdlm_loss(model, tokens, torch.full((512,), 0.3), u)[0]
    assert loss.item() == pytest.approx((1 - EPS) * math.log(V), rel=0.1)


def test_mdlm_loss_valid_mask():
    model, tokens = mdlm(), torch.randint(0, V, (4, T), generator=gen(5))
    t, u = torch.ones(4), torch.zeros(4, T)  # everything masked
    valid = torch.ones(4, T, dtype=torch.bool)
    valid[:, T // 2:] = False
    loss, per_sample = mdlm_loss(model, tokens, t, u, valid)
    assert loss.item() == pytest.approx(math.log(V), rel=1e-5)  # weight 1 at t = 1; mean over valid tokens only
    assert torch.allclose(per_sample, torch.full((4,), math.log(V)))


def test_mdlm_overfits_one_batch():
    model, tokens = mdlm().train(), fixed_batch()
    g = gen(6)
    # fixed evaluation noise: 16 copies of the batch on a stratified time grid
    ev_tokens = tokens.repeat(16, 1)
    ev_t = ((torch.arange(len(ev_tokens)) + 0.5) / len(ev_tokens))
    ev_u = torch.rand(ev_tokens.shape, generator=gen(7))
    start = mdlm_loss(model, ev_tokens, ev_t, ev_u)[0].item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = tokens.repeat(4, 1)
    for _ in range(250):
        t = EPS + (1 - EPS) * torch.rand(len(batch), generator=g)
        loss = mdlm_loss(model, batch, t, torch.rand(batch.shape, generator=g))[0]
        opt.zero_grad(), loss.backward(), opt.step()
    end = mdlm_loss(model, ev_tokens, ev_t, ev_u)[0].item()
    assert end < 0.3 * start, (start, end)


def test_mdlm_ignores_time_without_time_conditioning():
    x, t0, t1 = torch.randint(0, V + 1, (3, T), generator=gen(20)), torch.full((3,), 0.1), torch.full((3,), 0.9)
    for conditioned in (False, True):
        torch.manual_seed(0)
        model = MDLM(V, T, Stack(W, L, H), time_conditioning=conditioned).eval()
        with torch.no_grad():  # non-zero adaLN and head, so that t would show if it were used
            for p in model.parameters():
                p.normal_(std=0.3)
        assert torch.equal(model(x, t0), model(x, t1)) != conditioned


def mdlm_baseline(batch_size: int):
    from ldlm.kinds.baselines import MaskedDiffusion
    from ldlm.config import make_config

    torch.manual_seed(0)
    return MaskedDiffusion(make_config("smoke", model="mdlm", batch_size=batch_size), V).eval()


def test_mdlm_antithetic_t_has_one_sample_per_stratum():
    from ldlm.nets.noise import SampleNoise

    B, t_min = 8, 1e-3
    model = mdlm_baseline(B)
    assert model.cfg.t_min == t_min
    t = model.times(SampleNoise(0, 5, range(B)))
    strata = ((t.double() - t_min) / (1 - t_min) * B).floor()
    assert torch.equal(strata, torch.arange(B, dtype=torch.float64))  # position i in [i/B, (i+1)/B)
    t_next = model.times(SampleNoise(0, 6, range(B)))
    assert not torch.equal(t, t_next)  # a fresh draw within each stratum every step


def test_mdlm_loss_of_a_sample_does_not_depend_on_the_batch_split():
    """Antithetic t and masks keyed by global position: 2 processes (or micro-batches) see 1 process's noise."""
    from ldlm.nets.noise import SampleNoise

    B = 8
    model, tokens = mdlm_baseline(B), torch.randint(0, V, (B, T), generator=gen(22))
    valid = torch.ones(B, T, dtype=torch.bool)
    t, (_, per_sample) = model.times(SampleNoise(0, 5, range(B))), model.token_loss(tokens, valid, SampleNoise(0, 5, range(B)))
    splits = (slice(0, 3), slice(3, 8))
    assert torch.equal(t, torch.cat([model.times(SampleNoise(0, 5, range(B)[s])) for s in splits]))
    parts = [model.token_loss(tokens[s], valid[s], SampleNoise(0, 5, range(B)[s]))[1] for s in splits]
    assert torch.allclose(per_sample, torch.cat(parts), atol=1e-6)


@pytest.mark.parametrize("steps", [1, 3, 16])
def test_mdlm_sampler_unmasks_everything(steps):
    model, calls = mdlm(), []
    model.blocks[0].register_forward_hook(lambda *_: calls.append(1))
    x = mdlm_sample(model, 4, T, steps, gen(8))
    assert x.shape == (4, T) and x.dtype == torch.long
    assert (x != model.mask_id).all() and (x >= 0).all() and (x < V).all()
    assert 1 <= len(calls) <= steps  # NFE <= steps


def full_head_mdlm_sample(model: MDLM, n: int, steps: int, generator: torch.Generator, temperature: float = 1.0) -> torch.Tensor:
    """The kit's sampler without its shortcuts: p_theta at every position at every step, the same draws
    in the same order (not the reference's code, which draws differently); classes from p_theta^(1/T)."""
    ts = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    x = torch.full((n, T), model.mask_id, dtype=torch.long)
    for k in range(steps):
        a_t, a_s = log_linear_alpha(ts[k]), log_linear_alpha(ts[k + 1])
        logits = model(x, ts[k].float().expand(n))
        u = torch.rand((n, T), generator=generator, dtype=torch.float64)
        unmask = (x == model.mask_id) & (u < (a_s - a_t) / (1 - a_t))
        if temperature == 0:
            x[unmask] = logits[unmask].argmax(-1)
        else:
            x[unmask] = sample_categorical((logits[unmask].double() / temperature).softmax(-1), generator)
    return x


@pytest.mark.parametrize("n,steps,temperature", [(4, 8, 1.0), (1, 100, 1.0), (4, 8, 0.6), (4, 8, 0.0)])
def test_mdlm_sampler_draws_what_its_full_head_version_draws(n, steps, temperature):
    """Heads only at unmasking positions, no call on steps where nothing unmasks: the same tokens as the
    kit's own sampler with the full head at every step, at any temperature (0: the argmax class)."""
    model, calls = mdlm(), []
    with torch.no_grad():
        model.out.weight.normal_(std=0.5)
    model.blocks[0].register_forward_hook(lambda *_: calls.append(1))
    fast = mdlm_sample(model, n, T, steps, gen(12), temperature=temperature)
    nfe = len(calls)
    assert torch.equal(fast, full_head_mdlm_sample(model, n, steps, gen(12), temperature))
    if steps > T:  # one sequence of T tokens over 100 steps: most steps unmask nothing
        assert nfe <= T < steps


def test_mdlm_sampler_deterministic():
    model = mdlm()
    with torch.no_grad():  # a non-uniform model, so that different seeds differ in classes, not only order
        model.out.weight.normal_(std=0.5)
    a, b = mdlm_sample(model, 4, T, 8, gen(9)), mdlm_sample(model, 4, T, 8, gen(9))
    assert torch.equal(a, b)
    assert not torch.equal(a, mdlm_sample(model, 4, T, 8, gen(10)))


def test_mdlm_sampler_carries_unmasked_tokens():
    model, history = mdlm(), []
    mdlm_sample(model, 4, T, 5, gen(11), callback=lambda k, x: history.append(x.clone()))
    for before, after in zip(history, history[1:]):
        kept = before != model.mask_id
        assert torch.equal(after[kept], before[kept])


# ----------------------------------------------------------------------------------------------- AR


def test_sample_categorical_matches_probs():
    probs = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64).expand(20_000, 3)
    counts = torch.bincount(sample_categorical(probs, gen(12)), minlength=3).double() / 20_000
    assert torch.allclose(counts, probs[0], atol=0.015)


def test_sample_inverse_cdf_matches_probs_and_never_draws_an_impossible_class():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3, 0.0], dtype=torch.float64).expand(20_000, 5)
    drawn = sample_inverse_cdf(probs, gen(12))
    counts = torch.bincount(drawn, minlength=5).double() / 20_000
    assert torch.allclose(counts, probs[0], atol=0.015) and counts[1] == counts[4] == 0
    assert torch.equal(drawn, sample_inverse_cdf(probs, gen(12)))


def test_gpt_is_causal():
    model, x = gpt(), torch.randint(0, V, (2, T), generator=gen(13))
    y = x.clone()
    y[:, 10:] = (y[:, 10:] + 1) % V
    assert torch.allclose(model(x)[:, :10], model(y)[:, :10], atol=1e-6)


def test_kv_cache_matches_full_forward():
    model, x = gpt(), torch.randint(0, V, (3, T), generator=gen(14))
    full = model(x)
    for chunks in ([1] * T, [5, 1, 3, 7]):  # one token at a time; a prefix, then chunks after a cache
        cache, outs, i = model.new_cache(), [], 0
        for c in chunks:
            outs.append(model(x[:, i:i + c], cache))
            i += c
        assert cache.pos == T
        assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)


def test_ar_loss_pure_and_valid():
    model, tokens = gpt(), torch.randint(0, V, (4, T), generator=gen(15))
    loss, per_sample = ar_loss(model, tokens)
    assert torch.equal(loss, ar_loss(model, tokens)[0])
    assert loss.item() == pytest.approx(math.log(V), rel=0.1)  # small init: near uniform
    assert per_sample.shape == (4,) and not per_sample.requires_grad
    valid = torch.ones(4, T, dtype=torch.bool)
    valid[:, 6:] = False
    loss_v = ar_loss(model, tokens, valid)[0]
    logits = model(tokens[:, :5])
    expect = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:6].flatten())
    assert loss_v.item() == pytest.approx(expect.item(), rel=1e-5)


def test_gpt_overfits_one_batch():
    model, tokens = gpt().train(), fixed_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = ar_loss(model, tokens)[0]
        opt.zero_grad(), loss.backward(), opt.step()
    model.eval()
    accuracy = (model(tokens[:, :-1]).argmax(-1) == tokens[:, 1:]).float().mean().item()
    assert accuracy > 0.95, accuracy


def test_ar_sampler_deterministic():
    model = gpt()
    a = ar_sample(model, 4, T, gen(16), bos_id=0)
    assert a.shape == (4, T) and (a[:, 0] == 0).all()
    assert torch.equal(a, ar_sample(model, 4, T, gen(16), bos_id=0))
    assert not torch.equal(a, ar_sample(model, 4, T, gen(17), bos_id=0))


def test_tiny_top_p_is_greedy():
    model = gpt()
    with torch.no_grad():
        model.embed.weight.normal_(std=0.5)  # peaked, tie-free logits
    x = ar_sample(model, 3, T, gen(18), bos_id=1, top_p=1e-9)
    greedy = torch.full((3, 1), 1)
    for _ in range(T - 1):  # full forward, no cache
        greedy = torch.cat([greedy, model(greedy)[:, -1:].argmax(-1)], 1)
    assert torch.equal(x, greedy)


def test_temperature_zero_is_greedy_decoding():
    model = gpt()
    with torch.no_grad():
        model.embed.weight.normal_(std=0.5)
    assert torch.equal(ar_sample(model, 3, T, gen(18), bos_id=1, temperature=0.0),
                       ar_sample(model, 3, T, gen(18), bos_id=1, top_p=1e-9))  # the argmax at every step


def sample_entropy(ids: torch.Tensor) -> float:
    from ldlm.evaluation.metrics import unigram_entropy

    return unigram_entropy(ids.tolist())


@pytest.mark.parametrize("kind", ["gpt", "mdlm"])
def test_a_higher_temperature_raises_the_entropy_of_samples(kind):
    """A random model with peaked distributions, a fixed seed: T = 0.3 < 1 < 3 in unigram entropy (the
    frontier's knob moves diversity the way its name says, for both baselines)."""
    model = gpt() if kind == "gpt" else mdlm()
    with torch.no_grad():
        (model.embed.weight if kind == "gpt" else model.out.weight).normal_(std=0.5)
    draw = {"gpt": lambda t: ar_sample(model, 32, T, gen(21), bos_id=1, temperature=t),
            "mdlm": lambda t: mdlm_sample(model, 32, T, 8, gen(21), temperature=t)}[kind]
    entropies = [sample_entropy(draw(t)) for t in (0.3, 1.0, 3.0)]
    assert entropies == sorted(entropies) and entropies[0] < entropies[-1] - 0.3, entropies


@pytest.mark.parametrize("sampler", ["gpt", "mdlm"])
def test_a_negative_temperature_is_refused(sampler):
    with pytest.raises(ValueError, match="temperature=-1"):
        if sampler == "gpt":
            ar_sample(gpt(), 1, T, gen(0), bos_id=0, temperature=-1)
        else:
            mdlm_sample(mdlm(), 1, T, 2, gen(0), temperature=-1)


def test_top_p_filter():
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    assert torch.allclose(top_p_filter(p, 0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(top_p_filter(p, 1.0), p)


# ------------------------------------------------------------------------------------------- size


@pytest.mark.parametrize("width, layers, heads", [(128, 4, 4), (768, 12, 12)])  # tiny, owt presets
def test_backbones_match_dit(width, layers, heads):
    with torch.device("meta"):
        target = backbone_parameters(DiT(384, 64, Stack(width, layers, heads)).blocks)
        n_mdlm = backbone_parameters(MDLM(30_000, 64, Stack(width, layers, heads)))
        n_gpt = backbone_parameters(GPT(30_000, 64, width, ar_layers_for(layers, width, heads), heads))
    assert ar_layers_for(layers, width, heads) == round(1.5 * layers)
    for n in (n_mdlm, n_gpt):
        assert abs(n / target - 1) <= 0.10, (n, target)


# --- the baselines as runs of the kit: same training loop, checkpoints and sampling command ----------

@pytest.mark.parametrize("kind", ["mdlm", "ar"])
def test_baseline_trains_checkpoints_and_samples_through_the_kit(kind, tmp_path):
    from ldlm.config import make_config
    from ldlm.io import read_jsonl
    from ldlm.kinds.build import load_run
    from ldlm.sampling.rows import SeededBatches, sample_ids
    from ldlm.trained.sample import main as sample_main
    from ldlm.training.train import train

    cfg = make_config("smoke", model=kind, max_steps=40, eval_every=40)
    summary = train(cfg, tmp_path / "run", progress=False)
    logged = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert logged[-1] < logged[0]  # it learns
    assert summary["ema_valid_loss"] > 0 and summary["ema_valid_tokens"] > 0
    model, loaded = load_run(tmp_path / "run")
    assert loaded.model == kind
    a, b = (sample_ids(model, loaded, SeededBatches(4, seed=1, batch_size=2), dict(steps=3)) for _ in range(2))
    assert torch.equal(a, b) and a.shape == (4, loaded.seq_len)
    assert ((a >= 0) | (a == -1)).all()  # tokenizer ids (or "other"), never the MASK class
    assert sample_main(["--run", str(tmp_path / "run"), "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.jsonl"),
                        "--top-p", "0.9"]) == 0
    rows = read_jsonl(tmp_path / "s.jsonl")
    assert len(rows) == 2 and all(isinstance(r["text"], str) for r in rows)
    assert rows[0]["sampler"] == ("ancestral" if kind == "mdlm" else "nucleus")
    # what ran: fp32 compute on the CPU, float64 categorical draws; the raw row and its documents are kept
    assert all(r["dtype"] == "float32" and r["draw_dtype"] == "float64" for r in rows)
    assert all(len(r["raw_ids"]) == loaded.seq_len and r["text"] == "\n\n".join(r["docs"]) for r in rows)
