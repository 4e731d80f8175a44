"""The unit tier builds no model and starts no server: the shared fixtures that do (tests/conftest.py) fail
here with what to do instead."""

from __future__ import annotations

from typing import NoReturn

import pytest


def _refused(fixture: str) -> NoReturn:
    pytest.fail(
        f"{fixture}: unit tests build no model and start no server; move the test to tests/service/",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def tiny_model_dir() -> NoReturn:
    _refused("tiny_model_dir")


@pytest.fixture(scope="session")
def tiny_pet_model_dir() -> NoReturn:
    _refused("tiny_pet_model_dir")


@pytest.fixture(scope="session")
def default_server() -> NoReturn:
    _refused("default_server")


@pytest.fixture(scope="session")
def non_pet_set() -> NoReturn:
    _refused("non_pet_set (fetched from PyPI and Debian)")
