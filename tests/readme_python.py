"""The reader's Python session for tests/test_readme.py: README python blocks build on each
other (one block connects, the next uses ``conn``), as they would in one program, so they run
in one interpreter with one namespace.

Protocol: one JSON object per line on stdin, {"code": ..., "name": ...}; for each, one JSON
line on the real stdout: {"ok": bool, "out": what the block printed, "error": traceback}.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback
from typing import Any


def main() -> int:
    reply = sys.stdout
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for line in sys.stdin:
        request = json.loads(line)
        out = io.StringIO()
        result: dict[str, Any] = {"ok": True, "error": ""}
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(request["code"], request["name"], "exec"), namespace)
        except BaseException:
            result = {"ok": False, "error": traceback.format_exc()}
        result["out"] = out.getvalue()
        reply.write(json.dumps(result) + "\n")
        reply.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
