"""The mixforge dashboard: one run directory seen as a corpus, a SQL console, clusters, scores, RegMix and
data verification.

Started by `mixforge ui DIR` (`streamlit run dashboards/app.py`), which passes the run directory
(MIXFORGE_RUN_DIR) and the optional access token (MIXFORGE_UI_TOKEN, see access.py) in the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from dashboards import clusters, regmix, runs, scores, sql, tokenizer_mixture, verify
from dashboards.access import TOKEN_ENV, authorised
from dashboards.run import reload_catalog, run_dir_from_env

PAGES = ((runs, "Runs", "runs", ":material/monitoring:"), (sql, "SQL", "sql", ":material/terminal:"),
         (clusters, "Clusters", "clusters", ":material/bubble_chart:"),
         (scores, "Scores", "scores", ":material/leaderboard:"), (regmix, "RegMix", "regmix", ":material/tune:"),
         (verify, "Verify", "verify", ":material/verified:"),
         (tokenizer_mixture, "Tokenizer", "tokenizer", ":material/bar_chart:"))


def page(module, run_dir: Path):
    """The page function Streamlit runs: `module`'s render for the run."""
    def show() -> None:
        module.render(run_dir)

    return show


def main() -> None:
    st.set_page_config(page_title="mixforge", page_icon=":material/dataset:", layout="wide")
    if not authorised(os.environ.get(TOKEN_ENV)):
        return
    run_dir = run_dir_from_env()
    if run_dir is None or not run_dir.is_dir():
        st.error(f"No run directory to show ({run_dir or 'none given'}): start the dashboard with `mixforge ui DIR`.")
        return
    with st.sidebar:
        st.caption(f"Run: `{run_dir}`")
        if st.button("Reload run", help="Look again for shards, clusters and experiments written since."):
            reload_catalog()
    navigation = st.navigation([st.Page(page(module, run_dir), title=title, url_path=path, icon=icon)
                                for module, title, path, icon in PAGES])
    navigation.run()


main()
