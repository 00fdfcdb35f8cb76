"""``feedpub check``: the linter, before any subscriber sees a post."""

from __future__ import annotations

import json

import click

from feedpub.cli._common import NOW_OPTION, is_interactive, main, parse_now, settings_from
from feedpub.progress import progress_bar

_FIXABLE = ("repeated-text", "template-syntax")
"""feedpub.fix.FIXABLE, spelt out so `check --help` does not import the fixer."""


def _codes(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    codes = tuple(code.strip() for value in values for code in value.split(",") if code.strip())
    unknown = [code for code in codes if code not in _FIXABLE]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: --fix repairs only {', '.join(_FIXABLE)}", ctx, param
        )
    return codes


@main.command()
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one line per finding and a summary; json: a list of findings.",
)
@click.option("--strict", is_flag=True, help="Warnings fail the check too (exit status 1).")
@click.option("--fix", is_flag=True,
              help="Repair what can be repaired for certain (text doubled by an export, "
                   "Jekyll and Hugo leftovers), writing each post atomically, then report "
                   "what is left.")
@click.option("--diff", is_flag=True,
              help="Print a unified diff of what --fix would change; write nothing.")
@click.option("--select", "select", multiple=True, callback=_codes, metavar="CODE",
              help="With --fix or --diff: repair only these codes (repeat it, or "
                   f"separate with commas): {', '.join(_FIXABLE)}.")
@NOW_OPTION
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Processes that render posts not yet in the catalog's cache "
                   "(default: one per core).")
@click.pass_context
def check(
    ctx: click.Context, output_format: str, strict: bool, fix: bool, diff: bool,
    select: tuple[str, ...], now: str | None, jobs: int | None,
) -> None:
    """Find what would embarrass you in a feed or an inbox: posts the build cannot
    read, duplicate slugs, text doubled by an export tool, Liquid or Hugo syntax,
    missing images, links without text, math that will show as raw TeX, posts
    too large for Gmail. Drafts and future posts are listed as info.

    \b
    Each finding is one line an editor can jump to:
        content/posts/2025-02-11-llms.md:13:21: warning repeated-text: …
    then a summary: "3 errors, 5 warnings in 42 posts".

    \b
    --fix repairs what it can prove (a heading said twice by a Notion export,
    {{ site.baseurl }}, {% highlight %}, {{< figure >}}, …), one line per fix,
    then reports what is left; front matter and every other byte stay as they
    were. --diff shows the same repairs as a diff and writes nothing.

    \b
    Exit status: 0 clean (warnings allowed), 1 errors found (with --strict,
    warnings too), 2 bad usage or configuration.

    \b
    Examples:
        feedpub check
        feedpub check --strict                  # in CI: warnings fail too
        feedpub check --format json | jq '.[] | select(.severity == "error")'
        feedpub check --diff                    # what --fix would change
        feedpub check --fix --select template-syntax
    """
    if fix and diff:
        raise click.UsageError("use --fix or --diff, not both")
    if select and not (fix or diff):
        raise click.UsageError("--select chooses what --fix or --diff repairs: add one of them")
    settings = settings_from(ctx)
    with progress_bar("Checking", enabled=is_interactive()) as progress:
        if fix or diff:
            from feedpub.fix import fix_site, iter_messages

            run = fix_site(settings, parse_now(now), select=select or None, write=fix,
                           jobs=jobs, progress=progress)  # fmt: skip
            report = run.report
        else:
            from feedpub.catalog import lint_site

            report = lint_site(settings, parse_now(now), jobs=jobs, progress=progress)
    if diff:
        for post_fix in run.fixes:
            click.echo(post_fix.diff(), nl=False)
        click.echo(_fixed_summary(run.edits, len(run.fixes), would=True), err=True)
        ctx.exit(1 if report.failed(strict=strict) else 0)
    if fix:
        json_output = output_format == "json"
        for message in iter_messages(run.fixes):
            click.echo(message, err=json_output)
        click.echo(_fixed_summary(run.edits, len(run.fixes), would=False), err=json_output)
    if output_format == "json":
        findings = [finding.to_json() for finding in report.findings]
        click.echo(json.dumps(findings, ensure_ascii=False, indent=2))
    else:
        for finding in report.findings:
            click.echo(
                f"{finding.path}:{finding.line}:{finding.column}: "
                f"{finding.severity} {finding.code}: {finding.message}"
            )
        click.echo(report.summary())
    ctx.exit(1 if report.failed(strict=strict) else 0)


def _fixed_summary(edits: int, posts: int, *, would: bool) -> str:
    fixes = f"{edits} fix{'' if edits == 1 else 'es'}"
    where = f"{posts} post{'' if posts == 1 else 's'}"
    if would:
        return f"--fix would make {fixes} in {where}" if edits else "nothing to fix"
    return f"made {fixes} in {where}" if edits else "nothing to fix"
