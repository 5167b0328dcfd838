"""Configuration of the 30-day sequence store, beside the store it configures."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DAY_MS = 86_400_000


class SequenceStoreConfig(BaseModel):
    """How much history each user keeps and where it lives in Redis."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_prefix: str = Field("riskstream:", description="Prefix of every Redis key.")
    window_days: float = Field(30.0, gt=0, description="History kept, relative to newest event.")
    max_length: int = Field(256, ge=1, le=4096, description="Events kept per user at most.")
    ttl_s: int = Field(35 * 86_400, ge=1, description="Idle users vanish after this many seconds.")
    cluster_mode: bool = Field(
        False,
        description="Redis Cluster: one script call per user (pipelined) instead of one per batch.",
    )

    @property
    def window_ms(self) -> int:
        """The window in epoch milliseconds."""
        return int(self.window_days * DAY_MS)
