"""The sentences under a notebook's table (ldlm.evaluation.reading): written from the numbers, so they follow them."""
import json

import pandas as pd

from ldlm.evaluation.reading import ablation_reading, main_reading, sample_texts
from ldlm.evaluation.results import MAUVE_FLOOR


def main_rows(ldlm_ppl=400.0, mauve=0.004, ldlm_entropy=3.5) -> pd.DataFrame:
    base = dict(preset="smoke", dataset="wiki", seed=0, top_p=1.0)
    return pd.DataFrame([
        dict(base, model="reference", variant="reference", steps=0, gen_ppl_tok=50.0, entropy=3.9, rep_4=0.0, mauve=0.9,
             run_id="reference-wiki"),
        dict(base, model="ldlm", variant="full", steps=10, temperature=0.0, gen_ppl_tok=900.0, entropy=3.4, rep_4=0.0,
             mauve=mauve, run_id="l"),
        dict(base, model="ldlm", variant="full", steps=100, temperature=0.0, gen_ppl_tok=ldlm_ppl, entropy=ldlm_entropy,
             rep_4=0.0, mauve=mauve, run_id="l"),
        dict(base, model="ar", variant="full", steps=63, top_p=1.0, temperature=1.0, gen_ppl_tok=200.0, entropy=3.8,
             rep_4=0.0, mauve=mauve, run_id="a")])


def test_the_main_reading_follows_the_numbers():
    text = main_reading(main_rows())
    assert "Held-out text scores Gen PPL 50 at entropy 3.90" in text
    assert "LDLM (100 steps) Gen PPL 400 at entropy 3.50" in text and "the GPT (p = 1) Gen PPL 200" in text
    assert "closest to held-out text's Gen PPL is the GPT's, 4.0x it" in text
    assert "at the metric's floor" in text and "degenerate" not in text
    changed = main_reading(main_rows(ldlm_ppl=120.0, mauve=0.5, ldlm_entropy=1.0))
    assert "LDLM (100 steps) Gen PPL 120 at entropy 1.00" in changed
    assert "The samples of LDLM are degenerate" in changed  # 2.9 nats below held-out text
    assert "floor" not in changed and "MAUVE is highest" in changed and 0.5 > MAUVE_FLOOR


def test_the_ablation_reading_names_variants_beyond_the_seed_spread():
    base = dict(preset="smoke", dataset="news", model="ldlm", steps=50, rep_4=0.0, entropy=3.5)
    rows = [dict(base, variant="reference", model="reference", seed=0, gen_ppl_tok=100.0, entropy=3.8)]
    for seed, jitter in ((0, 1.0), (1, -1.0)):
        rows += [dict(base, variant="full", seed=seed, gen_ppl_tok=300 + jitter, mean_share=0.1),
                 dict(base, variant="no_mse", seed=seed, gen_ppl_tok=301 + jitter, mean_share=0.2),
                 dict(base, variant="naive", seed=seed, gen_ppl_tok=900 + jitter, mean_share=0.9, entropy=0.5)]
    text = ablation_reading(pd.DataFrame(rows), ["full", "no_mse", "naive"])
    assert "The full recipe's samples score Gen PPL 300 at entropy 3.50" in text
    assert "Beyond the seeds' spread in Gen PPL: naive joint training (900); within it: no_mse." in text
    assert "naive joint training put the largest share" in text and "(90%; the full recipe's: 10%)" in text
    assert "Degenerate samples (†, any seed): naive joint training." in text
    one_seed = ablation_reading(pd.DataFrame([r for r in rows if r["seed"] == 0]), ["full", "no_mse", "naive"])
    assert "no difference can be told from seed noise" in one_seed


def test_sample_texts_show_each_models_first_samples_at_its_default_setting(tmp_path):
    rows = main_rows()
    for rid, names in (("l", ["k10", "k100", "k100-T0.5"]), ("a", ["p0.9", "p1", "p1-T0.8"])):
        samples = {}
        for name in names:
            path = tmp_path / "samples" / f"{rid}-{name}.jsonl"
            path.parent.mkdir(exist_ok=True)
            path.write_text("".join(json.dumps({"text": f"{rid} {name} text {i}"}) + "\n" for i in range(5)))
            samples[name] = str(path)
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / f"{rid}.json").write_text(json.dumps({"samples": samples}))
    text = sample_texts(rows, tmp_path, k=2)
    assert "LDLM (l, k100):\n  - l k100 text 0\n  - l k100 text 1" in text
    assert "the GPT (a, p1):\n  - a p1 text 0\n  - a p1 text 1" in text and "text 2" not in text
