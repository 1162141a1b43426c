"""The measured columns of a result row, one record each: where the number comes from, its header, which
way is better, how seeds are aggregated. The result rows (results.RESULT_COLUMNS), the pipeline that fills
them, the tables and the model card read these records; adding a metric is computing it (metrics.py or a
kind's held-out metrics) and one `Column` here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    source: str                 # samples: the evaluation of a sample set (metrics.evaluate_samples); reference:
                                # held-out text's only (metrics.reference_ceiling); run: the trained run's EMA
                                # held-out metric of that name (summary.json's ema_<name>)
    label: str | None = None    # its header in tables and model cards; None: in the CSV only
    better: str = ""            # "↑" higher is better, "↓" lower, "" neither
    agg: str = "mean"           # over seeds, in the tables (pandas aggregation)
    card: bool = False          # shown in a saved model's card

    @property
    def header(self) -> str:
        return f"{self.label} {self.better}".rstrip()


# In the tables' column order; each source keeps its order in the CSV.
COLUMNS = (
    Column("gen_ppl_tok", "samples", "Gen PPL (tok)", "↓", card=True),
    Column("gen_ppl_seq", "samples", "Gen PPL (seq)", "↓"),
    Column("entropy", "samples", "Entropy", card=True),
    Column("entropy_content", "samples"),
    Column("rep_4", "samples", "Rep-4", card=True),
    Column("distinct_4", "samples"),
    Column("mauve", "samples", "MAUVE", "↑", card=True),
    Column("recon_acc", "run", "Recon. acc.", "↑", card=True),
    Column("valid_loss", "run", "Held-out loss", "↓"),
    Column("n_empty", "samples", "Empty"),
    Column("sample_len_tokens", "samples"),
    Column("metrics_version", "samples"),
    Column("mauve_train", "reference"),
)


def names(*sources: str) -> list[str]:
    """The columns of these sources, in order."""
    return [c.name for c in COLUMNS if c.source in sources]


def run_columns(summary: dict) -> dict:
    """A trained run's columns of a result row: each run column whose EMA held-out metric its summary has
    (LDLM: recon_acc; the baselines: valid_loss)."""
    return {c.name: summary[f"ema_{c.name}"] for c in COLUMNS if c.source == "run" and f"ema_{c.name}" in summary}


def table_headers() -> dict[str, str]:
    """{column: header} of every column a table shows, in order."""
    return {c.name: c.header for c in COLUMNS if c.label}
