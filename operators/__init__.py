"""Operators: callables over Arrow batches (a batch of rows in, a batch out, plus stats)."""
