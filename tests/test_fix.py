"""feedpub.fix: the certain repairs of ``check --fix``, and everything they must leave.

Every fixture is written here (Notion exports, Jekyll and Hugo leftovers, ugly
seams); each fixed post is compared, through the one Markdown renderer, with what
an author would have written by hand. ``test_fixture_counts`` keeps the tally the
issue asks for: fixed, left as findings, false fixes (none).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedpub.catalog import load_catalog
from feedpub.fix import FIXABLE, PostFix, SiteLinks, fix_post, fix_site, plan_site
from feedpub.markup import render_markdown
from feedpub.store import Mode, open_store
from tests.conftest import SiteFactory
from tests.test_digest import MONDAY_9, T0, kinds, post, site_config, subscribe

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FRONT = '---\ntitle: "Post"\ndate: 2025-02-11 10:00:00 +0800\ncategories: [\'Notion\']\n---\n'
BODY_LINE = 6
LINKS = SiteLinks(
    "https://example.com/blog/",
    {
        "posts/2020-01-01-hello.md": "https://example.com/blog/2020/01/01/hello/",
        "posts/2021-05-05-bundle/index.md": "https://example.com/blog/2021/05/05/bundle/",
        "posts/2019-01-01-same.md": "https://example.com/blog/2019/01/01/same/",
        "notes/2019-01-01-same.md": "https://example.com/blog/2019/01/01/same-note/",
    },
)


def fixed(body: str, *, front: str = FRONT, links: SiteLinks = LINKS, **options: object) -> str:
    result = fix_post(
        (front + body).encode(), source="content/posts/x.md",
        body_line=front.count("\n") + 1, links=links, **options,  # type: ignore[arg-type]
    )
    text = result.after.decode()
    assert text.startswith(front)
    return text[len(front):]


def html(body: str) -> str:
    return render_markdown(body, base_url="https://example.com/blog/p/", id_prefix="p-")


def assert_renders_like(body: str, by_hand: str) -> None:
    result = fixed(body)
    assert html(result) == html(by_hand), result
    assert html(result) != html(body)


# --- Notion's doubling ----------------------------------------------------------------

NOTION = """\
📌 文章來源：Simon’s Blog[Simon’s Blog](https://simonwillison.net/2024/)📌 文章來源：Simon’s Blog[Simon’s Blog](https://simonwillison.net/2024/)

---

### 🚀 GPT-4 的門檻被徹底突破🚀 GPT-4 的門檻被徹底突破

隨著技術進步，GPT-4 級別的模型已不再是高不可攀的門檻，許多公司都能開發類似的模型。隨著技術進步，GPT-4 級別的模型已不再是高不可攀的門檻，許多公司都能開發類似的模型。

### 一、背景一、背景

- 視覺識別技術 已經成熟，許多模型能夠理解和處理影像資訊。 已經成熟，許多模型能夠理解和處理影像資訊。視覺識別技術 已經成熟，許多模型能夠理解和處理影像資訊。 已經成熟，許多模型能夠理解和處理影像資訊。
- 變好：隨著模型的優化，計算資源的需求降低，減少了碳排放。：隨著模型的優化，計算資源的需求降低，減少了碳排放。變好：隨著模型的優化，計算資源的需求降低，減少了碳排放。：隨著模型的優化，計算資源的需求降低，減少了碳排放。
- **Apple MLX**，一個新的機器學習庫，獲得了開發者的高度評價。，一個新的機器學習庫，獲得了開發者的高度評價。

## Blog[Blog](https://example.org/)Blog[Blog](https://example.org/)

Things we learned about LLMs in 2024 👩‍💻Things we learned about LLMs in 2024 👩‍💻

1. 🇨🇳 最佳的模型可能很便宜🇨🇳 最佳的模型可能很便宜
2. Call `llm --version` first.Call `llm --version` first.

> 引用的段落也被重複了一次。引用的段落也被重複了一次。

Rage, rage against the dying of the light.
Rage, rage against the dying of the light.

對不起對不起對不起對不起

如果想要深入了解更多文章。。如果想要深入了解更多文章。。如果想要深入了解更多文章。。

```text
code code code codecode code code code
```
"""  # noqa: E501 (an export's lines are long)

NOTION_BY_HAND = """\
📌 文章來源：Simon’s Blog[Simon’s Blog](https://simonwillison.net/2024/)

---

### 🚀 GPT-4 的門檻被徹底突破

隨著技術進步，GPT-4 級別的模型已不再是高不可攀的門檻，許多公司都能開發類似的模型。

### 一、背景

- 視覺識別技術 已經成熟，許多模型能夠理解和處理影像資訊。
- 變好：隨著模型的優化，計算資源的需求降低，減少了碳排放。
- **Apple MLX**，一個新的機器學習庫，獲得了開發者的高度評價。

## Blog[Blog](https://example.org/)

Things we learned about LLMs in 2024 👩‍💻

1. 🇨🇳 最佳的模型可能很便宜
2. Call `llm --version` first.

> 引用的段落也被重複了一次。

Rage, rage against the dying of the light.
Rage, rage against the dying of the light.

對不起對不起對不起對不起

如果想要深入了解更多文章。。如果想要深入了解更多文章。。如果想要深入了解更多文章。。

```text
code code code codecode code code code
```
"""


def test_a_notion_export_comes_out_with_each_block_once() -> None:
    result = fixed(NOTION)
    # Each doubled block once; the poem's repeated line, the four-fold refrain, the
    # tripled paragraph and the code stay exactly as they were.
    assert result == NOTION_BY_HAND
    assert html(result) == html(NOTION_BY_HAND)


def test_the_fixed_notion_post_renders_like_the_hand_written_one_with_crlf_and_bom() -> None:
    front = FRONT.replace("\n", "\r\n")
    data = b"\xef\xbb\xbf" + (front + NOTION.replace("\n", "\r\n")).encode()
    result = fix_post(data, source="content/posts/x.md", body_line=BODY_LINE, links=LINKS)
    assert result.after.startswith(b"\xef\xbb\xbf" + front.encode())
    assert result.after == b"\xef\xbb\xbf" + (front + NOTION_BY_HAND.replace("\n", "\r\n")).encode()
    body = result.after.decode("utf-8-sig").replace("\r\n", "\n")[len(FRONT):]
    assert html(body) == html(NOTION_BY_HAND)


def test_a_missing_final_newline_stays_missing() -> None:
    result = fixed("### 一段重要的標題文字一段重要的標題文字")
    assert result == "### 一段重要的標題文字"


@pytest.mark.parametrize(
    "body",
    [
        "Ha ha. Ha ha.\n",  # a refrain, with a space between
        "Hello Hello Hello Hello world.\n",
        "對不起對不起\n",  # short, and alone in the post: could be said on purpose
        "la la\n",
        "`print(1)``print(1)`\n",  # code
        "The `same thing twice``same thing twice` example.\n",
        "Rage against the light.\nRage against the light.\n",  # a poem over two lines
        "    indented code indented codeindented code indented code\n",
        "<div>Raw HTML said twice.Raw HTML said twice.</div>\n",
        "- Motto: Never give up, never. Never give up, never.\n",  # no export around it
        "*Emphasis opens here*Emphasis opens here\n",  # the copies would not read alike
    ],
)
def test_what_is_not_certainly_doubled_is_left(body: str) -> None:
    assert fixed(body) == body


def test_a_short_doubling_is_fixed_in_an_export_and_left_alone_elsewhere() -> None:
    export = (
        "### 一、背景一、背景\n\nA long enough paragraph here.A long enough paragraph here.\n\n"
        "Another one that doubled.Another one that doubled.\n\n對不起對不起\n"
    )
    assert fixed(export) == (
        "### 一、背景\n\nA long enough paragraph here.\n\nAnother one that doubled.\n\n對不起\n"
    )
    assert fixed("Just one post.\n\n對不起對不起\n") == "Just one post.\n\n對不起對不起\n"


def test_a_doubled_line_next_to_a_deliberate_refrain() -> None:
    body = (
        "Sing it again.\n\nSing it again.\n\n"
        "Sing it again, once more.Sing it again, once more.\n"
    )
    # The doubled line is fixed; the refrain before it (two blocks) is the author's.
    assert_renders_like(body, "Sing it again.\n\nSing it again.\n\nSing it again, once more.\n")


def test_emoji_at_the_seam() -> None:
    assert_renders_like("## 🎉 Party time 🎉🎉 Party time 🎉\n", "## 🎉 Party time 🎉\n")
    assert_renders_like("A family photo 👨‍👩‍👧A family photo 👨‍👩‍👧\n\nok\n",
                        "A family photo 👨‍👩‍👧\n\nok\n")
    # Doubling only as code points, inside one emoji: not a reader's doubling.
    flags = "🇺🇸🇺🇸\n"
    assert fixed(flags) == flags


def test_cjk_without_spaces() -> None:
    assert_renders_like(
        "第一段沒有空格的中文內容第一段沒有空格的中文內容\n", "第一段沒有空格的中文內容\n"
    )
    assert_renders_like("日本語の見出しです日本語の見出しです\n", "日本語の見出しです\n")


def test_doubled_link_labels() -> None:
    assert_renders_like(
        "Blog[Blog](https://example.org/a)Blog[Blog](https://example.org/a)\n",
        "Blog[Blog](https://example.org/a)\n",
    )


# --- Jekyll ------------------------------------------------------------------------------------

JEKYLL = """\
Read [the first post]({{ site.baseurl }}{% post_url 2020-01-01-hello %}) or
[the bundle]({% post_url 2021-05-05-bundle %}).

![A chart]({{ '/img/chart.png' | relative_url }})

Absolute: {{ "/feed.xml" | absolute_url }} and {{ site.url }}{{ site.baseurl }}/about/.

{% highlight python linenos %}
def greet(name):
    # a comment, not a heading
    return f"{{ name }}"
{% endhighlight %}

{% raw %}
Liquid looks like `{{ this }}`.
{% endraw %}

{% include footer.html %} {% post_url 2099-01-01-nothing %} {% post_url 2019-01-01-same %}
{{ page.title }} {{- site.url -}}
"""

JEKYLL_BY_HAND = """\
Read [the first post](/blog/2020/01/01/hello/) or
[the bundle](/blog/2021/05/05/bundle/).

![A chart](/blog/img/chart.png)

Absolute: https://example.com/blog/feed.xml and https://example.com/blog/about/.

```python
def greet(name):
    # a comment, not a heading
    return f"{{ name }}"
```

Liquid looks like `{{ this }}`.

{% include footer.html %} {% post_url 2099-01-01-nothing %} {% post_url 2019-01-01-same %}
{{ page.title }} {{- site.url -}}
"""


def test_jekyll_leftovers_become_markdown() -> None:
    result = fixed(JEKYLL)
    assert result == JEKYLL_BY_HAND
    assert html(result) == html(JEKYLL_BY_HAND)
    assert '<span style="color:#008000;font-weight:bold">def</span>' in html(result)


def test_highlight_options_are_dropped_with_a_note() -> None:
    result = fix_post((FRONT + JEKYLL).encode(), source="content/posts/x.md",
                      body_line=BODY_LINE, links=LINKS)
    notes = [edit.message for edit in result.edits if "fenced" in edit.message]
    assert notes and "options dropped: linenos" in notes[0]


def test_a_highlight_that_does_not_stand_alone_is_left() -> None:
    body = "Text before\n{% highlight ruby %}\nputs 1\n{% endhighlight %}\n"
    assert fixed(body) == body
    unclosed = "{% highlight ruby %}\nputs 1\n"
    assert fixed(unclosed) == unclosed


def test_a_code_fence_inside_a_highlight_gets_a_longer_fence() -> None:
    body = "{% highlight markdown %}\n```\nx\n```\n{% endhighlight %}\n"
    assert fixed(body) == "````markdown\n```\nx\n```\n````\n"


def test_a_site_at_the_root_has_an_empty_baseurl() -> None:
    root = SiteLinks("https://example.com/", {"posts/2020-01-01-hello.md":
                                              "https://example.com/2020/01/01/hello/"})
    body = "[a]({{ site.baseurl }}{% post_url 2020-01-01-hello %}) {{ site.baseurl }}/x.png\n"
    assert fixed(body, links=root) == "[a](/2020/01/01/hello/) /x.png\n"


# --- Hugo ----------------------------------------------------------------------------------------

HUGO = """\
{{< figure src="cat.jpg" alt="A cat on a mat" caption="Our cat, 2020" >}}

{{< figure src="dog.jpg" alt="A dog" >}}

{{< figure src="fox.jpg" caption="A fox" link="https://example.org/fox" >}}

{{< highlight go "linenos=table,hl_lines=2" >}}
package main
{{< /highlight >}}

See {{< ref "2020-01-01-hello" >}}, [the bundle]({{< relref "posts/2021-05-05-bundle" >}})
and [home]({{< baseurl >}}/about/).

{{< youtube w7Ft2ymGmfc >}} {{< ref "nowhere" >}} {{< ref "2019-01-01-same" >}}

{{< figure src="x.jpg" width="300" >}}
"""

HUGO_BY_HAND = """\
<figure>
<img src="cat.jpg" alt="A cat on a mat">
<figcaption>Our cat, 2020</figcaption>
</figure>

![A dog](dog.jpg)

<figure>
<a href="https://example.org/fox"><img src="fox.jpg" alt="A fox"></a>
<figcaption>A fox</figcaption>
</figure>

```go
package main
```

See https://example.com/blog/2020/01/01/hello/, [the bundle](/blog/2021/05/05/bundle/)
and [home](https://example.com/blog/about/).

{{< youtube w7Ft2ymGmfc >}} {{< ref "nowhere" >}} {{< ref "2019-01-01-same" >}}

{{< figure src="x.jpg" width="300" >}}
"""


def test_hugo_leftovers_become_markdown() -> None:
    result = fixed(HUGO)
    assert result == HUGO_BY_HAND
    assert html(result) == html(HUGO_BY_HAND)
    assert "<figcaption>Our cat, 2020</figcaption>" in html(result)


@pytest.mark.parametrize(
    "body",
    [
        '{{< figure src="a b.jpg" alt="x" >}}\n',
        '{{< figure src="a.jpg" caption="*Markdown* caption" >}}\n',
        'Inline {{< figure src="a.jpg" caption="Cap" >}} in a sentence.\n',
        '{{< figure src="javascript:alert(1)" alt="x" >}}\n',
        '{{< ref "x.md#anchor" >}}\n',
        '{{< ref "2020-01-01-hello" %}}\n',
    ],
)
def test_hugo_shortcodes_that_are_not_certain_are_left(body: str) -> None:
    assert fixed(body) == body


def test_select_fixes_only_some_kinds() -> None:
    body = "### 一段重要的標題文字一段重要的標題文字\n\n{{ site.url }}\n"
    assert fixed(body, select=["template-syntax"]) == (
        "### 一段重要的標題文字一段重要的標題文字\n\nhttps://example.com\n"
    )
    assert fixed(body, select=["repeated-text"]) == "### 一段重要的標題文字\n\n{{ site.url }}\n"


def test_files_that_cannot_be_placed_for_certain_are_left_whole() -> None:
    body = "### 一段重要的標題文字一段重要的標題文字\r"
    data = (FRONT + body + "x\n").encode()
    result = fix_post(data, source="p.md", body_line=BODY_LINE, links=LINKS)
    assert not result.changed and result.left


# --- properties ----------------------------------------------------------------------------------

_PIECES = st.sampled_from([
    "### 一、背景一、背景", "Hello world, again.Hello world, again.", "Ha ha. Ha ha.",
    "- 變好：隨著模型的優化而降低。：隨著模型的優化而降低。", "- plain item",
    "{{ site.url }}/x", "{% raw %}{{ y }}{% endraw %}", "{% include a.html %}",
    "{% highlight c %}", "{% endhighlight %}", "{{< figure src=\"a.png\" alt=\"A\" >}}",
    "```", "`code``code`", "> 引用的段落重複。引用的段落重複。", "", "🎉🎉", "對不起對不起",
    "Blog[Blog](https://e.org/)Blog[Blog](https://e.org/)", "{{< ref \"2020-01-01-hello\" >}}",
    "1. 第一項第一項第一項第一項", "    indented", "---",
])


@st.composite
def posts(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_PIECES, max_size=14))
    free = draw(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
                         max_size=3))
    lines += free
    draw(st.randoms()).shuffle(lines)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    bom = draw(st.booleans())
    return (b"\xef\xbb\xbf" if bom else b"") + (FRONT.replace("\n", newline) + text).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(posts())
def test_fixing_twice_changes_nothing_the_second_time(data: bytes) -> None:
    once = fix_post(data, source="p.md", body_line=BODY_LINE, links=LINKS)
    twice = fix_post(once.after, source="p.md", body_line=BODY_LINE, links=LINKS)
    assert twice.after == once.after


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(posts())
def test_bytes_outside_the_fixed_spans_are_kept(data: bytes) -> None:
    result = _one_pass(data)
    before = data.removeprefix(b"\xef\xbb\xbf").decode()
    after = result.after.removeprefix(b"\xef\xbb\xbf").decode()
    assert result.after.startswith(b"\xef\xbb\xbf") == data.startswith(b"\xef\xbb\xbf")
    # Walk the edits: what is between them is byte for byte the original.
    position = shift = 0
    for edit in sorted(result.edits, key=lambda e: e.start):
        assert after[position + shift : edit.start + shift] == before[position : edit.start]
        replacement = edit.replacement.replace("\n", "\r\n" if "\r\n" in before else "\n")
        shift += len(replacement) - (edit.end - edit.start)
        position = edit.end
    assert after[position + shift :] == before[position:]
    front = FRONT.replace("\n", "\r\n") if "\r\n" in before else FRONT
    assert after.startswith(front) and before.startswith(front)
    assert all(edit.start >= len(front) for edit in result.edits)


def _one_pass(data: bytes) -> PostFix:
    """The first pass alone, so each edit's span is in the original text."""
    import feedpub.fix as fix_module

    passes = fix_module._PASSES
    fix_module._PASSES = 1
    try:
        return fix_post(data, source="p.md", body_line=BODY_LINE, links=LINKS)
    finally:
        fix_module._PASSES = passes


# --- the site: ids, permalinks, digests ---------------------------------------------------


def test_fixing_keeps_id_and_permalink_and_the_digest_does_not_mail_it_again(
    make_site: SiteFactory, tmp_path: Path
) -> None:
    body = "### 一段重要的標題文字一段重要的標題文字\n\n{{ site.url }}/about/ is the page.\n"
    make_site(posts={"2025-12-20-notion.md": post("Notion", "2025-12-20 10:00:00 +0000",
                                                  body=body)},
              config=site_config())  # fmt: skip
    database = f"sqlite:///{tmp_path / 'feedpub.db'}"
    store = open_store(database)
    try:
        settings_ = make_site.settings({"FEEDPUB_SECRET": "s", "FEEDPUB_DATABASE_URL": database})
        from feedpub.digest import make_editions

        assert kinds(make_editions(settings_, store, T0)) == [("weekly", "baseline")]
        subscribe(store, "ada@example.org")
        subscribe(store, "ines@example.org", mode=Mode.INSTANT)
        before = load_catalog(settings_, T0).published
        run = fix_site(settings_, T0)
        assert run.written and [f.source for f in run.fixes] == [
            "content/posts/2025-12-20-notion.md"]
        text = (make_site.root / "content/posts/2025-12-20-notion.md").read_text()
        assert "### 一段重要的標題文字\n" in text and "https://example.com/about/" in text
        after = load_catalog(settings_, T0).published
        assert [(r.id, r.url) for r in after] == [(r.id, r.url) for r in before]
        assert kinds(make_editions(settings_, store, MONDAY_9)) == [("weekly", "empty")]
    finally:
        store.close()


def test_fix_site_reports_what_is_left_and_diff_writes_nothing(make_site: SiteFactory) -> None:
    original = FRONT + "### 一段重要的標題文字一段重要的標題文字\n\n{% include x.html %}\n"
    site = make_site({"2025-02-11-x.md": original})
    settings_ = make_site.settings()
    dry = fix_site(settings_, NOW, write=False)
    assert not dry.written and dry.edits == 1
    assert (site / "content/posts/2025-02-11-x.md").read_text() == original
    assert {f.code for f in dry.report.findings} == {"repeated-text", "template-syntax"}
    run = fix_site(settings_, NOW)
    assert [f.code for f in run.report.findings] == ["template-syntax"]
    assert fix_site(settings_, NOW).fixes == ()


def test_plan_site_names_other_posts(make_site: SiteFactory) -> None:
    make_site({
        "2020-01-01-hello.md": '---\ntitle: "Hello"\n---\nHi.\n',
        "2025-02-11-x.md": FRONT + "[hi]({% post_url 2020-01-01-hello %})\n",
    })
    catalog = load_catalog(make_site.settings(), NOW)
    (fix,) = plan_site(catalog)
    assert fix.after.decode().endswith("[hi](/2020/01/01/hello/)\n")


# --- the tally --------------------------------------------------------------------------------

FIXTURES = {"notion": (NOTION, NOTION_BY_HAND), "jekyll": (JEKYLL, JEKYLL_BY_HAND),
            "hugo": (HUGO, HUGO_BY_HAND)}


def test_fixture_counts(make_site: SiteFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """Fixed, left as findings and false fixes (a post that differs from the hand-written
    one after --fix), over the three fixtures, through the whole site."""
    posts_ = {f"2025-02-1{i}-{name}.md": FRONT + body
              for i, (name, (body, _)) in enumerate(FIXTURES.items())}
    posts_.update(_LINKED_POSTS)
    make_site(posts_, config=_SUB_PATH_SITE)
    settings_ = make_site.settings()
    found_before = [f for f in load_catalog(settings_, NOW).lint().findings if f.code in FIXABLE]
    run = fix_site(settings_, NOW)
    left = [f for f in run.report.findings if f.code in FIXABLE]
    false_fixes = 0
    for i, (name, (_, by_hand)) in enumerate(FIXTURES.items()):
        text = (make_site.root / f"content/posts/2025-02-1{i}-{name}.md").read_text()
        false_fixes += text[len(FRONT):] != by_hand
    with capsys.disabled():
        print(f"\nfixture tally: {run.edits} fixes made; {len(found_before)} findings before, "
              f"{len(left)} left; {false_fixes} false fixes")
    assert false_fixes == 0
    assert (run.edits, len(found_before), len(left)) == FIXTURE_TALLY


FIXTURE_TALLY = (29, 43, 12)
"""Fixes made (a highlight block is one), fixable findings before, left after."""
_LINKED_POSTS = {
    "2020-01-01-hello.md": '---\ntitle: "Hello"\n---\nHi.\n',
    "2021-05-05-bundle/index.md": '---\ntitle: "Bundle"\n---\nA bundle.\n',
    "2019-01-01-same.md": '---\ntitle: "Same"\n---\nOne.\n',
    "old/2019-01-01-same.md": '---\ntitle: "Same, older"\nslug: same-old\n---\nTwo.\n',
}
_SUB_PATH_SITE = """\
[site]
title = "Test Site"
url = "https://example.com/blog/"
timezone = "UTC"
author = { name = "Ada Author", email = "ada@example.com" }

[mail]
from = "Test Site <news@example.com>"
transport = "maildir:outbox"
postal_address = "1 Test Street"
"""
