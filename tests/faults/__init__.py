"""Fault-injection suite: each test reproduces a way state could silently diverge and shows it no longer does."""
