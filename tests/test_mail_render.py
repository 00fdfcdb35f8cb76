"""Rendering an edition once: templates, languages, size limit, placeholders, plain text."""

from __future__ import annotations

import gettext
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import lxml.html
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from feedpub.config import Author, Settings
from feedpub.entries import Entry
from feedpub.errors import ConfigError
from feedpub.i18n import LOCALE_DIR, catalog_name, parse_locale, text_direction
from feedpub.mail.render import (
    PLACEHOLDERS,
    Recipient,
    RenderedEdition,
    personalize,
    render_confirmation,
    render_edition,
)
from tests.conftest import BASIC_CONFIG, SiteFactory

TAIPEI = timezone(timedelta(hours=8))
EDITION_DATE = datetime(2025, 2, 10, 9, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def make_entry(
    number: int,
    *,
    title: str | None = None,
    lang: str = "en",
    content: str | None = None,
    summary: str | None = None,
    categories: tuple[str, ...] = ("notes",),
    author: str = "Ada Author",
    day: int | None = None,
) -> Entry:
    published = datetime(2025, 2, day or number, 10, 0, tzinfo=TAIPEI)
    slug = f"post-{number}"
    return Entry(
        id=f"tag:example.com,2025-02-{published.day:02d}:{slug}",
        slug=slug,
        title=title if title is not None else f"Post number {number}",
        url=f"https://example.com/2025/02/{published.day:02d}/{slug}/",
        published=published,
        updated=published,
        author=Author(author),
        categories=categories,
        tags=(),
        content_html=content if content is not None else
        f"<p>Full text of post {number}, with <a href=\"https://example.com/x?a=1&amp;b=2\">a"
        f" link</a>.</p>",
        summary_html=summary if summary is not None else f"<p>Summary of post {number}.</p>",
        summary_text=f"Summary of post {number}.",
        image=None,
        lang=lang,
        source=f"content/posts/{slug}.md",
    )


def site_settings(make_site: SiteFactory, **replacements: str) -> Settings:
    """The conftest site, with ``key = value`` lines replaced or added."""
    config = BASIC_CONFIG
    for key, line in replacements.items():
        pattern = re.compile(rf"^{re.escape(key)} = .*$", re.MULTILINE)
        config = (pattern.sub(lambda _match, text=line: text, config) if pattern.search(config)
                  else config + line + "\n")
    make_site(config=config)
    return make_site.settings()


def render(settings: Settings, entries: list[Entry], kind: str = "digest",
           edition_id: str = "2025-02-10") -> RenderedEdition:
    return render_edition(entries, settings=settings, newsletter=settings.newsletters[0],
                          kind=kind, edition_id=edition_id, date=EDITION_DATE)  # type: ignore[arg-type]


RECIPIENT = Recipient(
    email="o'brien+news@example.org",
    name="Zoë O'Brien",
    unsubscribe_url="https://example.com/unsubscribe/tok-1?x=1&y=2",
    preferences_url="https://example.com/preferences/tok-1",
)


def test_digest_shows_each_entry_with_permalink_date_author_categories(make_site: SiteFactory):
    settings = site_settings(make_site)
    entries = [make_entry(3, categories=("python", "email")), make_entry(2), make_entry(1)]
    rendered = render(settings, entries)
    doc = lxml.html.document_fromstring(rendered.html)
    titles = doc.xpath("//*[contains(@class, 'entry-title')]/a")
    assert [(a.text, a.get("href")) for a in titles] == [
        (e.title, e.url) for e in entries
    ]
    metas = [m.text_content() for m in doc.xpath("//p[contains(@class, 'entry-meta')]")]
    assert metas[0] == "Feb 3, 2025 · Ada Author · python, email"
    assert doc.xpath("//h1")[0].text == "Test Site: weekly"
    assert "February 10, 2025" in rendered.html
    assert rendered.entry_ids == tuple(e.id for e in entries)
    assert "Full text of post 3" in rendered.html
    assert "Read more" not in rendered.html


def test_layout_is_accessible_and_email_safe(make_site: SiteFactory):
    settings = site_settings(make_site)
    rendered = render(settings, [make_entry(1, content='<p>x</p><img src="https://e.com/a.png">')])
    doc = lxml.html.document_fromstring(rendered.html)
    assert rendered.html.startswith("<!DOCTYPE html>")
    assert doc.get("lang") == "en"
    assert doc.xpath("//meta[@name='color-scheme']/@content") == ["light dark"]
    tables = doc.xpath("//table")
    assert tables and all(t.get("role") == "presentation" for t in tables)
    image = doc.xpath("//div[contains(@class, 'entry-content')]//img")[0]
    assert image.get("alt") == ""
    assert "max-width:100%" in image.get("style").replace(" ", "")
    assert "height:auto" in image.get("style").replace(" ", "")
    assert doc.xpath("//div[@class='preheader']")[0].text_content().startswith("Summary of post 1")
    style = doc.xpath("//style")[0].text
    assert "@media (prefers-color-scheme: dark)" in style
    assert "!important" in style, "strip_important must stay off or dark mode loses"
    card = doc.xpath("//td[contains(@class, 'card')]")[0]
    assert "background-color:#fff" in card.get("style").replace(" ", "")
    view = doc.xpath("//td[contains(@class, 'topbar')]/a")[0]
    assert view.get("href") == "https://example.com/editions/weekly/2025-02-10.html"
    assert view.text == "View in browser"
    footer = doc.xpath("//td[contains(@class, 'footer')]")[0].text_content()
    assert "1 Test Street, Testville" in footer
    assert "Test Site: weekly" in footer


def test_code_keeps_inline_highlighting_and_wide_tables_get_a_scroll_box(make_site: SiteFactory):
    settings = site_settings(make_site)
    content = (
        '<pre><code><span style="color: #008000; font-weight: bold">def</span> f(): pass'
        "</code></pre><table><tr><td>a</td></tr></table><p>after</p>"
        '<div class="table-scroll"><table><tr><td>already boxed</td></tr></table></div>'
    )
    rendered = render(settings, [make_entry(1, content=content)])
    doc = lxml.html.document_fromstring(rendered.html)
    span = doc.xpath("//pre//span")[0]
    assert "color: #008000" in span.get("style")
    pre = doc.xpath("//pre")[0]
    assert "overflow-x:auto" in pre.get("style").replace(" ", "")
    boxes = doc.xpath("//div[contains(@class, 'table-scroll')]")
    assert len(boxes) == 2
    assert all(len(box.xpath("./table")) == 1 for box in boxes)
    assert "overflow-x:auto" in boxes[0].get("style").replace(" ", "")
    assert doc.xpath("//div[contains(@class,'table-scroll')]/following-sibling::p")[0].text \
        == "after"


def test_arabic_entry_reads_right_to_left_inside_an_english_digest(make_site: SiteFactory):
    settings = site_settings(make_site)
    arabic = make_entry(2, title="مرحبا بالعالم", lang="ar", content="<p>هذا نص عربي.</p>")
    rendered = render(settings, [arabic, make_entry(1)])
    doc = lxml.html.document_fromstring(rendered.html)
    assert (doc.get("lang"), doc.get("dir")) == ("en", "ltr")
    contents = doc.xpath("//div[contains(@class, 'entry-content')]")
    assert [(c.get("lang"), c.get("dir")) for c in contents] == [("ar", "rtl"), ("en", "ltr")]
    titles = doc.xpath("//*[contains(@class, 'entry-title')]")
    assert titles[0].get("dir") == "rtl"
    web = lxml.html.document_fromstring(rendered.web_html)
    assert web.xpath("//div[contains(@class,'entry-content')]/@dir") == ["rtl", "ltr"]


@pytest.mark.parametrize(("tag", "expected"), [
    ("ar", "rtl"), ("he", "rtl"), ("fa-IR", "rtl"), ("ur", "rtl"),
    ("en", "ltr"), ("zh-TW", "ltr"), ("ja", "ltr"), ("not a language!", "ltr"),
])
def test_text_direction(tag: str, expected: str):
    assert text_direction(tag) == expected


@pytest.mark.parametrize(("tag", "catalog"), [
    ("zh-TW", "zh_Hant"), ("zh-HK", "zh_Hant"), ("zh_Hant", "zh_Hant"), ("zh-CN", "zh_Hans"),
    ("zh", "zh_Hans"), ("zh-SG", "zh_Hans"), ("ja", "ja"), ("ja-JP", "ja"), ("en-GB", "en"),
    ("de", None), ("ar", None),
])
def test_site_language_picks_its_catalog(tag: str, catalog: str | None):
    assert catalog_name(parse_locale(tag)) == catalog


@pytest.mark.parametrize(("language", "words", "date_text"), [
    ("zh-TW", ["繼續閱讀", "取消訂閱", "訂閱設定", "在瀏覽器中檢視", "這封郵件寄送至"],
     "2025年2月10日"),
    ("zh-CN", ["阅读全文", "退订", "订阅设置", "在浏览器中查看", "此邮件发送至"], "2025年2月10日"),
    ("ja", ["続きを読む", "配信停止", "配信設定", "ブラウザで表示", "宛てに送信されました"],
     "2025年2月10日"),
    ("de", ["Read more", "Unsubscribe", "Preferences", "View in browser"], "10. Februar 2025"),
])
def test_templates_speak_the_site_language(make_site: SiteFactory, language: str,
                                          words: list[str], date_text: str):
    settings = site_settings(make_site, language=f'language = "{language}"',
                             full_content="full_content = false")
    rendered = render(settings, [make_entry(2), make_entry(1)])
    html, text = personalize(rendered, RECIPIENT)
    for word in words:
        assert word in html
    assert date_text in html
    assert words[0] in text and words[1] in text
    assert lxml.html.document_fromstring(html).get("lang") == language


def test_default_subject_says_how_many_more_in_the_site_language(make_site: SiteFactory):
    english = site_settings(make_site)
    entries = [make_entry(3, title="Line one\nline two 🎉"), make_entry(2), make_entry(1)]
    assert render(english, entries).subject == "Test Site: Line one line two 🎉 (+2 more)"
    assert render(english, entries[1:2]).subject == "Test Site: Post number 2"
    japanese = site_settings(make_site, language='language = "ja"')
    assert render(japanese, entries).subject == "Test Site: Line one line two 🎉 (他 2 件)"
    taiwan = site_settings(make_site, language='language = "zh-TW"')
    assert render(taiwan, entries[:2]).subject.endswith("(另有 1 篇)")


def test_subject_template_from_the_newsletter(make_site: SiteFactory):
    settings = site_settings(
        make_site,
        schedule='schedule = "0 9 * * MON"\n'
                 'subject = "{{ newsletter.name|upper }}: {{ count }} new, first {{ first.title }}'
                 ' {% for e in entries %}\\n{{ e.slug }}{% endfor %}"',
    )
    subject = render(settings, [make_entry(2, title="A <b> & C"), make_entry(1)]).subject
    assert subject == "WEEKLY: 2 new, first A <b> & C post-2 post-1"


def test_broken_subject_template_names_the_key(make_site: SiteFactory):
    settings = site_settings(make_site,
                             schedule='schedule = "0 9 * * MON"\nsubject = "{{ nope.title }}"')
    with pytest.raises(ConfigError) as caught:
        render(settings, [make_entry(1)])
    assert caught.value.key == "newsletter[0].subject"
    assert "nope" in str(caught.value)


def test_full_content_false_shows_summaries_with_read_more(make_site: SiteFactory):
    settings = site_settings(make_site, full_content="full_content = false")
    rendered = render(settings, [make_entry(2), make_entry(1)])
    assert "Summary of post 2" in rendered.html and "Full text of post 2" not in rendered.html
    doc = lxml.html.document_fromstring(rendered.html)
    links = doc.xpath("//p[contains(@class,'read-more')]/a")
    assert [a.get("href") for a in links] == [make_entry(2).url, make_entry(1).url]
    assert rendered.summarized_ids == ()


def test_post_email_shows_one_entry_in_full_even_for_a_summary_newsletter(
    make_site: SiteFactory,
):
    settings = site_settings(make_site, full_content="full_content = false")
    rendered = render(settings, [make_entry(1)], kind="post")
    assert "Full text of post 1" in rendered.html
    assert "Read more" not in rendered.html
    assert lxml.html.document_fromstring(rendered.html).xpath("//h1/a")[0].text == \
        "Post number 1"
    with pytest.raises(ValueError, match="one entry"):
        render(settings, [make_entry(1), make_entry(2)], kind="post")


def test_a_repeated_entry_is_shown_once(make_site: SiteFactory):
    settings = site_settings(make_site)
    rendered = render(settings, [make_entry(2), make_entry(1), make_entry(2)])
    assert rendered.entry_ids == (make_entry(2).id, make_entry(1).id)
    assert rendered.html.count("Full text of post 2") == 1
    assert rendered.subject.endswith("(+1 more)")


def test_too_large_edition_falls_back_to_summaries_oldest_first(make_site: SiteFactory):
    settings = site_settings(make_site)
    big = "<p>" + "Lorem ipsum dolor sit amet, 中文字 🎉. " * 600 + "</p>"  # ~26 KB each
    entries = [make_entry(n, content=f"<p>BODY-{n}</p>{big}") for n in (4, 3, 2, 1)]
    rendered = render(settings, entries)
    assert rendered.summarized_ids == (make_entry(1).id,)
    assert rendered.html_bytes <= settings.mail.max_html_bytes
    assert not rendered.over_limit
    html, _ = personalize(rendered, RECIPIENT)
    assert len(html.encode("utf-8")) <= settings.mail.max_html_bytes
    assert "BODY-1" not in html and "Summary of post 1" in html
    assert all(f"BODY-{n}" in html for n in (2, 3, 4))
    assert all(f"BODY-{n}" in rendered.web_html for n in (1, 2, 3, 4))
    assert "Summary of post 1" not in rendered.web_html

    much_bigger = [make_entry(n, content=f"<p>BODY-{n}</p>{big}") for n in (6, 5, 4, 3, 2, 1)]
    rendered = render(settings, much_bigger)
    assert set(rendered.summarized_ids) == {make_entry(n).id for n in (1, 2, 3)}


def test_edition_over_the_limit_even_as_summaries_says_so(make_site: SiteFactory):
    settings = site_settings(make_site, postal_address="postal_address = \"x\"\n"
                             "max_html_bytes = 10000")
    long_summary = "<p>" + "word " * 3000 + "</p>"
    rendered = render(settings, [make_entry(n, summary=long_summary, content=long_summary * 2)
                                 for n in (2, 1)])
    assert rendered.over_limit
    assert set(rendered.summarized_ids) == {make_entry(1).id, make_entry(2).id}


def test_no_placeholder_survives_personalize_and_values_are_escaped(make_site: SiteFactory):
    settings = site_settings(make_site)
    rendered = render(settings, [make_entry(2), make_entry(1)])
    for token in ("%%FEEDPUB_EMAIL%%", "%%FEEDPUB_UNSUBSCRIBE_URL%%",
                  "%%FEEDPUB_PREFERENCES_URL%%"):
        assert token in rendered.html and token in rendered.text
    html, text = personalize(rendered, RECIPIENT)
    assert "%%FEEDPUB" not in html and "%%FEEDPUB" not in text
    doc = lxml.html.document_fromstring(html)
    assert RECIPIENT.unsubscribe_url in doc.xpath("//a/@href")
    assert RECIPIENT.preferences_url in doc.xpath("//a/@href")
    assert "tok-1?x=1&amp;y=2" in html and "o&#x27;brien+news@example.org" in html
    assert RECIPIENT.unsubscribe_url in text and RECIPIENT.email in text
    assert "%%FEEDPUB" not in rendered.web_html


def test_web_page_has_no_personal_links(make_site: SiteFactory):
    settings = site_settings(make_site)
    rendered = render(settings, [make_entry(1)])
    assert rendered.web_path == "editions/weekly/2025-02-10.html"
    assert rendered.web_url == "https://example.com/editions/weekly/2025-02-10.html"
    doc = lxml.html.document_fromstring(rendered.web_html)
    hrefs = doc.xpath("//a/@href")
    assert "https://example.com/subscribe" in hrefs
    assert not any("unsubscribe" in h or "preferences" in h for h in hrefs)
    assert "View in browser" not in rendered.web_html
    assert "Full text of post 1" in rendered.web_html


def test_text_part_lists_every_title_and_url(make_site: SiteFactory):
    settings = site_settings(make_site, full_content="full_content = false")
    entries = [make_entry(3, title="中文標題 🎉"), make_entry(2, title="Tom & Jerry <3"),
               make_entry(1, content="<p>see <a href='https://example.org/deep/link'>this</a></p>")]
    rendered = render(settings, entries)
    for entry in entries:
        assert entry.title in rendered.text
        assert entry.url in rendered.text
    assert rendered.text.count("Read more: ") == 3
    assert "Tom &amp; Jerry" not in rendered.text
    assert "https://example.com/editions/weekly/2025-02-10.html" in rendered.text
    assert "\r" not in rendered.text and "<p>" not in rendered.text
    full = render(site_settings(make_site), entries)
    assert "https://example.org/deep/link" in full.text


def test_site_template_overrides_and_can_extend_the_builtin(make_site: SiteFactory):
    settings = site_settings(make_site)
    make_site.write(
        "templates/email/digest.html",
        '{% extends "feedpub/digest.html" %}{% block content %}'
        '<p class="banner">Hello from the site</p>{{ super() }}{% endblock %}',
    )
    rendered = render(settings, [make_entry(1)])
    assert "Hello from the site" in rendered.html
    assert "Full text of post 1" in rendered.html


def test_broken_site_template_names_file_and_line(make_site: SiteFactory):
    settings = site_settings(make_site)
    path = make_site.write("templates/email/post.html", "line one\n{% if %}\n")
    with pytest.raises(ConfigError) as caught:
        render(settings, [make_entry(1)], kind="post")
    assert caught.value.path == path
    assert caught.value.line == 2


def test_template_using_an_unknown_variable_names_the_template(make_site: SiteFactory):
    settings = site_settings(make_site)
    path = make_site.write("templates/email/post.html", "ok\n{{ missing.thing }}\n")
    with pytest.raises(ConfigError) as caught:
        render(settings, [make_entry(1)], kind="post")
    assert caught.value.path == path
    assert caught.value.line == 2
    assert "missing" in str(caught.value)


def test_unknown_site_language_is_a_config_error_before_anything_renders(
    make_site: SiteFactory,
):
    with pytest.raises(ConfigError) as caught:
        site_settings(make_site, language='language = "xx-nonsense-1"')
    assert caught.value.key == "site.language"


def test_confirmation_email(make_site: SiteFactory):
    settings = site_settings(make_site, language='language = "zh-TW"')
    rendered = render_confirmation(settings, settings.newsletters, date=EDITION_DATE)
    assert rendered.kind == "confirm"
    assert rendered.subject == "確認訂閱 Test Site"
    html, text = personalize(rendered, Recipient(
        email="new@example.com", confirm_url="https://example.com/confirm/abc&def"))
    doc = lxml.html.document_fromstring(html)
    assert "https://example.com/confirm/abc&def" in doc.xpath("//a/@href")
    assert "https://example.com/confirm/abc&def" in text
    assert "此連結將在 7 天後失效" in html and "new@example.com" in text
    assert "%%FEEDPUB" not in html + text
    assert "取消訂閱" not in html


def test_catalogs_cover_every_template_word_and_mo_files_are_compiled():
    with (LOCALE_DIR / "babel.cfg").open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    extracted = {
        message if isinstance(message, str) else message[0]
        for _, _, message, _, _ in extract_from_dir(
            REPO, method_map=method_map, options_map=options_map
        )
    }
    assert "Read more" in extracted and "Unsubscribe" in extracted
    for name in ("en", "zh_Hant", "zh_Hans", "ja"):
        folder = LOCALE_DIR / name / "LC_MESSAGES"
        with (folder / "feedpub.po").open("rb") as handle:
            catalog = read_po(handle)
        ids = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}
        assert ids == extracted, f"{name}: run the commands in feedpub/locale/README.md"
        with (folder / "feedpub.mo").open("rb") as handle:
            compiled = gettext.GNUTranslations(handle)
        for message in catalog:
            if not message.id:
                continue
            assert message.string and not message.fuzzy, f"{name}: {message.id!r} untranslated"
            if isinstance(message.id, str):
                assert compiled.gettext(message.id) == message.string, f"{name}: stale .mo"
            else:
                assert compiled.ngettext(message.id[0], message.id[1], 5) == (
                    message.string[-1] if len(message.string) > 1 else message.string[0]
                ), f"{name}: stale .mo"


def test_placeholders_are_unique_tokens():
    assert len(set(PLACEHOLDERS.values())) == len(PLACEHOLDERS)
    assert all(re.fullmatch(r"%%FEEDPUB_[A-Z_]+%%", token) for token in PLACEHOLDERS.values())
