"""Derived CPU runtimes: `python -m training derive` on a real SavedModel, the equivalence check on real
photos, metadata.json's `derived` list, CATDOG_RUNTIME's choice and the service answering through
each runtime like it does through TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from catdog.contract import METADATA_FILE, DerivedModel, ModelMetadata, read_metadata
from catdog.imaging import load_model_input
from catdog.probe import PROBE_COUNT, ProbeMismatchError, check_probe, probe_images
from catdog.runtimes import (
    LITERT,
    ONNXRUNTIME,
    OPENVINO,
    THREADS_ENV,
    RuntimeUnavailableError,
    choose_derived,
    runtime_installed,
    runtime_threads,
)
from catdog.saved_model import ModelLoadError, load_exported_model
from tests.conftest import DATA_DIR, DEFAULT_MODEL_DIR, TINY_IMAGE_SIZE, real_photos

DERIVED_RUNTIMES = [r for r in (ONNXRUNTIME, OPENVINO, LITERT) if runtime_installed(r)]
HAS_TF2ONNX = importlib.util.find_spec("tf2onnx") is not None


def _photo_batch(size: int, per_class: int = 3) -> tuple[np.ndarray, list[str]]:
    photos = real_photos(per_class)
    images = np.stack([load_model_input(path.read_bytes(), size, 40_000_000) for path, _ in photos])
    return images, [label for _, label in photos]


@pytest.fixture(scope="module")
def derived_dir(tiny_pet_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pet model with every derived model, checked on real photos (a few per class)."""
    if not DERIVED_RUNTIMES or not HAS_TF2ONNX:
        pytest.skip("needs catdog[derive]")
    from training.derive import derive

    model_dir = tmp_path_factory.mktemp("derived") / "tiny-pet"
    shutil.copytree(tiny_pet_model_dir, model_dir)
    derive(
        model_dir,
        DATA_DIR,
        runtimes=DERIVED_RUNTIMES,
        calibration_per_class=4,
        check_per_class=6,
        speed_rounds=1,
        speed_seconds=0.05,
    )
    return model_dir


