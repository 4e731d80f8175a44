"""The test suite, in three tiers by folder (docs/testing.md):

- unit/: pure functions and small components; no model built, no server, no subprocess, no network
- service/: the app in-process or on loopback with the tiny test models (or the committed one)
- system/: real servers as subprocesses, real training, Chromium, Docker, long hostile-input runs

Plain `pytest` runs unit/ and service/ (pyproject.toml testpaths); scripts/test.sh and CI run all three.
Everything in system/ is marked `slow` by tests/conftest.py. Shared helpers stay here at the top.
"""
