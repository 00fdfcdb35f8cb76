"""``feedpub check``: the linter, before any subscriber sees a post."""

from __future__ import annotations

import json

import click

from feedpub.catalog import lint_site
from feedpub.cli._common import NOW_OPTION, is_interactive, main, parse_now, settings_from
from feedpub.progress import progress_bar


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
@NOW_OPTION
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Processes that render posts not yet in the catalog's cache "
                   "(default: one per core).")
@click.pass_context
def check(
    ctx: click.Context, output_format: str, strict: bool, now: str | None, jobs: int | None
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
    Exit status: 0 clean (warnings allowed), 1 errors found (with --strict,
    warnings too), 2 bad usage or configuration.

    \b
    Examples:
        feedpub check
        feedpub check --strict                  # in CI: warnings fail too
        feedpub check --format json | jq '.[] | select(.severity == "error")'
    """
    settings = settings_from(ctx)
    with progress_bar("Checking", enabled=is_interactive()) as progress:
        report = lint_site(settings, parse_now(now), jobs=jobs, progress=progress)
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
