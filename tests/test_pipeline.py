from ldlm import pipeline


def test_scores_are_reused_until_their_key_changes(tmp_path):
    cache, calls = tmp_path / "scores" / "s.json", []

    def compute():
        calls.append(1)
        return {"gen_ppl_tok": 10.0 * len(calls)}

    key = pipeline.score_key(samples_sha256="abc", judge="smollm2", seed=0)
    first = pipeline.scores(cache, key, compute)
    assert pipeline.scores(cache, key, compute) == first and len(calls) == 1
    changed = pipeline.scores(cache, dict(key, samples_sha256="abd"), compute)
    assert len(calls) == 2 and changed["gen_ppl_tok"] == 20.0
    cache.write_text("{not json")  # a damaged cache file is recomputed, not an error
    assert pipeline.scores(cache, key, compute)["gen_ppl_tok"] == 30.0


def test_score_key_names_the_metrics_version_and_libraries():
    key = pipeline.score_key(judge="smollm2")
    assert key["metrics_version"] and "torch" in key["versions"]
