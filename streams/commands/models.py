"""``riskstream models``: the model registry and the roles the workers follow.

Each command is one short file operation on the registry folder (``model.registry``,
default ``<data_dir>/registry``); running workers pick a change up within
``model.watch_interval_s`` (docs/deploy.md, "Rolling out a model").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from scoring.model_registry import ModelRegistry, RolePointer

models_app = typer.Typer(
    help="Model registry: register versions, then shadow, canary, promote, rollback.",
    no_args_is_help=True,
)

REGISTRY = typer.Option(
    None,
    "--registry",
    help="Registry folder (default: RISKSTREAM_MODEL__REGISTRY or DATA_DIR/registry).",
)
REASON = typer.Option("", "--reason", help="Why (recorded in the registry's history).")


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to the CLI."""
    app.add_typer(models_app, name="models")


def _registry(path: Path | None) -> ModelRegistry:
    if path is not None:
        return ModelRegistry(path)
    from streams.settings import load_settings

    return ModelRegistry(load_settings().registry_dir)


def _version_or_off(version: str | None, off: bool) -> None:
    """Exactly one of a VERSION (set the role) and ``--off`` (clear it)."""
    if (version is None) == (not off):
        raise typer.BadParameter("give a VERSION or --off", param_hint="VERSION")


def _roles_line(p: RolePointer) -> str:
    canary = f"{p.canary} ({p.canary_percent:g} %)" if p.canary else "-"
    return (
        f"generation {p.generation}: primary {p.primary or '-'}, canary {canary}, "
        f"shadow {p.shadow or '-'}"
    )


def _pr_auc(metrics: dict[str, Any]) -> str:
    test = metrics.get("test", {})
    part = test.get("served") or test.get("transformer_lstm") or {}
    value = part.get("pr_auc")
    return "-" if value is None else f"{value:.3f}"


@models_app.command("list")
def list_cmd(registry: Path | None = REGISTRY) -> None:
    """Registered versions with their test PR-AUC and role."""
    reg = _registry(registry)
    pointer = reg.pointer() or RolePointer()
    versions = reg.versions()
    if not versions:
        typer.echo(f"no versions registered in {reg.root}")
        return
    typer.echo(f"{'version':<32} {'registered':<24} {'test PR-AUC':>11}  role")
    for r in versions:
        role = pointer.role_of(r.version) or ("previous" if r.version in pointer.past else "")
        typer.echo(f"{r.version:<32} {r.registered_at[:23]:<24} {_pr_auc(r.metrics):>11}  {role}")
    typer.echo(_roles_line(pointer))


@models_app.command("show")
def show_cmd(
    version: str | None = typer.Argument(None, help="A version; none = the roles in force."),
    registry: Path | None = REGISTRY,
) -> None:
    """One version (registration, metrics, load failures), or the roles and their history."""
    reg = _registry(registry)
    if version is None:
        pointer = reg.pointer()
        typer.echo(_roles_line(pointer) if pointer else f"no roles yet in {reg.root}")
        for entry in reg.history()[-10:]:
            typer.echo(
                f"  {entry['changed_at']}  gen {entry['generation']}  {entry['reason']}"
                f"  ({entry['changed_by']})"
            )
        for worker, lines in reg.applied().items():
            last = lines[-1]
            typer.echo(f"worker {worker}: generation {last['generation']} since {last['at']}")
        return
    r = reg.get(version)
    pointer = reg.pointer() or RolePointer()
    out = {
        "version": r.version,
        "role": pointer.role_of(r.version),
        "registered_at": r.registered_at,
        "source": r.source,
        "data_fingerprint": r.data_fingerprint,
        "fingerprint_from": r.fingerprint_from,
        "metrics": r.metrics,
        "load_failures": reg.failures(version),
    }
    typer.echo(json.dumps(out, indent=2))


@models_app.command("register")
def register_cmd(
    artifact: Path = typer.Argument(..., help="An artifact folder (from `riskstream train`)."),
    data: list[Path] = typer.Option(
        [], "--data", "-d", help="Its training file(s), to fingerprint the data."
    ),
    registry: Path | None = REGISTRY,
) -> None:
    """Copy a verified artifact into the registry under its model version."""
    r = _registry(registry).register(artifact, data)
    typer.echo(f"registered {r.version} (data {r.data_fingerprint[:12]}…, {r.fingerprint_from})")


@models_app.command("promote")
def promote_cmd(
    version: str = typer.Argument(...), registry: Path | None = REGISTRY, reason: str = REASON
) -> None:
    """Make VERSION the primary (the previous one is kept for rollback)."""
    typer.echo(_roles_line(_registry(registry).promote(version, reason=reason)))


@models_app.command("shadow")
def shadow_cmd(
    version: str | None = typer.Argument(None, help="The version to shadow."),
    off: bool = typer.Option(False, "--off", help="Remove the shadow."),
    registry: Path | None = REGISTRY,
    reason: str = REASON,
) -> None:
    """Score every event with VERSION as well, published in `scores` only."""
    _version_or_off(version, off)
    typer.echo(_roles_line(_registry(registry).set_shadow(version, reason=reason)))


@models_app.command("canary")
def canary_cmd(
    version: str | None = typer.Argument(None, help="The version to canary."),
    percent: float = typer.Option(10.0, "--percent", help="Share of card holders (0-50]."),
    off: bool = typer.Option(False, "--off", help="Remove the canary."),
    registry: Path | None = REGISTRY,
    reason: str = REASON,
) -> None:
    """Let VERSION decide for a stable share of card holders."""
    _version_or_off(version, off)
    typer.echo(_roles_line(_registry(registry).set_canary(version, percent, reason=reason)))


@models_app.command("rollback")
def rollback_cmd(registry: Path | None = REGISTRY, reason: str = REASON) -> None:
    """Drop the canary, or (with none) bring the previous primary back."""
    typer.echo(_roles_line(_registry(registry).rollback(reason=reason)))
