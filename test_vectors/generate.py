#!/usr/bin/env python3
"""Generate the capwallet v1 conformance vectors in test_vectors/v1/ (spec/test-vectors.md).

    python test_vectors/generate.py           # (re)write the files
    python test_vectors/generate.py --check   # exit 1 if regenerating would change any file

The generator itself is the package test_vectors/vectorgen/, one module per vector file.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from vectorgen.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
