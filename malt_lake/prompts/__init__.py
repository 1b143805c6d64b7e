"""Role prompts as files, one folder per prompt set, with a stable hash recorded on every row.

A prompt set is a folder under ``templates/``: each answer family has one of its own name
(``numeric``, ``math``, ``mcq``), and a dataset may name another (``DatasetSpec.prompts``, e.g.
the built-in arithmetic's ``numeric-brief``). A template file ``<role>.txt`` holds the system
message, a line ``===``, then the user message with ``$question``, ``$choices``, ``$answer``
(the generator's text) and ``$critique``. An optional ``<role>.stop`` holds regular
expressions, one a line, that end the role's completion where its answer is complete (the
verdict, the final-answer line): what follows them is the small model running on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template

from malt_lake.backends.base import check_stop_patterns
from malt_lake.errors import ConfigError
from malt_lake.names import ROLES

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
SEPARATOR = "\n===\n"

Message = dict[str, str]


@dataclass(frozen=True)
class RoleTemplate:
    prompt_set: str
    role: str
    system: str
    user: Template
    hash: str
    stop: tuple[str, ...] = ()

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


def shared_stop(templates: Iterable[RoleTemplate]) -> tuple[str, ...]:
    """The stop patterns of templates sent in one backend call, which takes one set: a
    partition or held-out split holds one dataset, hence one family and prompt set."""
    stops = {tpl.stop for tpl in templates}
    if len(stops) > 1:
        raise ConfigError(f"one backend call would need several stop-pattern sets: "
                          f"{sorted(stops)}; give each family its own dataset")
    return stops.pop() if stops else ()


def prompt_sets() -> list[str]:
    """The prompt sets shipped with the package."""
    return sorted(p.name for p in TEMPLATE_DIR.iterdir() if p.is_dir())


@cache
def template(prompt_set: str, role: str) -> RoleTemplate:
    """The ``role``'s template in ``prompt_set`` (a family's name for its own prompts)."""
    path = TEMPLATE_DIR / prompt_set / f"{role}.txt"
    if role not in ROLES or not path.is_file():
        raise ConfigError(f"no {role!r} prompt in prompt set {prompt_set!r} (looked in {path}); "
                          f"prompt sets: {', '.join(prompt_sets())}")
    raw = path.read_text(encoding="utf-8")
    if SEPARATOR not in raw:
        raise ConfigError(f"{path}: expected a system message, a line '===', then the user one")
    system, user = raw.split(SEPARATOR, 1)
    stop_file = path.with_suffix(".stop")
    stop = tuple(line for line in stop_file.read_text(encoding="utf-8").splitlines()
                 if line.strip()) if stop_file.is_file() else ()
    try:
        check_stop_patterns(stop)
    except ValueError as exc:
        raise ConfigError(f"{stop_file}: {exc}") from None
    # the stop patterns are part of the prompt's identity: they change what a row holds
    blob = f"{prompt_set}/{role}\n{raw}" + "".join(f"\nstop: {p}" for p in stop)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return RoleTemplate(prompt_set, role, system.strip(), Template(user.strip()), digest, stop)