def test_old_metadata_has_no_derived_models(tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "old"
    shutil.copytree(tiny_model_dir, model_dir)
    raw = json.loads((model_dir / METADATA_FILE).read_text())
    raw.pop("derived", None)  # written before derived runtimes existed
    (model_dir / METADATA_FILE).write_text(json.dumps(raw))
    assert read_metadata(model_dir).derived == []
    model = load_exported_model(model_dir, "auto")
    assert model.runner.runtime == "tensorflow"
    assert "no derived models" in model.runtime_reason


def test_derive_writes_checked_models_into_metadata(derived_dir: Path) -> None:
    metadata = read_metadata(derived_dir)
    keys = {entry.key for entry in metadata.derived}
    assert keys == {
        f"{runtime}-{precision}" for runtime in DERIVED_RUNTIMES for precision in ("fp32", "int8")
    }
    for entry in metadata.derived:
        assert (derived_dir / entry.file).is_file()
        assert len(entry.sha256) == 64
        figures = entry.equivalence
        assert figures["photos"] == 12  # 6 real validation photos per class
        assert figures["reference_accuracy"] == pytest.approx(figures["accuracy"], abs=0.1)
        if entry.precision == "fp32":
            assert entry.passed, entry.reason
            assert figures["max_abs_diff_probabilities"] < 1e-3
            assert figures["max_abs_diff_pet_score"] < 1e-3
        if entry.passed:
            assert entry.speedup > 0
            assert entry.speed["tensorflow"]["batch1_ms"] > 0
            assert entry.speed["batch16_images_per_s"] > 0
        else:
            assert entry.reason


@pytest.mark.parametrize("runtime", DERIVED_RUNTIMES)
def test_each_runtime_answers_like_the_saved_model_on_real_photos(derived_dir: Path, runtime: str) -> None:
    reference = load_exported_model(derived_dir, "tensorflow")
    model = load_exported_model(derived_dir, f"{runtime}-fp32")
    assert model.runner.runtime == runtime and model.runner.precision == "fp32"
    assert model.derived is not None and model.derived.passed
    images, _ = _photo_batch(TINY_IMAGE_SIZE)
    expected = reference.predict(images)
    for batch in (images[:1], images):  # batch 1 and a larger batch through the same runner
        got = model.predict(batch)
        np.testing.assert_allclose(got.probabilities, expected.probabilities[: len(batch)], atol=1e-3)
        assert got.pet_score is not None and expected.pet_score is not None
        np.testing.assert_allclose(got.pet_score, expected.pet_score[: len(batch)], atol=1e-3)


def test_derived_models_take_only_the_model_size(derived_dir: Path) -> None:
    model = load_exported_model(derived_dir, DERIVED_RUNTIMES[0])
    with pytest.raises(ValueError, match="derived models take uint8"):
        model.predict(np.zeros((1, TINY_IMAGE_SIZE + 1, TINY_IMAGE_SIZE, 3), dtype=np.uint8))


def _with_entries(source: Path, target: Path, change: Callable[[list[dict[str, Any]]], None]) -> Path:
    shutil.copytree(source, target)
    raw = json.loads((target / METADATA_FILE).read_text())
    change(raw["derived"])
    (target / METADATA_FILE).write_text(json.dumps(raw))
    return target


def test_auto_picks_the_fastest_usable_model(derived_dir: Path, tmp_path: Path) -> None:
    def rank(entries: list[dict[str, Any]]) -> None:
        for index, entry in enumerate(entries):
            entry["speedup"] = 1.5 + index
            entry["passed"] = True
        entries[-1]["passed"] = False  # the fastest failed its check: never chosen
        entries[-1]["reason"] = "test"

    model_dir = _with_entries(derived_dir, tmp_path / "m", rank)
    metadata = read_metadata(model_dir)
    best = max(metadata.derived[:-1], key=lambda e: e.speedup)
    entry, reason = choose_derived(metadata, model_dir, "auto")
    assert entry is not None and entry.key == best.key
    assert "fastest usable" in reason
    assert load_exported_model(model_dir, "auto").runner.runtime == best.runtime


def test_auto_falls_back_to_tensorflow_and_says_why(derived_dir: Path, tmp_path: Path) -> None:
    model_dir = _with_entries(derived_dir, tmp_path / "m", lambda entries: None)
    shutil.rmtree(model_dir / "derived")
    model = load_exported_model(model_dir, "auto")
    assert model.runner.runtime == "tensorflow"
    assert "is missing" in model.runtime_reason and "training derive" in model.runtime_reason
    with pytest.raises(ModelLoadError, match=r"cannot be used.*is missing"):
        load_exported_model(model_dir, DERIVED_RUNTIMES[0])


def test_auto_keeps_tensorflow_when_nothing_was_faster(derived_dir: Path, tmp_path: Path) -> None:
    def slow(entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            entry["speedup"] = 0.9

    model_dir = _with_entries(derived_dir, tmp_path / "m", slow)
    entry, reason = choose_derived(read_metadata(model_dir), model_dir, "auto")
    assert entry is None and "faster than TensorFlow" in reason


def test_a_changed_file_is_refused(derived_dir: Path, tmp_path: Path) -> None:
    runtime = DERIVED_RUNTIMES[0]

    def only(entries: list[dict[str, Any]]) -> None:
        entries[:] = [e for e in entries if e["runtime"] == runtime and e["precision"] == "fp32"]

    model_dir = _with_entries(derived_dir, tmp_path / "m", only)
    path = model_dir / read_metadata(model_dir).derived[0].file
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match="sha256 differs"):
        load_exported_model(model_dir, runtime)
    model = load_exported_model(model_dir, "auto")
    assert model.runner.runtime == "tensorflow" and "sha256 differs" in model.runtime_reason


def test_unknown_runtime_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown runtime 'tensorrt'"):
        load_exported_model(tiny_model_dir, "tensorrt")


def test_entry_for_a_missing_package_is_skipped(tmp_path: Path) -> None:
    metadata = ModelMetadata(
        version="1",
        architecture="x",
        class_names=["cat", "dog"],
        image_size=8,
        derived=[DerivedModel(runtime="tensorrt", precision="fp32", file="x", passed=True, speedup=3.0)],
    )
    entry, reason = choose_derived(metadata, tmp_path, "auto")
    assert entry is None and "unknown runtime 'tensorrt'" in reason


def test_runtime_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert runtime_threads() >= 1
    monkeypatch.setenv(THREADS_ENV, "3")
    assert runtime_threads() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(RuntimeUnavailableError, match="positive integer"):
            runtime_threads()


@pytest.mark.parametrize("runtime", DERIVED_RUNTIMES)
def test_service_answers_through_each_runtime(
    make_client: Callable[..., TestClient], derived_dir: Path, runtime: str
) -> None:
    from tests.images import BLUE, RED, solid

    answers = {}
    for name in ("tensorflow", runtime):
        client = make_client(model_dir=derived_dir, runtime=name if name == "tensorflow" else f"{name}-fp32")
        answers[name] = [
            client.post("/predict", files={"file": ("x.png", solid(color), "image/png")}).json()
            for color in (RED, BLUE)
        ]
    for via_tf, via_runtime in zip(answers["tensorflow"], answers[runtime], strict=True):
        assert via_runtime["label"] == via_tf["label"]
        assert via_runtime["probabilities"]["dog"] == pytest.approx(via_tf["probabilities"]["dog"], abs=1e-3)
        assert via_runtime["pet_score"] == pytest.approx(via_tf["pet_score"], abs=1e-3)


def test_service_refuses_to_start_with_an_unusable_runtime(tiny_model_dir: Path) -> None:
    from app.main import create_app
    from app.settings import Settings

    settings = Settings(model_dir=tiny_model_dir, auto_train=False, runtime="onnxruntime")
    with (
        pytest.raises(ModelLoadError, match="CATDOG_RUNTIME=onnxruntime cannot be used"),
        TestClient(create_app(settings)),
    ):
        pass


def test_derive_command_reports_a_missing_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "derive", "--model", str(tmp_path), "--data-dir", str(DATA_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: no exported model at")


def test_committed_model_derived_entries_hold_on_real_photos() -> None:
    """Every derived model metadata.json lists as passed and that is present here answers like the
    SavedModel on real photos: fp32 within 1e-3, int8 within what its check recorded; same labels."""
    metadata = read_metadata(DEFAULT_MODEL_DIR)
    present = [
        e
        for e in metadata.derived
        if e.passed and runtime_installed(e.runtime) and (DEFAULT_MODEL_DIR / e.file).is_file()
    ]
    if not present:
        pytest.skip("no derived model of model/default is present (python -m training derive)")
    reference = load_exported_model(DEFAULT_MODEL_DIR, "tensorflow")
    images, labels = _photo_batch(metadata.image_size, per_class=2)
    expected = reference.predict(images)
    for entry in present:
        model = load_exported_model(DEFAULT_MODEL_DIR, entry.key)
        got = model.predict(images)
        # int8: no further from the SavedModel than the derive-time check on 1000 photos recorded.
        recorded = entry.equivalence["max_abs_diff_probabilities"]
        tolerance = 1e-3 if entry.precision == "fp32" else recorded + 1e-6
        np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=tolerance)
        assert [metadata.class_names[i] for i in got.probabilities.argmax(axis=1)] == labels


def test_service_logs_the_fallback_to_tensorflow(
    make_client: Callable[..., TestClient],
    derived_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_dir = _with_entries(derived_dir, tmp_path / "m", lambda entries: None)
    shutil.rmtree(model_dir / "derived")
    with caplog.at_level("INFO", logger="catdog"):
        client = make_client(model_dir=model_dir)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["runtime"] == "tensorflow-fp32"
    loaded = next(r for r in caplog.records if r.getMessage() == "model loaded")
    assert loaded.runtime == "tensorflow"  # type: ignore[attr-defined]
    assert "is missing" in loaded.runtime_reason  # type: ignore[attr-defined]
    assert any(r.getMessage() == "CATDOG_RUNTIME=auto fell back to TensorFlow" for r in caplog.records)


def test_train_and_derive_commands_parse() -> None:
    from training.cli import build_parser

    parser = build_parser()
    train = parser.parse_args(["train", "--data-dir", "d", "--output", "o", "--derive"])
    assert train.derive is True
    derive = parser.parse_args(["derive", "--model", "m", "--data-dir", "d", "--runtimes", "litert"])
    assert (derive.runtimes, derive.precisions, derive.calibration_per_class) == ("litert", "fp32,int8", 100)


# --------------------------------------------------------------------- same numbers on every machine
def _bf16_capable() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.skipif(OPENVINO not in DERIVED_RUNTIMES, reason="needs catdog[openvino]")
def test_openvino_runs_float_layers_in_float32(derived_dir: Path) -> None:
    """On a CPU with AVX512-BF16 OpenVINO's own default is bfloat16; the runner pins float32."""
    import openvino as ov

    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    for precision in ("fp32", "int8"):
        model = load_exported_model(derived_dir, f"openvino-{precision}")
        assert model.runner.float_precision == "f32", f"plugin default here: {default}"  # type: ignore[attr-defined]


def test_every_checked_model_records_its_probe_answers(derived_dir: Path) -> None:
    metadata = read_metadata(derived_dir)
    assert metadata.probe is not None and set(metadata.probe.outputs) == {"probabilities", "pet_score"}
    for entry in metadata.derived:
        assert (entry.probe is not None) == entry.passed, entry.key
        if entry.probe is not None:
            assert len(entry.probe.outputs["probabilities"]) == PROBE_COUNT


def test_probe_images_are_the_same_everywhere() -> None:
    """Recorded answers are only comparable if every machine draws the same probe pixels."""
    import hashlib

    images = probe_images(32)
    assert images.shape == (PROBE_COUNT, 32, 32, 3) and images.dtype == np.uint8
    assert hashlib.sha256(images.tobytes()).hexdigest() == (
        "42eeee08871b0f4cb31c7bbf628f1124b151e790b093acd46b397637c27cc485"
    )


def _moved_probe(model_dir: Path, which: str) -> None:
    """Shift one recorded probe answer by 0.01, as a bfloat16 runtime would."""
    raw = json.loads((model_dir / METADATA_FILE).read_text())
    record = (
        raw["probe"]
        if which == "tensorflow"
        else next(e for e in raw["derived"] if e["runtime"] == which and e["precision"] == "fp32")["probe"]
    )
    record["outputs"]["probabilities"][0][0] += 0.01
    (model_dir / METADATA_FILE).write_text(json.dumps(raw))


def test_a_derived_model_answering_otherwise_here_is_not_served(derived_dir: Path, tmp_path: Path) -> None:
    runtime = DERIVED_RUNTIMES[0]

    def only(entries: list[dict[str, Any]]) -> None:
        entries[:] = [e for e in entries if e["runtime"] == runtime and e["precision"] == "fp32"]

    model_dir = _with_entries(derived_dir, tmp_path / "m", only)
    _moved_probe(model_dir, runtime)
    with pytest.raises(ModelLoadError, match=r"answers the probe images differently.*1\.00e-02 > 1e-03"):
        load_exported_model(model_dir, f"{runtime}-fp32")
    model = load_exported_model(model_dir, "auto")
    assert model.runner.runtime == "tensorflow" and "probe images" in model.runtime_reason


def test_a_saved_model_answering_otherwise_here_does_not_load(derived_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    shutil.copytree(derived_dir, model_dir)
    _moved_probe(model_dir, "tensorflow")
    with pytest.raises(ModelLoadError, match="the SavedModel in TensorFlow answers the probe images"):
        load_exported_model(model_dir, "tensorflow")


@pytest.mark.skipif(OPENVINO not in DERIVED_RUNTIMES, reason="needs catdog[openvino]")
def test_the_probe_catches_openvino_in_bfloat16(derived_dir: Path) -> None:
    """What the CI machine hit: OpenVINO's fp32 model run in bfloat16 fails its probe."""
    import openvino as ov

    if not _bf16_capable():
        pytest.skip("this CPU has no bfloat16 support: OpenVINO cannot run in it here")
    entry = next(e for e in read_metadata(derived_dir).derived if e.key == "openvino-fp32")
    assert entry.probe is not None
    compiled = ov.Core().compile_model(
        str(derived_dir / entry.file), "CPU", {"INFERENCE_PRECISION_HINT": "bf16"}
    )

    def bf16(images: np.ndarray) -> dict[str, np.ndarray]:
        result = compiled.create_infer_request().infer({"images": images})
        return {output.any_name: np.array(result[output]) for output in compiled.outputs}

    with pytest.raises(ProbeMismatchError, match="differently on this machine"):
        check_probe(bf16, entry.probe, TINY_IMAGE_SIZE, "openvino-fp32 in bfloat16")


# --------------------------------------------------------------- int8: the backbone, not the answer
@pytest.mark.skipif(LITERT not in DERIVED_RUNTIMES, reason="needs catdog[litert]")
def test_int8_litert_keeps_everything_from_the_pooling_on_in_float32(derived_dir: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from training.derive import head_tensors_tflite

    model = (derived_dir / "derived" / "model-int8.tflite").read_bytes()
    interpreter = Interpreter(model_content=model)
    ops = interpreter._get_ops_details()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    pool = next(op["index"] for op in ops if op["op_name"] == "MEAN")
    before = [tensors[i]["dtype"] for op in ops[:pool] for i in op["outputs"]]
    after = [(op["op_name"], tensors[i]["dtype"]) for op in ops[pool:] for i in op["outputs"]]
    assert np.int8 in before, "the part before the pooling is quantized"
    assert all(dtype == np.float32 for _, dtype in after), after
    names, _ = head_tensors_tflite(model)
    assert names, "the head's tensors are found in the float model too"


@pytest.mark.parametrize("runtime", [r for r in DERIVED_RUNTIMES if r in (LITERT, ONNXRUNTIME)])
def test_int8_answers_are_continuous(derived_dir: Path, runtime: str) -> None:
    """A quantized softmax answers on a 1/256 grid; float heads do not."""
    model = load_exported_model(derived_dir, f"{runtime}-int8") if _loads(derived_dir, runtime) else None
    if model is None:
        pytest.skip(f"{runtime}-int8 of the tiny model did not pass its gate here")
    images, _ = _photo_batch(TINY_IMAGE_SIZE, per_class=4)
    outputs = model.predict(images)
    grid = outputs.probabilities * 256
    assert np.max(np.abs(grid - np.round(grid))) > 0.01
    assert outputs.pet_score is not None and len(set(np.round(outputs.pet_score, 6))) == len(images)


def _loads(model_dir: Path, runtime: str) -> bool:
    return any(e.key == f"{runtime}-int8" and e.passed for e in read_metadata(model_dir).derived)


def test_every_derived_model_records_its_own_pet_threshold(derived_dir: Path) -> None:
    metadata = read_metadata(derived_dir)
    assert metadata.ood is not None
    for entry in metadata.derived:
        if entry.passed:
            assert entry.ood_threshold is not None and 0.0 < entry.ood_threshold < 1.0
            assert {"pet_flag_disagreements", "pets_flagged", "reference_pets_flagged"} <= set(
                entry.equivalence
            )
        if entry.precision == "fp32" and entry.passed:
            # float32 scores are the SavedModel's: the same share of the fitted photos, the same threshold.
            assert entry.ood_threshold == pytest.approx(metadata.ood.threshold, abs=1e-4)


def test_the_served_threshold_is_the_runtime_s_own(
    make_client: Callable[..., TestClient], derived_dir: Path
) -> None:
    runtime = f"{DERIVED_RUNTIMES[0]}-fp32"
    entry = next(e for e in read_metadata(derived_dir).derived if e.key == runtime)
    ready = make_client(model_dir=derived_dir, runtime=runtime).get("/readyz").json()
    assert ready["pet_threshold"] == entry.ood_threshold
    assert ready["pet_threshold_source"] == f"metadata.derived[{runtime}].ood_threshold"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"accuracy": 0.9975}, "validation accuracy 0.15 points lower"),
        ({"class_disagreements": 2}, "2 labels differ"),
        ({"log_loss": 0.0131}, "log loss 0.0011 higher"),
        ({"max_abs_diff_probabilities": 0.021}, "P(cat) moved by up to 0.021"),
        ({"pet_flag_disagreements": 2}, "2 pet flags differ"),
    ],
)
def test_the_gate_refuses_each_kind_of_drift(change: dict[str, Any], problem: str) -> None:
    from training.derive import judge

    fine = {
        "photos": 1000,
        "accuracy": 0.999,
        "reference_accuracy": 0.999,
        "log_loss": 0.0120,
        "reference_log_loss": 0.0120,
        "class_disagreements": 1,
        "max_abs_diff_probabilities": 0.019,
        "max_abs_diff_pet_score": 0.05,
        "pet_flag_disagreements": 1,
    }
    assert judge(fine, "int8", 1e-3) == (True, "")
    passed, reason = judge({**fine, **change}, "int8", 1e-3)
    assert not passed and problem in reason
    # fp32 must also be within its tolerance on every output.
    assert judge(fine, "fp32", 1e-3)[1].startswith("fp32 max abs difference")
