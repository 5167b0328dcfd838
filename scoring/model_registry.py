"""The model registry: a folder of hash-checked versions and a pointer naming their roles.

Layout (docs/deploy.md, "Rolling out a model")::

    <registry>/versions/<id>/artifact/           the artifact as trained (model.json + files)
    <registry>/versions/<id>/registration.json   when, from where, metrics, data fingerprint
    <registry>/versions/<id>/load-failures.jsonl workers that could not load it, and why
    <registry>/pointer.json                      roles in force (primary, canary, shadow)
    <registry>/history.jsonl                     every pointer ever written, oldest first
    <registry>/workers/<worker>.jsonl            each generation a worker applied, and when

The pointer is one small JSON file replaced atomically (temp file, ``os.replace``), with
a generation number that grows by one per change; workers poll it (cheap: one ``stat``
per interval) and apply a new generation between batches. A file rather than a Redis
key: it lives beside the artifacts it names (one volume to back up or mount read-only),
needs no broker to roll back, and a ``cat`` shows what is in force. Writers take an
exclusive ``flock`` on ``<registry>/.lock`` for the read-modify-write, so two operators
(or a worker's automatic rollback and an operator) cannot interleave.

Plain file I/O: no ONNX Runtime here (``scoring.artifact`` verifies hashes only).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.errors import RiskstreamError
from scoring.artifact import ArtifactError, ModelArtifact, load_artifact, sha256_file

POINTER_FILE = "pointer.json"
HISTORY_FILE = "history.jsonl"
REGISTRATION_FILE = "registration.json"
FAILURES_FILE = "load-failures.jsonl"
_VERSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_PAST_KEPT = 20  # earlier primaries remembered for rollback


class RegistryError(RiskstreamError):
    """A registry operation that cannot be done as asked (the message says why)."""

    http_status = 400


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class RolePointer:
    """The roles in force. ``past``: earlier primaries, most recent last (rollback)."""

    generation: int = 0
    primary: str | None = None
    canary: str | None = None
    canary_percent: float = 0.0
    shadow: str | None = None
    past: tuple[str, ...] = ()
    changed_at: str = ""
    changed_by: str = ""
    reason: str = ""

    @property
    def canary_bps(self) -> int:
        return round(self.canary_percent * 100) if self.canary else 0

    def role_of(self, version: str) -> str | None:
        for role in ("primary", "canary", "shadow"):
            if getattr(self, role) == version:
                return role
        return None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "past": list(self.past)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolePointer:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "past": tuple(known.get("past", ()))})


@dataclass(frozen=True)
class Registration:
    """One registered version: what was recorded when it was registered."""

    version: str
    registered_at: str
    source: str
    data_fingerprint: str
    fingerprint_from: str  # "manifest", "files" (hashed at register) or "declared"
    metrics: dict[str, Any] = field(default_factory=dict)


def data_fingerprint(files: Sequence[Path]) -> str:
    """sha256 over the training files' names and contents, in name order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()


def _declared_fingerprint(artifact: ModelArtifact) -> str:
    """What an artifact that recorded no content hash says about its data: the file
    names, the event count and the split (weaker: names, not bytes)."""
    training = artifact.manifest.get("training", {})
    seen = {k: training.get(k) for k in ("files", "events", "split")}
    return hashlib.sha256(json.dumps(seen, sort_keys=True).encode()).hexdigest()


