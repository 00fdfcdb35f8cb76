"""The site's language, for mail and web alike: gettext catalogs shipped in
``feedpub/locale``, Babel dates.

Catalogs exist for ``en``, ``zh_Hant``, ``zh_Hans`` and ``ja``; any other
language gets English words (and still its own date formats). See
``feedpub/locale/README.md`` to add a language or recompile the ``.mo`` files.

Babel is imported when first needed, not with this module: the settings check
the language tag at load, and importing them must stay cheap for build workers.
"""

from __future__ import annotations

import gettext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

from feedpub.errors import ConfigError

if TYPE_CHECKING:
    from babel import Locale

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "feedpub"
CATALOGS = ("en", "zh_Hant", "zh_Hans", "ja")
TRADITIONAL_CHINESE_TERRITORIES = frozenset({"TW", "HK", "MO"})

Direction = Literal["ltr", "rtl"]


def parse_locale(language: str) -> Locale:
    """``zh-TW``, ``zh_Hant``, ``ja``, ``en-US``… as a Babel locale."""
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown language tag {language!r} ({exc})") from None


def catalog_name(locale: Locale) -> str | None:
    """The shipped catalog for a locale (``zh-TW`` -> ``zh_Hant``), None for English fallback."""
    if locale.language == "zh":
        script = locale.script
        if script is None:
            script = "Hant" if locale.territory in TRADITIONAL_CHINESE_TERRITORIES else "Hans"
        name = f"zh_{script}"
    else:
        name = locale.language
    return name if name in CATALOGS else None


def load_translations(locale: Locale) -> gettext.NullTranslations:
    from babel.support import Translations

    name = catalog_name(locale)
    if name is None:
        return gettext.NullTranslations()
    path = LOCALE_DIR / name / "LC_MESSAGES" / f"{DOMAIN}.mo"
    with path.open("rb") as handle:
        return Translations(handle, domain=DOMAIN)


def text_direction(language: str) -> Direction:
    """``rtl`` for Arabic, Hebrew, Persian, Urdu…; ``ltr`` otherwise or when unknown."""
    try:
        locale = parse_locale(language)
    except ValueError:
        return "ltr"
    return "rtl" if locale.character_order == "right-to-left" else "ltr"


@dataclass(frozen=True)
class Language:
    """Everything the templates need to speak one language."""

    tag: str
    """As written in the config (``zh-TW``); goes into ``<html lang>``."""
    locale: Locale
    translations: gettext.NullTranslations
    direction: Direction
    timezone: ZoneInfo

    def date(self, value: datetime, format: str = "long") -> str:
        from babel.dates import format_date

        return format_date(value.astimezone(self.timezone).date(), format=format,
                           locale=self.locale)

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations.ngettext(singular, plural, n)


def site_language(tag: str, timezone: ZoneInfo, *, config_path: Path | None = None) -> Language:
    """The site's language, or a ConfigError naming ``site.language``."""
    try:
        locale = parse_locale(tag)
    except ValueError as exc:
        raise ConfigError(
            f"{exc}: use a language tag such as en, zh-TW, zh-CN or ja",
            path=config_path,
            key="site.language",
        ) from None
    return Language(
        tag=tag,
        locale=locale,
        translations=load_translations(locale),
        direction="rtl" if locale.character_order == "right-to-left" else "ltr",
        timezone=timezone,
    )
