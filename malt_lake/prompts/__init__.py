"""Role prompts per dataset family, as files, with a stable hash recorded on every row.

A template file holds the system message, a line ``===``, then the user message with
``$question``, ``$choices``, ``$answer`` (the generator's text) and ``$critique``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template

from malt_lake.errors import ConfigError

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
ROLES = ("generator", "verifier", "refiner")
SEPARATOR = "\n===\n"

Message = dict[str, str]


@dataclass(frozen=True)
class RoleTemplate:
    family: str
    role: str
    system: str
    user: Template
    hash: str

    def render(self, question: str, choices: list[dict] | None = None, answer: str | None = None,
               critique: str | None = None) -> list[Message]:
        needed = {"$answer": answer, "$critique": critique}
        for placeholder, value in needed.items():
            if placeholder in self.user.template and value is None:
                raise ValueError(f"{self.role} prompt needs {placeholder[1:]}")
        user = self.user.substitute(
            question=question.strip(), choices=format_choices(choices),
            answer=(answer or "").strip(), critique=(critique or "").strip())
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


def format_choices(choices: list[dict] | None) -> str:
    return "\n".join(f"{c['label']}. {c['text']}" for c in choices or [])


@cache
def template(family: str, role: str) -> RoleTemplate:
    path = TEMPLATE_DIR / family / f"{role}.txt"
    if role not in ROLES or not path.is_file():
        raise ConfigError(f"no {role!r} prompt for family {family!r} (looked in {path})")
    raw = path.read_text(encoding="utf-8")
    if SEPARATOR not in raw:
        raise ConfigError(f"{path}: expected a system message, a line '===', then the user one")
    system, user = raw.split(SEPARATOR, 1)
    digest = hashlib.sha256(f"{family}/{role}\n{raw}".encode()).hexdigest()[:16]
    return RoleTemplate(family, role, system.strip(), Template(user.strip()), digest)