class ModelRegistry:
    """A registry folder; every method is one short file operation (no I/O in __init__)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ---- versions -------------------------------------------------------------------

    def version_dir(self, version: str) -> Path:
        return self.root / "versions" / version

    def artifact_path(self, version: str) -> Path:
        """The folder a worker loads ``version`` from (it must be registered)."""
        self.get(version)
        return self.version_dir(version) / "artifact"

    def register(self, source: Path, data_files: Sequence[Path] = ()) -> Registration:
        """Copy a verified artifact in under its model version; the same artifact again
        is a no-op, a different one under a registered version is refused."""
        try:
            artifact = load_artifact(source)
        except ArtifactError as exc:
            raise RegistryError(f"cannot register {source}: {exc.one_line()}") from None
        version = artifact.version
        if not _VERSION_ID.match(version):
            raise RegistryError(
                f"model version {version!r} is not a usable id (letters, digits, . _ -)"
            )
        for f in data_files:
            if not f.is_file():
                raise RegistryError(f"--data {f}: no such file")
        target = self.version_dir(version)
        if target.exists():
            existing = self.get(version)
            theirs = load_artifact(target / "artifact").manifest.get("files")
            if theirs != artifact.manifest.get("files"):
                raise RegistryError(
                    f"version {version} is already registered with different files; "
                    "a retrained model gets a new version id"
                )
            return existing
        recorded = artifact.manifest.get("training", {}).get("data_fingerprint")
        if data_files:
            fingerprint, source_of = data_fingerprint(data_files), "files"
            if recorded and recorded != fingerprint:
                raise RegistryError(
                    f"--data does not match the data {version} was trained on "
                    f"(fingerprint {fingerprint[:12]}…, the artifact says {recorded[:12]}…)"
                )
        elif recorded:
            fingerprint, source_of = str(recorded), "manifest"
        else:
            fingerprint, source_of = _declared_fingerprint(artifact), "declared"
        reg = Registration(
            version=version,
            registered_at=_now(),
            source=str(Path(source).resolve()),
            data_fingerprint=fingerprint,
            fingerprint_from=source_of,
            metrics=artifact.manifest.get("metrics", {}),
        )
        (self.root / "versions").mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root / "versions"))
        try:
            shutil.copytree(artifact.path, staging / "artifact")
            load_artifact(staging / "artifact")  # the copy verifies too
            (staging / REGISTRATION_FILE).write_text(json.dumps(asdict(reg), indent=2) + "\n")
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return reg

    def get(self, version: str) -> Registration:
        path = self.version_dir(version) / REGISTRATION_FILE
        if not _VERSION_ID.match(version) or not path.exists():
            raise RegistryError(
                f"no version {version!r} in the registry {self.root} "
                "(`riskstream models list` shows what is registered)"
            )
        return Registration(**json.loads(path.read_text()))

    def versions(self) -> list[Registration]:
        """Every registered version, oldest registration first."""
        folder = self.root / "versions"
        if not folder.is_dir():
            return []
        found = [
            self.get(p.name)
            for p in folder.iterdir()
            if p.is_dir() and (p / REGISTRATION_FILE).exists()
        ]
        return sorted(found, key=lambda r: r.registered_at)

    # ---- load failures (written by workers) -----------------------------------------

    def record_failure(self, version: str, worker: str, reason: str) -> None:
        """Append a worker's failure to load ``version`` (best effort: a read-only
        registry mount still has the log line and the metric)."""
        line = json.dumps({"at": _now(), "worker": worker, "reason": reason})
        folder = self.version_dir(version)
        if folder.is_dir():
            with (folder / FAILURES_FILE).open("a") as fh:
                fh.write(line + "\n")

    def failures(self, version: str) -> list[dict[str, Any]]:
        path = self.version_dir(version) / FAILURES_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # ---- what workers applied (written by workers) -----------------------------------

    def record_applied(self, worker: str, roles: dict[str, Any]) -> None:
        """Append that ``worker`` now serves ``roles`` (best effort, like failures)."""
        folder = self.root / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", worker)
        with (folder / f"{name}.jsonl").open("a") as fh:
            fh.write(json.dumps({"at": _now(), "worker": worker, **roles}) + "\n")

    def applied(self) -> dict[str, list[dict[str, Any]]]:
        """Per worker, every generation it applied, oldest first."""
        folder = self.root / "workers"
        if not folder.is_dir():
            return {}
        out = {}
        for path in sorted(folder.glob("*.jsonl")):
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            if lines:
                out[lines[-1]["worker"]] = lines
        return out

    # ---- roles ----------------------------------------------------------------------

    @property
    def pointer_path(self) -> Path:
        return self.root / POINTER_FILE

    def pointer(self) -> RolePointer | None:
        """The roles in force, or None when nothing was ever promoted."""
        try:
            text = self.pointer_path.read_text()
        except FileNotFoundError:
            return None
        try:
            return RolePointer.from_json(json.loads(text))
        except (json.JSONDecodeError, TypeError) as exc:
            raise RegistryError(f"{self.pointer_path}: unreadable ({exc})") from None

    def history(self) -> list[dict[str, Any]]:
        path = self.root / HISTORY_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def promote(self, version: str, by: str = "cli", reason: str = "") -> RolePointer:
        """``version`` decides for every card holder; the previous primary is kept for
        rollback. A version leaves its canary or shadow role when promoted."""
        self.get(version)

        def change(cur: RolePointer) -> RolePointer:
            if cur.primary == version:
                raise RegistryError(f"{version} is already the primary")
            past = (*cur.past, cur.primary) if cur.primary else cur.past
            was_canary = cur.canary == version
            return replace(
                cur,
                primary=version,
                past=past[-_PAST_KEPT:],
                canary=None if was_canary else cur.canary,
                canary_percent=0.0 if was_canary else cur.canary_percent,
                shadow=None if cur.shadow == version else cur.shadow,
                changed_by=by,
                reason=reason or f"promote {version}",
            )

        return self._update(change)

    def set_shadow(self, version: str | None, by: str = "cli", reason: str = "") -> RolePointer:
        """``version`` scores every event in the shadow (None: no shadow)."""
        if version is not None:
            self.get(version)

        def change(cur: RolePointer) -> RolePointer:
            self._needs_primary(cur)
            if version is not None and version in (cur.primary, cur.canary):
                raise RegistryError(f"{version} is the {cur.role_of(version)}; one role each")
            return replace(cur, shadow=version, changed_by=by, reason=reason or f"shadow {version}")

        return self._update(change)

    def set_canary(
        self, version: str | None, percent: float = 10.0, by: str = "cli", reason: str = ""
    ) -> RolePointer:
        """``version`` decides for ``percent`` % of card holders (None: no canary). It
        leaves the shadow role if it had it."""
        if version is not None:
            self.get(version)
            if not 0 < percent <= 50:
                raise RegistryError(
                    f"--percent {percent:g}: a canary takes more than 0 and at most 50 % "
                    "of card holders (promote it to serve everyone)"
                )

        def change(cur: RolePointer) -> RolePointer:
            self._needs_primary(cur)
            if version is not None and version == cur.primary:
                raise RegistryError(f"{version} is the primary already")
            label = f"canary {version} at {percent:g} %" if version else "no canary"
            return replace(
                cur,
                canary=version,
                canary_percent=percent if version else 0.0,
                shadow=None if version is not None and cur.shadow == version else cur.shadow,
                changed_by=by,
                reason=reason or label,
            )

        return self._update(change)

    def rollback(
        self, by: str = "cli", reason: str = "", generation: int | None = None
    ) -> RolePointer:
        """Undo the last roll-out step: drop the canary if there is one, else bring the
        previous primary back. ``generation``: only if the roles are still that one
        (an automatic rollback must not undo an operator's later change)."""
        if self.pointer() is None:
            raise RegistryError(f"nothing to roll back to: no roles yet in {self.root}")

        def change(cur: RolePointer) -> RolePointer:
            if generation is not None and cur.generation != generation:
                raise RegistryError(
                    f"the roles moved on (generation {cur.generation}, not {generation})"
                )
            if cur.canary is not None:
                return replace(
                    cur,
                    canary=None,
                    canary_percent=0.0,
                    changed_by=by,
                    reason=reason or f"rollback: canary {cur.canary} removed",
                )
            if not cur.past:
                raise RegistryError("nothing to roll back to: no canary and no earlier primary")
            back = cur.past[-1]
            return replace(
                cur,
                primary=back,
                past=cur.past[:-1],
                shadow=None if cur.shadow == back else cur.shadow,
                changed_by=by,
                reason=reason or f"rollback: {cur.primary} -> {back}",
            )

        return self._update(change)

    @staticmethod
    def _needs_primary(cur: RolePointer) -> None:
        if cur.primary is None:
            raise RegistryError("no primary yet: `riskstream models promote VERSION` first")

    def _update(self, change: Callable[[RolePointer], RolePointer]) -> RolePointer:
        """Locked read-modify-write: the next generation, written atomically, logged."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            cur = self.pointer() or RolePointer()
            new = replace(change(cur), generation=cur.generation + 1, changed_at=_now())
            body = json.dumps(new.to_json(), indent=2, sort_keys=True) + "\n"
            fd, tmp = tempfile.mkstemp(prefix=".pointer-", dir=self.root)
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.pointer_path)
            with (self.root / HISTORY_FILE).open("a") as fh:
                fh.write(json.dumps(new.to_json(), sort_keys=True) + "\n")
            return new

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
