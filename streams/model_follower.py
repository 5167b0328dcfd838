"""The worker follows the model registry without a restart.

Every ``interval_s`` the follower reads the registry's pointer (one small file); a new
generation is applied by loading and warming each version it names that this worker
does not hold yet, in a thread (never on the event loop), then swapping the engine's
roles in one assignment between batches: a batch in flight finishes on the roles it
started with. A version that fails to load (bad hash, incompatible spec, missing files)
leaves that role as it was; the failure is logged, counted in
``riskstream_model_load_failures_total`` and appended to the version's
``load-failures.jsonl`` (what ``riskstream models show`` prints). The generation is then
marked applied so a broken version is not reloaded every tick; a later pointer change
is tried afresh.

Versions that leave every role stay loaded for a while (``keep_warm``), so a rollback
swaps back at once, with the embedding cache it had. When the canary guard is on, the
follower also judges the canary after each tick and rolls it back in the registry
(``scoring.canary_guard``), then applies that at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from features.errors import RiskstreamError
from scoring.bundle import ModelBundle
from scoring.canary_guard import canary_verdict
from scoring.engine import ScoringEngine
from scoring.model_registry import ModelRegistry, RegistryError, RolePointer
from scoring.model_roles import CANARY, PRIMARY, SHADOW, ServingModel, ServingRoles
from streams.metrics import (
    CANARY_ROLLBACKS,
    MODEL_CANARY_SHARE,
    MODEL_GENERATION,
    MODEL_INFO,
    MODEL_LOAD_FAILURES,
    MODEL_ROLES,
    MODEL_SWAPS,
)
from streams.settings import CanaryGuardSettings

log = logging.getLogger(__name__)


def worker_name() -> str:
    """This process, as load failures and automatic rollbacks name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RegistryFollower:
    """Applies the registry's roles to one engine; ``poll`` is one tick."""

    def __init__(
        self,
        registry: ModelRegistry,
        engine: ScoringEngine,
        load: Callable[[Path], ModelBundle],
        interval_s: float = 2.0,
        guard: CanaryGuardSettings | None = None,
        keep_warm: int = 2,
    ) -> None:
        self.registry = registry
        self.engine = engine
        self._load = load  # loads, warms and restores a bundle (blocking)
        self.interval_s = interval_s
        self.guard = guard
        self.keep_warm = keep_warm
        self.applied = 0  # the pointer generation in force (0: none yet)
        self.last_error: str | None = None
        self._warm: OrderedDict[str, ServingModel] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._published: set[tuple[str, str]] = set()
        publish_roles(engine.roles, self._published)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def held(self) -> list[ServingModel]:
        """Every version this worker holds: in a role or kept warm."""
        found = {m.version: m for m in self.engine.roles.models()}
        for v, m in self._warm.items():
            found.setdefault(v, m)
        return list(found.values())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad registry never takes the worker down
                log.exception("following the model registry failed; retrying next tick")

    async def poll(self) -> bool:
        """Apply a new pointer generation if there is one; True when roles changed."""
        loop = asyncio.get_running_loop()
        try:
            ptr = await loop.run_in_executor(None, self.registry.pointer)
        except RegistryError as exc:
            self.last_error = exc.one_line()
            log.warning("model registry: %s", self.last_error)
            return False
        changed = False
        if ptr is not None and ptr.primary is not None and ptr.generation != self.applied:
            await self._apply(ptr)
            changed = True
        if ptr is not None and await self._judge_canary(ptr):
            changed = True
        return changed

    async def _apply(self, ptr: RolePointer) -> None:
        cur = self.engine.roles
        held = {m.version: m for m in self.held()}

        async def get(
            version: str | None, role: str, now: ServingModel | None
        ) -> ServingModel | None:
            if version is None:
                return None
            if version in held:
                return held[version]
            try:
                path = self.registry.artifact_path(version)
                bundle = await asyncio.get_running_loop().run_in_executor(None, self._load, path)
            except (RiskstreamError, OSError, ValueError, RuntimeError) as exc:
                self._failed(version, role, exc)
                return now  # the role keeps what it had
            model = self.engine.serving_model(bundle)
            held[version] = model
            return model

        primary = await get(ptr.primary, PRIMARY, cur.primary) or cur.primary
        canary = await get(ptr.canary, CANARY, cur.canary)
        shadow = await get(ptr.shadow, SHADOW, cur.shadow)
        if canary is not None and canary.version == primary.version:
            canary = None  # a failed promote leaves the old primary; no self-canary
        if shadow is not None and shadow.version in (
            primary.version,
            getattr(canary, "version", None),
        ):
            shadow = None
        bps = 0
        if canary is not None:  # a canary that failed to load keeps the share it had
            bps = ptr.canary_bps if canary.version == ptr.canary else cur.canary_bps
        roles = ServingRoles(primary, canary, bps, shadow, ptr.generation)
        self.engine.set_roles(roles)
        self.applied = ptr.generation
        MODEL_SWAPS.inc()
        in_role = {m.version for m in roles.models()}
        for m in cur.models():
            if m.version not in in_role:
                self._warm[m.version] = m
        for v in in_role:
            self._warm.pop(v, None)
        while len(self._warm) > self.keep_warm:
            self._warm.popitem(last=False)
        publish_roles(roles, self._published)
        try:  # so `riskstream models show` can tell which workers follow
            await asyncio.get_running_loop().run_in_executor(
                None, self.registry.record_applied, worker_name(), roles.describe()
            )
        except OSError as exc:
            log.warning("could not record the applied roles in the registry: %s", exc)
        log.warning(
            "model roles generation %d in force: primary %s, canary %s (%.1f %%), shadow %s (%s)",
            ptr.generation,
            primary.version,
            None if canary is None else canary.version,
            bps / 100,
            None if shadow is None else shadow.version,
            ptr.reason,
        )

    def _failed(self, version: str, role: str, exc: BaseException) -> None:
        reason = (
            exc.one_line() if isinstance(exc, RiskstreamError) else f"{type(exc).__name__}: {exc}"
        )
        self.last_error = f"{version}: {reason}"
        MODEL_LOAD_FAILURES.labels(version).inc()
        log.error(
            "model %s (%s) failed to load; the current one keeps serving: %s", version, role, reason
        )
        try:
            self.registry.record_failure(version, worker_name(), reason)
        except OSError as write_exc:  # a read-only registry mount: the log and metric remain
            log.warning("could not record the failure in the registry: %s", write_exc)

    async def _judge_canary(self, ptr: RolePointer) -> bool:
        roles = self.engine.roles
        g = self.guard
        if g is None or not g.enabled or roles.canary is None:
            return False
        verdict = canary_verdict(roles.counters, g.max_error_rate, g.max_alert_ratio, g.min_events)
        if verdict is None:
            return False
        CANARY_ROLLBACKS.labels(verdict.cause).inc()
        log.error("canary %s rolled back: %s", roles.canary.version, verdict.detail)
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(
                None,
                lambda: self.registry.rollback(
                    by=f"canary guard on {worker_name()}",
                    reason=f"automatic rollback of {roles.canary.version if roles.canary else ''}: "
                    f"{verdict.detail}",
                    generation=ptr.generation,
                ),
            )
        except (RegistryError, OSError) as exc:
            # another worker rolled it back first, or the registry is read-only: either
            # way this worker stops routing to the canary now
            log.warning("registry rollback not written (%s); dropping the canary here", exc)
            self.engine.set_roles(
                ServingRoles(roles.primary, None, 0, roles.shadow, roles.generation)
            )
            publish_roles(self.engine.roles, self._published)
            return True
        await self._apply(new)
        return True


def publish_roles(roles: ServingRoles, published: set[tuple[str, str]]) -> None:
    """The role gauges and the model info for ``roles`` (stale series removed)."""
    now = {
        (m.version, role)
        for role, m in ((PRIMARY, roles.primary), (CANARY, roles.canary), (SHADOW, roles.shadow))
        if m is not None
    }
    for key in published - now:
        MODEL_ROLES.remove(*key)
    for key in now:
        MODEL_ROLES.labels(*key).set(1)
    published.clear()
    published.update(now)
    MODEL_GENERATION.set(roles.generation)
    MODEL_CANARY_SHARE.set(roles.canary_bps / 10_000 if roles.canary is not None else 0)
    model = roles.primary.bundle.model
    MODEL_INFO.info({"version": model.version, "providers": ",".join(model.providers())})
