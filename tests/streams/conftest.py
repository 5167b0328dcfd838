"""Fixtures for worker-level tests: a fresh set of topics, Redis prefix and group per test."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.worker_helpers import WorkerEnv


@pytest.fixture
def wenv(stack, tmp_path: Path) -> WorkerEnv:
    env = WorkerEnv(stack, tmp_path, f"w{uuid.uuid4().hex[:8]}")
    stack.create_topics(list(env.topics.values()), partitions=2)
    return env
