"""LitServe with batching, serving the same model with the same decoding as catdog.

    ~/.cache/catdog-bench/litserve/bin/python -m benchmarks.peers.litserve_app --port 8003

Run with the venv that `python -m benchmarks.peers.run` creates (litserve is not a project
dependency). Batches of up to 16 requests, waiting at most 5 ms for one to fill (catdog's defaults);
one inference worker on the CPU. LitServe decodes in that worker, one request at a time.
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls  # type: ignore[import-not-found]
import numpy as np

from benchmarks.peers.common import answers, decode, load_model
from catdog.saved_model import ModelOutputs


class CatDogAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        self.model = load_model()

    # No annotations on these two: LitServe builds its endpoint from them (unannotated = raw Request,
    # a multipart form here; untyped response).
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return decode(self.model, request["file"].file.read())

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, images: np.ndarray) -> ModelOutputs:
        if images.ndim == 3:  # a request that was not batched
            images = images[None]
        return self.model.predict(images)

    def unbatch(self, output: ModelOutputs) -> list[dict[str, Any]]:
        return answers(self.model, output)

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        if isinstance(output, ModelOutputs):
            return answers(self.model, output)[0]
        return output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    args = parser.parse_args()
    api = CatDogAPI(max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
