"""Errors a user of the training CLI can cause and fix; the CLI prints them as one line, exit code 2."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class: a problem with the inputs (data, flags, weights), not a bug in the code."""


class DatasetError(TrainingError):
    """The data directory is missing or holds no usable cat/dog images."""


class ConfigError(TrainingError):
    """An unknown architecture/preset or an impossible combination of flags."""


class WeightsUnavailableError(TrainingError):
    """ImageNet weights for a transfer backbone could not be found or downloaded."""
