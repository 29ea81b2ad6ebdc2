"""The access token: with one set, a session sees nothing of the run until it gives the token, in the
form or once as `?token=...` in the address (then dropped from the address bar and the history)."""

from __future__ import annotations

import hmac

import streamlit as st

TOKEN_ENV = "MIXFORGE_UI_TOKEN"


def authorised(token: str | None) -> bool:
    """True when no token is required or this session has given it; otherwise show the token form."""
    if not token or st.session_state.get("authorised"):
        return True
    given = st.query_params.get("token")
    if given is not None and hmac.compare_digest(given.encode(), token.encode()):
        st.session_state["authorised"] = True
        del st.query_params["token"]
        return True
    st.title("mixforge")
    with st.form("access"):
        entered = st.text_input("Access token", type="password", help="The --token given to `mixforge ui`.")
        submitted = st.form_submit_button("Open")
    if submitted:
        if hmac.compare_digest(entered.encode(), token.encode()):
            st.session_state["authorised"] = True
            st.rerun()
        st.error("That token is not the one this dashboard was started with.")
    return False
