"""keygen, mint, attenuate, inspect, verify."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("keygen", help="create a root key file")
    p.set_defaults(func=lambda a: 0)
