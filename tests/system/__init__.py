"""System tier: real servers as subprocesses, real training, Chromium, Docker, long runs (all `slow`)."""
