"""`serving.json`: which versions of a repository serve, which one answers unpinned requests, and labels.

    {"version_policy": {"latest": {"num_versions": 2}},
     "default_version": 2,
     "labels": {"stable": 2, "canary": 3}}

`version_policy`: `{"latest": {"num_versions": N}}` (default N = 1), `{"all": {}}` or
`{"specific": {"versions": [1, 3]}}`. `default_version` (optional): else the highest version the policy
picks. `labels` (optional): names clients may pin instead of numbers.

The policy spellings are TensorFlow Serving's `model_version_policy`, so its users read them as they are.
A version is loaded when the policy picks it, when it is the default or when a label names it; everything
here is a pure function of the file and the version folders present, so it is tested without a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Not all digits, so `?version=` tells a label from a version number.
LABEL_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
# A serving.json bigger than this is not a configuration: refuse it before parsing.
MAX_CONFIG_BYTES = 64 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Latest(_Strict):
    num_versions: int = Field(default=1, ge=1, le=1000)


class All(_Strict):
    pass


class Specific(_Strict):
    versions: list[int] = Field(min_length=1, max_length=1000)

    @field_validator("versions")
    @classmethod
    def _positive(cls, versions: list[int]) -> list[int]:
        if any(version < 1 for version in versions):
            raise ValueError("versions are positive integers")
        return versions


class VersionPolicy(_Strict):
    """Exactly one of `latest`, `all`, `specific`."""

    latest: Latest | None = None
    all: All | None = None
    specific: Specific | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        chosen = [name for name in ("latest", "all", "specific") if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"give exactly one of latest, all, specific (got {chosen or 'none'})")
        return self

    def picks(self, present: Iterable[int]) -> set[int]:
        versions = sorted(present, reverse=True)
        if self.latest is not None:
            return set(versions[: self.latest.num_versions])
        if self.specific is not None:
            return set(versions) & set(self.specific.versions)
        return set(versions)


class ServingConfig(_Strict):
    version_policy: VersionPolicy = VersionPolicy(latest=Latest())
    default_version: int | None = Field(default=None, ge=1)
    labels: dict[str, int] = Field(default_factory=dict, max_length=100)

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, int]) -> dict[str, int]:

        for name, version in labels.items():
            if not re.fullmatch(LABEL_PATTERN, name):
                raise ValueError(f"label {name!r}: a letter or _ first, then letters, digits, _ or -")
            if version < 1:
                raise ValueError(f"label {name!r}: versions are positive integers")
        return labels

    def wanted(self, present: Iterable[int]) -> set[int]:
        """The versions to keep loaded: the policy's, the default and every labelled one, if present."""
        present = set(present)
        pinned = {version for version in (self.default_version, *self.labels.values()) if version is not None}
        return self.version_policy.picks(present) | (pinned & present)

    def default_target(self, present: Iterable[int]) -> int | None:
        """The version that should answer unpinned requests: `default_version`, else the policy's highest."""
        if self.default_version is not None:
            return self.default_version
        return max(self.version_policy.picks(present), default=None)


class ServingConfigError(ValueError):
    """serving.json cannot be used; the message says why, in one line."""


def parse_serving_config(text: str | bytes) -> ServingConfig:
    if len(text) > MAX_CONFIG_BYTES:
        raise ServingConfigError(f"over {MAX_CONFIG_BYTES} bytes")
    try:
        document: Any = json.loads(text)
    except ValueError as exc:
        raise ServingConfigError(f"not JSON: {exc}") from None
    try:
        return ServingConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'document'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ServingConfigError(problems) from None
