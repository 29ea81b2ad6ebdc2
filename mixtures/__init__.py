"""Data-mixture experiments: domains from shards, RegMix sampling, materialized token shards, proxy models,
RegMix regression and CLIMB's iterative search (see DESIGN.md section 4)."""
