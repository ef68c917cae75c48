"""Collects the backend-agnostic store suite (tests/store_suite.py) for every backend."""

from store_suite import *  # noqa: F403
