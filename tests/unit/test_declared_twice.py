"""What is declared twice stays the same twice: the client's models mirror the API's response schemas
(catdog/client.py may not import the web stack, so it keeps its own copies), and CATDOG_RUNTIME's
choices in Settings (a Literal, for the settings error message) are the runtimes module's."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

import app.schemas as api
from app.settings import Settings
from catdog import client
from catdog.runtimes import runtime_choices


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
