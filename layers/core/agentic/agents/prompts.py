"""The prompts the model-backed agents send, from files a user can override (``PROMPTS_DIR``).

Each prompt is a ``string.Template`` (``$task``, ``$passages``, ``$analysis``, ``$errors``): user text
full of braces or dollar signs is substituted as it is, never interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

from agentic.errors import InvalidInput

PROMPT_NAMES = ("analyzer_system", "analyzer_user", "writer_system", "writer_user", "repair")


@dataclass
class Prompts:
    """The packaged prompts, each replaced by ``<name>.md`` in ``directory`` when that file exists."""

    directory: Path | None = None
    _cache: dict[str, Template] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.directory is not None and not self.directory.is_dir():
            raise InvalidInput(f"PROMPTS_DIR={self.directory} is not a folder")

    def template(self, name: str) -> Template:
        if name not in PROMPT_NAMES:
            raise KeyError(name)
        cached = self._cache.get(name)
        if cached is None:
            custom = self.directory / f"{name}.md" if self.directory is not None else None
            if custom is not None and custom.is_file():
                text = custom.read_text(encoding="utf-8")
            else:
                text = resources.files("agentic.agents").joinpath("prompts", f"{name}.md").read_text(encoding="utf-8")
            cached = self._cache[name] = Template(text.strip())
        return cached

    def render(self, name: str, **values: str) -> str:
        # safe_substitute: a "$" in a user's own prompt file that names nothing stays as written.
        return self.template(name).safe_substitute(values)
