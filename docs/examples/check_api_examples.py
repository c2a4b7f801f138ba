"""Run every `curl` line of docs/api.md against a running service and check its HTTP status.

    uvicorn app.main:app &                      # on the shipped checkpoints, port 8000
    python docs/examples/check_api_examples.py  # from the repository root

Lines in the "Errors" section must answer 4xx, every other line 2xx. Files the examples write
(`-o denoised.png` ...) go to a temporary folder, not into the repository.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def curl_lines(markdown: str) -> list[tuple[str, str]]:
    """(section heading, command) for every line starting with `curl ` inside a bash code block."""
    lines, section, in_bash = [], "", False
    for line in markdown.splitlines():
        if line.startswith("### "):
            section = line
        elif line.startswith("```"):
            in_bash = line.startswith("```bash")
        elif in_bash and line.startswith("curl "):
            lines.append((section, line))
    return lines


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "docs").symlink_to(ROOT / "docs")
        for section, command in curl_lines((ROOT / "docs" / "api.md").read_text()):
            shell_line = command + " -w '\\nHTTP %{http_code}\\n'"  # our own documentation, run as written
            result = subprocess.run(shell_line, shell=True, capture_output=True, text=True, cwd=scratch)  # noqa: S602
            found = re.search(r"HTTP (\d+)\s*$", result.stdout)
            status = int(found.group(1)) if found else 0
            wanted = range(400, 500) if "Errors" in section else range(200, 300)
            ok = result.returncode == 0 and status in wanted
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {status} {command}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
