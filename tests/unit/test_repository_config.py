"""serving.json and the repository layout: pure functions, no model, no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.repository_config import (
    MAX_CONFIG_BYTES,
    ServingConfig,
    ServingConfigError,
    parse_serving_config,
)
from catdog.repository import (
    complete_versions,
    discard,
    next_version,
    publish,
    staging_folder,
    version_folders,
    version_of,
)


def config(document: dict[str, object]) -> ServingConfig:
    return parse_serving_config(json.dumps(document))


def test_the_default_policy_serves_the_latest_version() -> None:
    default = ServingConfig()
    assert default.wanted([1, 3, 2]) == {3}
    assert default.default_target([1, 3, 2]) == 3
    assert default.default_target([]) is None


@pytest.mark.parametrize(
    ("policy", "wanted"),
    [
        ({"latest": {"num_versions": 2}}, {3, 2}),
        ({"latest": {}}, {3}),
        ({"all": {}}, {1, 2, 3}),
        ({"specific": {"versions": [1, 7]}}, {1}),  # 7 is not there: not wanted
    ],
)
def test_policies_pick_as_tf_serving_does(policy: dict[str, object], wanted: set[int]) -> None:
    assert config({"version_policy": policy}).wanted([1, 2, 3]) == wanted


def test_the_default_and_labelled_versions_are_loaded_outside_the_policy() -> None:
    chosen = config({"default_version": 1, "labels": {"stable": 2, "canary": 9}})
    assert chosen.wanted([1, 2, 3]) == {3, 1, 2}  # latest 3, default 1, stable 2; canary 9 is absent
    assert chosen.default_target([1, 2, 3]) == 1
    # The default unset: the highest version the policy picks, not the highest present.
    specific = config({"version_policy": {"specific": {"versions": [1, 2]}}})
    assert specific.default_target([1, 2, 3]) == 2


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ({"version_policy": {"latest": {}, "all": {}}}, "exactly one"),
        ({"version_policy": {}}, "exactly one"),
        ({"version_policy": {"latest": {"num_versions": 0}}}, "num_versions"),
        ({"version_policy": {"specific": {"versions": [0]}}}, "positive"),
        ({"default_version": 0}, "default_version"),
        ({"labels": {"2": 1}}, "label '2'"),  # all digits would read as a version number
        ({"labels": {"stable": 0}}, "positive"),
        ({"defualt_version": 2}, "defualt_version"),  # a typo is an error, not a silent default
    ],
)
def test_bad_documents_are_refused_with_the_field_named(document: dict[str, object], complaint: str) -> None:
    with pytest.raises(ServingConfigError, match=complaint):
        config(document)


def test_not_json_and_oversized_documents_are_refused() -> None:
    with pytest.raises(ServingConfigError, match="not JSON"):
        parse_serving_config("{default_version: 2")
    with pytest.raises(ServingConfigError, match="bytes"):
        parse_serving_config(" " * (MAX_CONFIG_BYTES + 1))


def test_version_folders_are_positive_integers_in_one_spelling() -> None:
    assert [version_of(name) for name in ("1", "42", "007", "0", "-1", "1.0", "stable", ".staging-1")] == [
        1, 42, None, None, None, None, None, None,
    ]  # fmt: skip


def export(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    (folder / "metadata.json").write_text("{}")
    return folder


def test_only_complete_integer_folders_are_versions(tmp_path: Path) -> None:
    export(tmp_path / "1")
    export(tmp_path / "3")
    (tmp_path / "4").mkdir()  # being copied: no saved_model.pb yet
    export(tmp_path / ".staging-99" / "5")
    export(tmp_path / "best")
    (tmp_path / "serving.json").write_text("{}")
    assert list(version_folders(tmp_path)) == [1, 3, 4]
    assert list(complete_versions(tmp_path)) == [1, 3]
    assert next_version(tmp_path) == 5  # never 4: its folder is there
    assert next_version(tmp_path / "missing") == 1


def test_a_version_is_published_in_one_rename(tmp_path: Path) -> None:
    staging = staging_folder(tmp_path, 1)
    export(staging)
    assert complete_versions(tmp_path) == {}  # a poller does not see it while it is written
    assert publish(staging, tmp_path, 1) == tmp_path / "1"
    assert list(complete_versions(tmp_path)) == [1]
    assert [path.name for path in tmp_path.iterdir()] == ["1"]  # the hidden folder went with it

    again = staging_folder(tmp_path, 1)
    export(again)
    with pytest.raises(FileExistsError):
        publish(again, tmp_path, 1)  # another writer took the number: nothing is overwritten
    assert again.exists()
    discard(again)
    assert [path.name for path in tmp_path.iterdir()] == ["1"]
