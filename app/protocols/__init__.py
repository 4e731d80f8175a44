"""Other servers' HTTP protocols on top of the same prediction service as /predict.

- `v2`: KServe's Open Inference Protocol (V2, also Triton's), JSON and the binary-data extension
- `tfserving`: TensorFlow Serving's REST API (`/v1/models/...`)

Each is a codec over the prediction core (app/service.py): it decodes its wire format into encoded
images or a uint8 pixel tensor (`common.classify`), and encodes the core's per-image answers as its
tensors, whose names, dtypes and shapes come from the signature (app/signature.py). Decoding,
limits, admission and dynamic batching are the core's, as for /predict; errors take the front's
shape (app/fronts.py: `{"error": "message"}`).
"""
