"""The base of every API model (spec, status and what they hold) and the model family.

Its own module so that models the status holds (`marco_contract.memory`) can build on it
without importing the status."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

Family = Literal["encoder-decoder", "llm"]


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are refused."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_assignment=True
    )
