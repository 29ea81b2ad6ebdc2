"""Tokenizer page: the mixtures inferred from BPE tokenizers' merge lists (`mixforge infer-mixture --output
<run>/tokenizer-mixtures/NAME.json`, mixtures/tokenizer_attack), each as a bar chart of category shares.
"""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from mixtures.tokenizer_attack import RUN_MIXTURES


def render(run_dir: Path) -> None:
    st.title("Tokenizer mixture")
    st.caption("What a BPE tokenizer's merge list says about the data it was trained on (Hayase et al. 2024): "
               "each category's byte share, inferred from samples of the categories.")
    files = sorted((run_dir / RUN_MIXTURES).glob("*.json"))
    if not files:
        st.info(f"No inferred mixture in this run yet: `mixforge infer-mixture --tokenizer T --run {run_dir} "
                f"--by lang --output {run_dir}/{RUN_MIXTURES}/NAME.json` writes one.")
        return
    path = run_dir / RUN_MIXTURES / st.selectbox("Mixture", [f.name for f in files], key="tokenizer_mixture")
    try:
        report = json.loads(path.read_text())
        shares = sorted(report["proportions"].items(), key=lambda item: -item[1])
    except (OSError, ValueError, KeyError, AttributeError) as error:
        st.error(f"{path.name} is not an infer-mixture report ({error})")
        return
    figure = go.Figure(go.Bar(x=[name for name, _ in shares], y=[share for _, share in shares],
                              text=[f"{share:.1%}" for _, share in shares], textposition="outside"))
    figure.update_layout(yaxis_title="share of training bytes", yaxis_tickformat=".0%", height=420,
                         margin={"t": 30})
    st.plotly_chart(figure)
    st.caption(f"{report.get('tokenizer')}: merges {report.get('first_merge')}..{report.get('n_merges', 0) - 1}, "
               f"slack {report.get('slack', float('nan')):.4g}, {report.get('constraints', 0):,} constraints"
               f"{'' if report.get('converged', True) else ' (not converged)'}.")
