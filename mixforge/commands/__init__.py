"""CLI command groups. Each module defines `register(app: typer.Typer)`; `mixforge.cli` loads them all."""
