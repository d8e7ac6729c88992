"""Test helpers for the speechssl chapters (the nbval tolerance plugin)."""
