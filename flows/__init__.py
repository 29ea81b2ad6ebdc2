"""Prefect flows: thin recipes that compose operators into stages run on Ray."""
