"""The peers catdog is compared with: small apps serving the same model with the same decoding.

- `naive_fastapi.py`: FastAPI, one `def` endpoint, one model call per request (no batching);
- `bentoml_service.py`: BentoML with adaptive batching;
- `litserve_app.py`: LitServe with batching;
- `run.py`: the runner (peers' packages installed in their own venvs, load from hey, interleaved rounds).

Every app loads the model with `catdog.saved_model.load_exported_model` (the same runtime as catdog,
PEER_RUNTIME) and decodes with `catdog.imaging.load_model_input`, so only the serving differs.
"""
