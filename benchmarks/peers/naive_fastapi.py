"""The naive FastAPI app: a `def` endpoint (Starlette's thread pool), one model call per request.

    PEER_MODEL_DIR=model/default .venv/bin/python -m uvicorn benchmarks.peers.naive_fastapi:app --port 8001

What most people write first: no batching, no limits, no metrics, no logs per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, File, HTTPException, UploadFile

from benchmarks.peers.common import answers, decode, load_model

state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state["model"] = load_model()
    yield
    state.clear()


app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/predict")
def predict(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008 - FastAPI's idiom
    model = state["model"]
    try:
        image = decode(model, file.file.read())
    except Exception as exc:  # the naive app's whole error handling
        raise HTTPException(400, f"cannot decode the image: {exc}") from exc
    return answers(model, model.predict(image[None]))[0]
