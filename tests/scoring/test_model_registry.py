"""Model registry: verified versions, the roles pointer, rollback, concurrent writers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from scoring.artifact import DEFAULT_ARTIFACT, load_artifact
from scoring.model_registry import ModelRegistry, RegistryError, data_fingerprint
from tests.model_versions import make_version

V1 = load_artifact().version


@pytest.fixture
def reg(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(DEFAULT_ARTIFACT)
    registry.register(make_version(tmp_path, "v2"))
    registry.register(make_version(tmp_path, "v3"))
    return registry


def test_register_copies_a_verified_artifact_with_its_metrics(reg: ModelRegistry) -> None:
    r = reg.get(V1)
    assert r.metrics == load_artifact().manifest["metrics"]
    recorded = load_artifact().manifest["training"]["data_fingerprint"]
    assert r.fingerprint_from == "manifest" and r.data_fingerprint == recorded
    assert load_artifact(reg.artifact_path(V1)).version == V1  # the copy verifies
    assert [v.version for v in reg.versions()] == [V1, "v2", "v3"]
    assert reg.pointer() is None  # registering assigns no role


def test_register_is_idempotent_and_refuses_a_changed_artifact(
    reg: ModelRegistry, tmp_path: Path
) -> None:
    again = reg.register(DEFAULT_ARTIFACT)
    assert again == reg.get(V1)
    other = make_version(tmp_path / "x", V1)
    (other / "fraud_cases.npz").write_bytes(b"different")
    manifest = json.loads((other / "model.json").read_text())
    from scoring.artifact import sha256_file

    manifest["files"]["fraud_cases.npz"] = sha256_file(other / "fraud_cases.npz")
    (other / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="already registered with different files"):
        reg.register(other)


def test_a_tampered_artifact_is_not_registered(tmp_path: Path) -> None:
    bad = make_version(tmp_path, "bad")
    with (bad / "head.onnx").open("ab") as fh:
        fh.write(b"\0")
    reg = ModelRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError, match=r"sha256 of head\.onnx"):
        reg.register(bad)
    assert reg.versions() == []


def _unrecorded(path: Path) -> Path:
    """The artifact at ``path`` as one that recorded no fingerprint of its data."""
    manifest = json.loads((path / "model.json").read_text())
    manifest["training"].pop("data_fingerprint", None)
    (path / "model.json").write_text(json.dumps(manifest))
    return path


def test_data_fingerprint_from_files_and_a_mismatch(tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    reg = ModelRegistry(tmp_path / "registry")
    declared = reg.register(_unrecorded(make_version(tmp_path / "d", "v8")))
    assert declared.fingerprint_from == "declared" and len(declared.data_fingerprint) == 64
    r = reg.register(_unrecorded(make_version(tmp_path, "v9")), [data])
    assert r.fingerprint_from == "files" and r.data_fingerprint == data_fingerprint([data])
    recorded = make_version(tmp_path / "r", "v10")
    manifest = json.loads((recorded / "model.json").read_text())
    manifest["training"]["data_fingerprint"] = "0" * 64
    (recorded / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="does not match the data v10 was trained on"):
        reg.register(recorded, [data])
    assert reg.register(recorded).fingerprint_from == "manifest"


def test_the_roll_out_flow_and_rollback(reg: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="no primary yet"):
        reg.set_shadow("v2")
    p = reg.promote(V1)
    assert (p.generation, p.primary, p.past) == (1, V1, ())
    p = reg.set_shadow("v2")
    assert p.shadow == "v2" and p.generation == 2
    p = reg.set_canary("v2", 10)
    assert (p.canary, p.canary_bps, p.shadow) == ("v2", 1000, None)  # one role each
    p = reg.promote("v2")
    assert (p.primary, p.canary, p.past) == ("v2", None, (V1,))
    p = reg.set_canary("v3", 5)
    p = reg.rollback()  # first the canary goes
    assert (p.primary, p.canary) == ("v2", None)
    p = reg.rollback()  # then the previous primary comes back
    assert (p.primary, p.past) == (V1, ())
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback()
    gens = [h["generation"] for h in reg.history()]
    assert gens == list(range(1, p.generation + 1))


def test_bad_requests_are_one_clear_line(reg: ModelRegistry) -> None:
    reg.promote(V1)
    with pytest.raises(RegistryError, match="no version 'v7'"):
        reg.promote("v7")
    with pytest.raises(RegistryError, match="already the primary"):
        reg.promote(V1)
    with pytest.raises(RegistryError, match="at most 50 %"):
        reg.set_canary("v2", 80)
    with pytest.raises(RegistryError, match="is the primary"):
        reg.set_shadow(V1)
    with pytest.raises(RegistryError, match="roles moved on"):
        reg.rollback(generation=0)


def test_concurrent_writers_never_lose_a_change(reg: ModelRegistry) -> None:
    reg.promote(V1)
    errors: list[BaseException] = []

    def flip(n: int) -> None:
        try:
            for _ in range(n):
                reg.set_shadow("v2")
                reg.set_shadow(None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=flip, args=(10,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    p = reg.pointer()
    assert p is not None and p.generation == 1 + 4 * 10 * 2
    assert [h["generation"] for h in reg.history()] == list(range(1, p.generation + 1))


def test_load_failures_are_recorded_per_version(reg: ModelRegistry) -> None:
    reg.record_failure("v2", "host:1", "sha256 of head.onnx is …")
    (failure,) = reg.failures("v2")
    assert failure["worker"] == "host:1" and "head.onnx" in failure["reason"]
    assert reg.failures("v3") == []
