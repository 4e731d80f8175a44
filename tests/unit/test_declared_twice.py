"""What is declared twice stays the same twice: the client's models mirror the API's response schemas
(catdog/client.py may not import the web stack, so it keeps its own copies), and CATDOG_RUNTIME's
choices in Settings (a Literal, for the settings error message) are the runtimes module's, and
CATDOG_RUNTIME_THREADS means the same to Settings and to catdog.runtimes (which training uses)."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

import app.schemas as api
from app.settings import Settings
from catdog import client
from catdog.runtimes import THREADS_ENV, RuntimeUnavailableError, runtime_choices, runtime_thread_count


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        (client.Timing, api.Timing),
        (client.Prediction, api.Prediction),
        (client.PredictionResult, api.PredictionResponse),
        (client.BatchItem, api.BatchItem),
        (client.BatchResult, api.BatchPredictionResponse),
        (client.Readiness, api.Readiness),
    ],
)
def test_client_models_have_the_fields_of_the_api_schemas(
    mine: type[BaseModel], theirs: type[BaseModel]
) -> None:
    assert set(mine.model_fields) == set(theirs.model_fields)


def test_settings_accept_exactly_the_runtime_choices() -> None:
    accepted = typing.get_args(Settings.model_fields["runtime"].annotation)
    assert sorted(accepted) == sorted(runtime_choices())


@pytest.mark.parametrize("value", ["3", "0", "-1", "two", ""])
def test_runtime_threads_read_the_same_by_settings_and_the_runtimes(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert f"{Settings.model_config['env_prefix']}RUNTIME_THREADS" == THREADS_ENV
    monkeypatch.setenv(THREADS_ENV, value)
    try:
        from_settings: int | None = Settings().runtime_threads
    except ValueError:  # pydantic's ValidationError
        from_settings = -1
    try:
        count = runtime_thread_count()
        from_runtimes: int | None = count.count if count.source == THREADS_ENV else None
    except RuntimeUnavailableError:
        from_runtimes = -1
    assert from_settings == from_runtimes
