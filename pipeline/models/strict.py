"""The one strict base of the project's frozen data models: unknown fields are errors, and values never change."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of models that read files or carry results: a typo in a key fails loudly, and a built value stays put."""

    model_config = ConfigDict(extra="forbid", frozen=True)
