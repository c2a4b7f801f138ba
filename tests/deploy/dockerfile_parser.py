"""A small Dockerfile reader for the lint tests: instructions with their stage, ARG defaults substituted."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # continuation lines joined, ${ARG} references replaced by the ARG's default
    stage: int  # 0 for the first FROM, 1 for the second, ...


def logical_lines(text: str) -> list[str]:
    """Comment lines dropped, backslash continuations joined into one line each."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path) -> list[Instruction]:
    defaults: dict[str, str] = {}
    instructions: list[Instruction] = []
    stage = -1
    for line in logical_lines(path.read_text()):
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        arguments = re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda match: defaults.get(match.group(1) or match.group(2), match.group(0)),
            arguments.strip(),
        )
        if keyword == "ARG" and "=" in arguments:
            name, _, value = arguments.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments, max(stage, 0)))
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(instruction.stage for instruction in instructions)
    return [instruction for instruction in instructions if instruction.stage == last]


def env_values(instructions: list[Instruction]) -> dict[str, str]:
    """KEY=VALUE pairs of the ENV instructions given (the legacy `ENV KEY VALUE` form is not used here)."""
    values: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                key, _, value = pair.partition("=")
                values[key] = value
    return values
