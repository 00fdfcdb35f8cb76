"""`feedpub admin`: the operator's dashboard at /admin of `feedpub serve`."""

from __future__ import annotations

import sys

import click

from feedpub.cli._common import main, settings_from


@main.group()
def admin() -> None:
    """Look after the dashboard at /admin of `feedpub serve`.

    The dashboard is off until a password is set.
    """


@admin.command("set-password")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input instead of "
                   "asking for it (for scripts).")
@click.option("--print", "print_only", is_flag=True,
              help="Print the hash instead of writing it into feedpub.toml, e.g. for "
                   "FEEDPUB_ADMIN_PASSWORD_HASH.")
@click.pass_context
def set_password(ctx: click.Context, password_stdin: bool, print_only: bool) -> None:
    """Set the password of /admin: its Argon2 hash goes into [admin] password_hash
    of feedpub.toml (the password itself is kept nowhere). Restart `feedpub serve`
    to use it.

    \b
        feedpub admin set-password
        printf '%s\\n' "$PASSWORD" | feedpub admin set-password --password-stdin
        export FEEDPUB_ADMIN_PASSWORD_HASH="$(feedpub admin set-password --print)"
    """
    from feedpub.admin_password import hash_password, store_password_hash

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New admin password", hide_input=True,
                                confirmation_prompt=True, err=True)
    password_hash = hash_password(password)
    if print_only:
        click.echo(password_hash)
        return
    settings = settings_from(ctx)
    store_password_hash(settings.config_path, password_hash)
    click.echo(f"{settings.config_path}: the admin password is set; "
               f"log in at /admin as {settings.admin.user!r}")
