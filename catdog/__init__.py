"""What training and serving share, and the only code both import: image decoding, the export
contract (file names, signature, outputs, class order, metadata schema) and the SavedModel loader.

`app/` and `training/` import this package and never each other.
"""
