"""What each wire protocol costs on top of the model: the same photo sent one request at a time as
/predict (multipart, catdog.client), V2 JSON (base64 BYTES), V2 binary data, V2 UINT8 pixels (decoded
by the client beforehand), and TF Serving's `{"instances": [{"b64": ...}]}`; rounds interleaved.

    python -m benchmarks.protocols [--model-dir model/default] [--rounds 3] [--requests 20]

A benchmark, not a test: it prints the median latency per protocol and its difference from /predict.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import tritonclient.http as triton

from app.settings import Settings
from catdog.client import Client
from catdog.imaging import load_model_input

try:
    from benchmarks.common import sample_photos, start_service
except ModuleNotFoundError as error:
    raise SystemExit("run it from the repo root as: python -m benchmarks.protocols") from error


def senders(base_url: str, photo: bytes, image_size: int) -> dict[str, Callable[[], str]]:
    client = Client(base_url, retries=0)
    v2 = triton.InferenceServerClient(base_url.removeprefix("http://"))
    tf = httpx.Client(base_url=base_url, timeout=60)
    encoded = base64.b64encode(photo).decode()
    pixels = load_model_input(photo, image_size, 40_000_000)[np.newaxis]

    def bytes_input(binary: bool) -> triton.InferInput:
        tensor = triton.InferInput("image", [1], "BYTES")
        data = photo if binary else encoded
        tensor.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=binary)
        return tensor

    def v2_label(inputs: list[triton.InferInput], binary: bool) -> str:
        output = [triton.InferRequestedOutput("label", binary_data=binary)]
        value = v2.infer("catdog", inputs, outputs=output).as_numpy("label")
        assert value is not None
        label = value[0]
        return label.decode() if isinstance(label, bytes) else str(label)

    def pixels_input() -> list[triton.InferInput]:
        tensor = triton.InferInput("pixels", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels, binary_data=True)
        return [tensor]

    def tf_label() -> str:
        response = tf.post("/v1/models/catdog:predict", json={"instances": [{"b64": encoded}]})
        response.raise_for_status()
        return str(response.json()["predictions"][0]["label"])

    return {
        "/predict (multipart)": lambda: client.predict(photo, filename="photo.jpg").label,
        "V2 JSON, base64 BYTES": lambda: v2_label([bytes_input(False)], False),
        "V2 binary BYTES": lambda: v2_label([bytes_input(True)], True),
        "V2 binary UINT8 pixels": lambda: v2_label(pixels_input(), True),
        "TF Serving b64 instances": tf_label,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.protocols", description=__doc__)
    parser.add_argument("--model-dir", type=Path, default=Settings().model_dir)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20, help="requests per protocol per round")
    args = parser.parse_args()

    server, base_url = start_service(args.model_dir, timeout=180)
    try:
        photo = sample_photos(Settings().data_dir, limit=1)[0]
        with Client(base_url) as client:
            image_size = int(client.metadata()["image_size"])
        send = senders(base_url, photo, image_size)
        labels = {name: call() for name, call in send.items()}  # warm-up, and they must agree
        assert len(set(labels.values())) == 1, labels
        times: dict[str, list[float]] = {name: [] for name in send}
        for _ in range(args.rounds):
            for name, call in send.items():
                for _ in range(args.requests):
                    began = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - began)
        print(f"photo: {len(photo)} bytes, answered '{labels[next(iter(labels))]}'; cores: {os.cpu_count()}")
        print(f"{args.rounds} rounds x {args.requests} sequential requests per protocol, interleaved")
        baseline = statistics.median(times["/predict (multipart)"]) * 1000
        print(f"{'protocol':<26} {'p50 ms':>8} {'vs /predict':>12}")
        for name, values in times.items():
            p50 = statistics.median(values) * 1000
            print(f"{name:<26} {p50:8.1f} {p50 - baseline:+11.1f}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
