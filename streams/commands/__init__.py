"""CLI commands beyond ``config``/``stack``, one module each, registered in one place."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every command module's commands to ``app``."""
    from streams.commands import data, loadtest, model, models, run

    data.register(app)
    model.register(app)
    models.register(app)
    run.register(app)
    loadtest.register(app)
