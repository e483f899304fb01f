"""The strict, frozen pydantic base every rubric model shares, with the pattern of rubric ids."""

from pydantic import BaseModel, ConfigDict

ID_PATTERN = r"^[a-z][a-z0-9_]*$"


class Strict(BaseModel):
    """Unknown keys are errors (a typo in a rubric file is reported, not ignored); loaded rubrics are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
