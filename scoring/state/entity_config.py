"""Configuration of the merchant/device profile store, beside the store it configures."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from features.entity_profile import EntityProfileConfig


class EntityStoreConfig(BaseModel):
    """Whether the worker keeps entity profiles, and how large one may grow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        True,
        description="Keep merchant/device profiles (a model trained with entity inputs "
        "needs them; kept warm even for one without, so the next model starts warm).",
    )
    card_cap: int = Field(1000, ge=1, description="Cards remembered per entity (most recent).")
    card_slack: int = Field(200, ge=1, description="Cards over the cap before a trim.")
    label_cap: int = Field(500, ge=1, description="Labels remembered per entity and class.")
    ttl_s: int = Field(35 * 86_400, ge=1, description="An entity idle this long vanishes.")

    def profile(self) -> EntityProfileConfig:
        """The bounds as the profile arithmetic takes them."""
        return EntityProfileConfig(self.card_cap, self.card_slack, self.label_cap, self.ttl_s)
