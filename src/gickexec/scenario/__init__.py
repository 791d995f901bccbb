"""Scenario files, the runner, and the checks that judge a run."""
