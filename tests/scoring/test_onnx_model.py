"""The packaged default artifact loads, is checked, warms up and scores safely."""

from __future__ import annotations

import numpy as np

from features.entity_profile import N_ENTITY
from features.featurize import N_NUMERIC, FeatureBatch
from features.match_aggregates import MATCH_AGGREGATES
from scoring.artifact import load_artifact
from scoring.metrics import NONFINITE_FALLBACKS
from scoring.onnx_model import OnnxRiskModel


def _batch(b: int, t: int) -> FeatureBatch:
    rng = np.random.default_rng(0)
    hist_len = np.arange(b) % (t + 1)
    return FeatureBatch(
        hist_num=rng.normal(size=(b, t, N_NUMERIC)).astype(np.float32),
        hist_mcc=np.ones((b, t), np.int64),
        hist_channel=np.ones((b, t), np.int64),
        hist_pad=np.arange(t)[None, :] >= hist_len[:, None],
        hist_len=hist_len,
        cur_num=rng.normal(size=(b, N_NUMERIC)).astype(np.float32),
        cur_mcc=np.ones(b, np.int64),
        cur_channel=np.ones(b, np.int64),
        cur_raw=np.zeros((b, N_NUMERIC), np.float32),
        cur_entity=rng.normal(size=(b, N_ENTITY)).astype(np.float32),
        cur_entity_raw=np.zeros((b, N_ENTITY), np.float32),
        aggregates=np.zeros((b, len(MATCH_AGGREGATES))),  # the packaged tree reads them
    )


def test_default_artifact_loads_and_scores_new_and_old_users() -> None:
    model = OnnxRiskModel(load_artifact()).load()
    assert model.ready
    assert model.providers()[-1] == "CPUExecutionProvider"
    p = model.score(_batch(9, 16))
    assert p.shape == (9,) and np.all((p >= 0) & (p <= 1))
    # cached embedding path gives the same scores as the full path
    emb = model.encode(_batch(9, 16))
    np.testing.assert_allclose(model.score(_batch(9, 16), embedding=emb), p, atol=1e-7)


def test_a_model_with_entity_inputs_uses_them_and_refuses_to_go_without() -> None:
    import dataclasses

    import pytest

    from scoring.errors import ModelLoadError

    model = OnnxRiskModel(load_artifact()).load()
    assert model.artifact.spec.entity  # the packaged model is trained with them
    batch = _batch(9, 16)
    other = dataclasses.replace(batch, cur_entity=batch.cur_entity * 0)  # type: ignore[operator]
    assert not np.allclose(model.score(batch), model.score(other))
    with pytest.raises(ModelLoadError, match="needs entity inputs"):
        model.score(dataclasses.replace(batch, cur_entity=None))


def test_non_finite_outputs_become_the_fallback_and_are_counted() -> None:
    model = OnnxRiskModel(load_artifact()).load()
    before = NONFINITE_FALLBACKS._value.get()
    batch = _batch(4, 16)
    emb = model.encode(batch)
    emb[2] = np.nan
    p = model.score(batch, embedding=emb)
    assert p[2] == model.config.fallback_score
    assert np.isfinite(p).all()
    assert NONFINITE_FALLBACKS._value.get() == before + 1


def test_io_binding_path_equals_plain_run() -> None:
    from scoring.onnx_model import OnnxModelConfig

    plain = OnnxRiskModel(load_artifact()).load()
    bound = OnnxRiskModel(load_artifact(), OnnxModelConfig(io_binding="always")).load()
    batch = _batch(7, 32)
    np.testing.assert_allclose(bound.encode(batch), plain.encode(batch), atol=1e-6)
    np.testing.assert_allclose(bound.score(batch), plain.score(batch), atol=1e-6)
