"""The base of every schema read from a user's file or flags: hardware specs, deployment knobs,
plan files.

Pydantic's defaults are lenient where a user's typo should be an error: an unknown key is
dropped, NaN and infinity pass as floats, and `true` passes as the integer 1 (so
`--set max_num_seqs=true` would run one sequence a step, and `compute.units: true` one SM).
`StrictModel` refuses all three, and is immutable, so a validated spec cannot drift.
"""
from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _number_only(annotation: Any) -> bool:
    """Whether a field of this type takes numbers and nothing else (`int`, `float | None`, ...)."""
    if annotation in (int, float):
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _number_only(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return bool(options) and all(_number_only(a) for a in options)
    return False


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None \
                and _number_only(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{str(value).lower()} is not a number")
        return value
