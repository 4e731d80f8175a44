"""Unit tier: pure functions and small components; no model built, no server, no subprocess."""
