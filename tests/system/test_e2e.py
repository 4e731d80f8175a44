"""End to end: `python -m app serve` in its own process, the committed default model, real photos."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from catdog.client import Client
from catdog.contract import ModelMetadata
from tests.conftest import DATA_DIR, REPO_ROOT
from tests.servers import free_port, wait_ready

DEFAULT_MODEL = REPO_ROOT / "model" / "default"
PHOTOS_PER_CLASS = 25


def validation_photos(per_class: int) -> list[tuple[Path, str]]:
    photos = []
    for folder, label in (("cats", "cat"), ("dogs", "dog")):
        paths = sorted((DATA_DIR / "validation" / folder).glob("*.jpg"))
        assert paths, f"no validation photos in {DATA_DIR / 'validation' / folder}"
        step = max(1, len(paths) // per_class)
        photos += [(path, label) for path in paths[::step][:per_class]]
    return photos


# TensorFlow's C++ runtime writes a few lines at import straight to stderr (absl format), and TF 2.21
# ignores TF_CPP_MIN_LOG_LEVEL for them; everything written through Python logging must be JSON.
NATIVE_TF_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|WARNING: All log messages before absl"
    r"|To enable the following instructions)"
)


def check_structured_logs(output: str) -> None:
    entries = [
        json.loads(line) for line in output.splitlines() if line.strip() and not NATIVE_TF_LINE.match(line)
    ]
    access = [entry for entry in entries if entry.get("logger") == "catdog.access"]
    assert access, "no access log lines"
    assert all(entry["request_id"] and entry["status"] and entry["method"] for entry in access)
    ready = [entry for entry in entries if entry.get("message") == "ready"]
    assert ready and ready[0].get("model_version"), "no 'ready' line naming the model"
    assert "pet_threshold" in ready[0], "the ready line says which pet threshold is in force"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", ready[0].get("url", "")), "the ready line says where"


@pytest.fixture(scope="module")
def served_default_model() -> Iterator[str]:
    assert (DEFAULT_MODEL / "saved_model.pb").is_file(), "model/default is missing: it ships with the repo"
    port = free_port()
    env = {**os.environ, "CATDOG_PORT": str(port), "CATDOG_MODEL_DIR": str(DEFAULT_MODEL)}
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--no-auto-train"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, timeout=120)
        yield base_url
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=60)
        check_structured_logs(output)


def test_real_photos_are_classified_well(served_default_model: str) -> None:
    photos = validation_photos(PHOTOS_PER_CLASS)
    with Client(served_default_model, timeout=60) as client:
        # CATDOG_RUNTIME=auto: the committed derived model (no int8 model passes its gate: docs/runtimes.md)
        assert client.ready().runtime == "litert-fp32"
        correct = sum(client.predict(path).label == label for path, label in photos)
    accuracy = correct / len(photos)
    # The committed model measures 0.996 on the whole validation set (README); one miss in 50 is noise,
    # a broken pipeline (wrong scaling, channel order, resize) loses far more.
    assert accuracy >= 0.96, f"accuracy {accuracy:.2f} on {len(photos)} real validation photos"


def test_batch_endpoint_matches_single_predictions(served_default_model: str) -> None:
    photos = [path for path, _ in validation_photos(4)]
    with Client(served_default_model, timeout=60) as client:
        batch = client.predict_batch(photos).predictions
        singles = [client.predict(path.read_bytes()) for path in photos]
    assert [item.filename for item in batch] == [path.name for path in photos]
    for item, single in zip(batch, singles, strict=True):
        assert item.label == single.label
        assert item.probabilities["dog"] == pytest.approx(single.probabilities["dog"], abs=1e-4)


def test_metadata_describes_the_served_model(served_default_model: str) -> None:
    with Client(served_default_model) as client:
        metadata = client.metadata()
    serving = metadata.pop("serving")
    assert serving["runtime"] == "litert-fp32" and serving["version"] == "1"
    assert metadata.pop("repository")["default_version"] == "1"
    on_disk = json.loads((DEFAULT_MODEL / "metadata.json").read_text())
    # The validated document: everything on disk, plus the schema's defaults for what it omits.
    assert metadata == ModelMetadata.model_validate(on_disk).model_dump(mode="json")
    assert {key: metadata[key] for key in on_disk} == on_disk
    assert metadata["class_names"] == ["cat", "dog"]


def test_default_model_says_whether_a_photo_shows_a_pet(served_default_model: str) -> None:
    """Real photos: validation cats and dogs are pets; scikit-image's and scikit-learn's are not
    (except scikit-image's cat, chelsea)."""
    import io

    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    client = Client(served_default_model, timeout=60)
    assert "pet_score" in client.metadata()["outputs"], "the committed default model has a pet score"

    def png(pixels: object) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")  # type: ignore[arg-type]
        return buffer.getvalue()

    non_pets = {name: png(getattr(skimage.data, name)()) for name in ("astronaut", "coffee", "rocket")}
    non_pets.update({f"sklearn-{i}": png(image) for i, image in enumerate(load_sample_images().images)})
    pets = {path.name: path.read_bytes() for path, _ in validation_photos(3)}
    pets["chelsea"] = png(skimage.data.chelsea())
    with client:
        for name, data in {**non_pets, **pets}.items():
            answer = client.predict(data, filename=name)
            assert answer.is_cat_or_dog is (name not in non_pets), (name, answer.pet_score)
            assert answer.label in {"cat", "dog"}  # the cat/dog answer is still given


def test_the_readme_shows_what_the_service_answers(served_default_model: str) -> None:
    """The README's example answer and the runtimes table in docs/runtimes.md are what
    `python -m benchmarks.answers --write` made from this model: rerun it after changing the model."""
    from benchmarks.answers import EXAMPLE, runtimes_block
    from catdog.contract import read_metadata

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    example = re.search(r"<!-- answers:example -->\n```json\n(.*?)\n```", readme, re.DOTALL)
    assert example, "README.md has no example answer block"
    files = {"file": (EXAMPLE.name, EXAMPLE.read_bytes(), "image/jpeg")}
    answer = httpx.post(f"{served_default_model}/predict", files=files, timeout=60).json()
    shown = json.loads(example.group(1))
    assert shown == {key: value for key, value in answer.items() if key in shown}
    assert shown.keys() >= {"label", "probabilities", "pet_score", "is_cat_or_dog", "model_version"}
    runtimes = (REPO_ROOT / "docs" / "runtimes.md").read_text(encoding="utf-8")
    assert runtimes_block(read_metadata(DEFAULT_MODEL)) in runtimes, "rerun benchmarks.answers --write"
