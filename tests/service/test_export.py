"""The SavedModel contract: raw uint8 pixels in, the Keras model's own answer out, at any input size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SIZE = 24


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import keras

    from training.export import export_saved_model

    keras.utils.set_random_seed(7)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)  # pixel scaling is part of the model
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    out = tmp_path_factory.mktemp("export") / "m"
    export_saved_model(model, out, SIZE, {"class_names": ["cat", "dog"], "version": "v", "architecture": "a"})
    return model, out


def test_uint8_at_input_size_matches_the_keras_model(exported) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    model, path = exported
    images = np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(images))
    expected = model(images.astype(np.float32), training=False).numpy()[:, 0]
    probabilities = served["probabilities"].numpy()
    np.testing.assert_allclose(probabilities[:, 1], expected, atol=1e-6)  # resize to same size is identity
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_flip_tta_answers_the_mean_of_image_and_mirror(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    from training.export import export_saved_model

    model, _ = exported
    path = export_saved_model(
        model, tmp_path / "tta", SIZE, {"class_names": ["cat", "dog"], "version": "v", "architecture": "a"},
        flip_tta=True,
    )  # fmt: skip
    images = np.random.default_rng(1).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    served = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(images))
    plain = model(images.astype(np.float32), training=False).numpy()[:, 0]
    mirrored = model(images[:, :, ::-1].astype(np.float32), training=False).numpy()[:, 0]
    assert not np.allclose(plain, mirrored, atol=1e-4)  # the model is not mirror-symmetric
    np.testing.assert_allclose(served["probabilities"].numpy()[:, 1], (plain + mirrored) / 2, atol=1e-6)
    metadata = json.loads((path / "metadata.json").read_text())
    assert "mirror" in metadata["test_time_augmentation"]


def test_other_sizes_are_resized_in_the_graph(exported) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    _, path = exported
    colour = np.array([200, 40, 90], dtype=np.uint8)
    large = np.broadcast_to(colour, (1, 300, 170, 3)).copy()
    small = np.broadcast_to(colour, (1, SIZE, SIZE, 3)).copy()
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    at_size = serve(images=tf.constant(small))["probabilities"].numpy()
    resized = serve(images=tf.constant(large))["probabilities"].numpy()
    np.testing.assert_allclose(resized, at_size, atol=1e-5)


def test_signature_rejects_non_uint8(exported) -> None:  # type: ignore[no-untyped-def]
    import tensorflow as tf

    _, path = exported
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.zeros((1, SIZE, SIZE, 3)))


def test_metadata_records_the_input_size(exported) -> None:  # type: ignore[no-untyped-def]
    _, path = exported
    metadata = json.loads((Path(path) / "metadata.json").read_text())
    assert metadata["image_size"] == SIZE
    assert metadata["class_names"] == ["cat", "dog"]
    assert metadata["test_time_augmentation"] == "none"


def test_metadata_without_required_keys_is_refused(tmp_path: Path) -> None:
    from training.export import write_metadata

    with pytest.raises(ValueError, match="class_names"):
        write_metadata(tmp_path, {"version": "v", "architecture": "a", "image_size": 8})
