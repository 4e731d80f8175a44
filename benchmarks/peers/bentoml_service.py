"""BentoML with adaptive batching, serving the same model with the same decoding as catdog.

    cd <repo> && ~/.cache/catdog-bench/bentoml/bin/python -m bentoml serve \
        benchmarks.peers.bentoml_service:CatDog --port 8002

Run with the venv that `python -m benchmarks.peers.run` creates (bentoml is not a project
dependency). One worker; BentoML's adaptive batcher groups concurrent requests into batches of up to
16 (catdog's default). The multipart field is `images` (one file per request).
"""

from pathlib import Path
from typing import Any

import bentoml  # type: ignore[import-not-found]
import numpy as np

from benchmarks.peers.common import answers, decode, load_model


@bentoml.service(workers=1, traffic={"timeout": 60})
class CatDog:
    def __init__(self) -> None:
        self.model = load_model()

    @bentoml.api(batchable=True, max_batch_size=16, max_latency_ms=10_000)
    def predict(self, images: list[Path]) -> list[dict[str, Any]]:
        batch = np.stack([decode(self.model, Path(path).read_bytes()) for path in images])
        return answers(self.model, self.model.predict(batch))
