"""The one way feedpub sets up jinja2: a site's overrides first, then the built-in
templates, translated into the site's language; template errors become ConfigError
naming the template file and line."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import jinja2

from feedpub.config import Settings
from feedpub.errors import ConfigError
from feedpub.i18n import Language

TemplateFolder = Literal["email", "web", "pages", "admin"]
BUILTIN_TEMPLATES = Path(__file__).resolve().parent / "templates"


def template_environment(
    settings: Settings, language: Language, folder: TemplateFolder, *,
    autoescape: bool | Callable[[str | None], bool] = True,
) -> jinja2.Environment:
    """``templates/<folder>/`` of the site first, then the built-in ones.

    A site template can extend a built-in one of the same name as
    ``feedpub/base.html``.
    """
    builtin = jinja2.FileSystemLoader(BUILTIN_TEMPLATES / folder)
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([
            jinja2.FileSystemLoader(settings.templates_dir / folder),
            builtin,
            jinja2.PrefixLoader({"feedpub": builtin}),
        ]),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(language.translations, newstyle=True)  # type: ignore[attr-defined]
    return env


def render_template(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    """Render ``name``; raise ConfigError naming the template file and line on any error."""
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template error: {exc.message}", path=exc.filename or name,
                          line=exc.lineno) from None
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"template not found: {exc.name}", path=name) from None
    except jinja2.TemplateError as exc:
        path, line = _template_location(exc, name)
        raise ConfigError(f"template error: {exc.message or exc}", path=path,
                          line=line) from None


def _template_location(exc: BaseException, default: str) -> tuple[str, int | None]:
    """The innermost template frame of a jinja2 runtime error."""
    location: tuple[str, int | None] = (default, None)
    traceback = exc.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if filename.endswith((".html", ".txt")):
            location = (filename, traceback.tb_lineno)
        traceback = traceback.tb_next
    return location
