"""Prompt templates: jinja2 files in prompts/, overridable file by file from a user folder.

Templates render with ``StrictUndefined``: a variable the row lacks is a named error
(``TemplateVarError``), and ``check_variables`` finds it before any model is called.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from jinja2 import meta

from albumforge.resources import data_dir

PROMPTS_DIR = data_dir("prompts")  # the checkout's prompts/, or the copy a wheel ships


class TemplateVarError(KeyError):
    """A template uses a variable that the concept row does not provide."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def environment(user_dir: Path | None = None) -> jinja2.Environment:
    """Templates from ``user_dir`` (when given) win over the shipped ``prompts/``."""
    folders = [str(user_dir)] if user_dir else []
    folders.append(str(PROMPTS_DIR))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # prompts are plain text for a model, never HTML
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def template_variables(env: jinja2.Environment, name: str) -> set[str]:
    source = env.loader.get_source(env, name)[0]
    return meta.find_undeclared_variables(env.parse(source))


def check_variables(env: jinja2.Environment, names: list[str], provided: set[str], where: str) -> None:
    """Raise ``TemplateVarError`` naming the template and variable a row lacks."""
    for name in names:
        missing = sorted(template_variables(env, name) - provided)
        if missing:
            raise TemplateVarError(
                f"{where}: template {name!r} uses {', '.join(repr(m) for m in missing)}, "
                f"which the concept row does not provide (it has: {', '.join(sorted(provided))})"
            )


def render(env: jinja2.Environment, name: str, **variables) -> str:
    try:
        return env.get_template(name).render(**variables).strip()
    except jinja2.UndefinedError as e:
        raise TemplateVarError(f"template {name!r}: {e.message}") from e
