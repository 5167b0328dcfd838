"""The console API's request bodies, parsed by pydantic (never by hand)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError


class LoginBody(BaseModel):
    """``{"analyst": name, "password": token}``; the name rules are ``auth.clean_name``'s."""

    model_config = ConfigDict(extra="ignore")

    analyst: Any = None
    password: Any = None


class DecisionBody(BaseModel):
    """``{"alert_id": ..., "label": "fraud" | "legit"}``."""

    model_config = ConfigDict(extra="ignore")

    alert_id: StrictStr
    label: Literal["fraud", "legit"]


def parse(model: type[BaseModel], value: Any) -> Any:
    """``model`` from a decoded JSON value, or None when it does not fit."""
    try:
        return model.model_validate(value)
    except ValidationError:
        return None
