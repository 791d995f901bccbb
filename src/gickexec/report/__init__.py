"""Turning results into text and JSON."""
