"""Other servers' HTTP protocols on top of the same prediction service as /predict.

- `v2`: KServe's Open Inference Protocol (V2, also Triton's), JSON and the binary-data extension
- `tfserving`: TensorFlow Serving's REST API (`/v1/models/...`)

Every request goes through `PredictionService.predict_batch` (encoded image bytes) or
`PredictionService.predict_arrays` (uint8 pixels): the decoding, limits, admission and dynamic
batcher of /predict. Only the wire format and the error shape (`{"error": "message"}`) differ.
"""
