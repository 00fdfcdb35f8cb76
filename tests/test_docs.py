"""The README stays true: every command and option, every lint code, every module it names.

The rules, so that a failure says what to write:

- Each command of ``feedpub`` without subcommands (``build``, ``digest send``,
  ``subscribers add``, …) has a README heading that starts with
  ``feedpub <command>`` in backticks, and each of its long options appears in
  that section's text (from its heading to the next heading). The options of
  ``feedpub`` itself (``--site``, ``--version``) appear in the introduction of
  ``## Commands``. Every such heading names a real command, and every option in
  it is an option of that command.
- Every code in :data:`feedpub.lint.CODES` is a row of the lint-code table, with
  its severity, and the table has no other code.
- Every ``*.py`` path the README names is a file (relative to the package, or to
  the repository), every ``feedpub/<package>/`` is a package, and every
  ``from feedpub… import …`` in its Python examples imports. The module map
  lists each top-level module and package of ``feedpub/``.
- The README opens with two commands: the main job on embedded defaults, which
  must work in an empty folder, and the tests, as ``.ci/run`` runs them.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from feedpub.cli import main
from feedpub.lint import CODES

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "feedpub"
README = (REPO / "README.md").read_text(encoding="utf-8")


# --- reading Markdown ---------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    level: int
    title: str
    text: str
    """From the heading line to the next heading of any level."""


@dataclass(frozen=True)
class CodeBlock:
    info: str
    body: str
    before_first_chapter: bool
    """Above the first ``##`` heading: what a reader sees first."""


def prose_lines(markdown: str) -> Iterator[tuple[str, bool]]:
    """Each line, and whether it is inside a fenced code block (where ``#`` is a comment)."""
    fence: str | None = None
    for line in markdown.splitlines():
        marker = line.lstrip()[:3]
        if fence is None and marker in ("```", "~~~"):
            fence = marker
            yield line, True
        elif fence is not None:
            if marker == fence:
                fence = None
            yield line, True
        else:
            yield line, False


def headings(markdown: str) -> list[Heading]:
    found: list[tuple[int, str, list[str]]] = []
    for line, in_code in prose_lines(markdown):
        match = None if in_code else re.match(r"(#{1,6})\s+(.*?)\s*$", line)
        if match:
            found.append((len(match[1]), match[2], [line]))
        elif found:
            found[-1][2].append(line)
    return [Heading(level, title, "\n".join(lines)) for level, title, lines in found]


def code_blocks(markdown: str) -> list[CodeBlock]:
    blocks: list[CodeBlock] = []
    info: str | None = None
    body: list[str] = []
    seen_chapter = False
    for line, in_code in prose_lines(markdown):
        if not in_code:
            seen_chapter = seen_chapter or line.startswith("## ")
        elif info is None:
            info, body = line.lstrip()[3:].strip(), []
        elif line.lstrip()[:3] in ("```", "~~~"):
            blocks.append(CodeBlock(info, "\n".join(body), not seen_chapter))
            info = None
        else:
            body.append(line)
    return blocks


def table_rows(text: str, header: tuple[str, ...]) -> list[list[str]]:
    """The rows of the first table in ``text`` whose header row is ``header``."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if tuple(cell.strip() for cell in line.strip().strip("|").split("|")) == header:
            rows = []
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"README.md has no table with the header {' | '.join(header)}")


def chapter(title: str) -> Heading:
    matches = [h for h in headings(README) if h.title == title]
    assert len(matches) == 1, f"README.md should have one heading {title!r}"
    return matches[0]


# --- the command line -----------------------------------------------------------


def walk(
    command: click.Command, path: tuple[str, ...] = (), parent: click.Context | None = None
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``command``, loading the lazily imported ones as ``feedpub`` does."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1] if path else "feedpub", parent=parent)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None, f"feedpub {' '.join((*path, name))} does not load"
            yield from walk(sub, (*path, name), ctx)


COMMANDS = dict(walk(main))
DOCUMENTED = {
    path: command for path, command in COMMANDS.items()
    if not isinstance(command, click.Group) or not path
}
"""Commands a user runs: every leaf, and ``feedpub`` itself for its global options."""


def long_options(command: click.Command) -> list[str]:
    return [
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
    ]


def mentions(text: str, option: str) -> bool:
    """``--now`` in the text, and not only as part of ``--nowhere``."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def command_words(title: str) -> tuple[str, ...] | None:
    """``feedpub digest send [--now ISO]`` -> ("digest", "send"); None for other headings."""
    words = title.replace("`", "").split()
    if not words or words[0] != "feedpub":
        return None
    path: list[str] = []
    for word in words[1:]:
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        path.append(word)
    return tuple(path) or None


COMMAND_HEADINGS = [
    (words, heading) for heading in headings(README)
    if (words := command_words(heading.title)) is not None
]


def section_of(path: tuple[str, ...]) -> str:
    if not path:
        intro = chapter("Commands")
        return intro.text
    matches = [heading.text for words, heading in COMMAND_HEADINGS if words == path]
    name = " ".join(("feedpub", *path))
    assert matches, f"README.md has no section for `{name}`: add a heading `{name} [OPTIONS]`"
    assert len(matches) == 1, f"README.md has {len(matches)} sections for `{name}`"
    return matches[0]


def command_id(path: tuple[str, ...]) -> str:
    return " ".join(path) or "feedpub"


@pytest.mark.parametrize("path", list(DOCUMENTED), ids=command_id)
def test_every_command_has_a_readme_section(path: tuple[str, ...]) -> None:
    assert section_of(path)


@pytest.mark.parametrize(
    ("path", "option"),
    [(path, option) for path, command in DOCUMENTED.items() for option in long_options(command)],
    ids=lambda value: command_id(value) if isinstance(value, tuple) else value,
)
def test_every_option_is_in_its_command_section(path: tuple[str, ...], option: str) -> None:
    name = " ".join(("feedpub", *path))
    assert mentions(section_of(path), option), (
        f"`{name} {option}` is not described in its README section; say what it does, "
        "with an example"
    )


@pytest.mark.parametrize(
    "heading", [heading for _, heading in COMMAND_HEADINGS], ids=lambda heading: heading.title
)
def test_every_command_heading_names_a_real_command_and_options(heading: Heading) -> None:
    path = command_words(heading.title)
    assert path in COMMANDS, f"README.md documents {heading.title}, which feedpub lacks"
    known = long_options(COMMANDS[path])
    for option in re.findall(r"--[\w-]+", heading.title):
        assert option in known, f"{heading.title}: feedpub has no option {option} there"


@pytest.mark.parametrize(
    ("path", "option"),
    [(path, option) for path, command in COMMANDS.items() for option in long_options(command)],
    ids=lambda value: command_id(value) if isinstance(value, tuple) else value,
)
def test_every_option_explains_itself_in_help(path: tuple[str, ...], option: str) -> None:
    [param] = [p for p in COMMANDS[path].params if option in (*p.opts, *p.secondary_opts)]
    assert isinstance(param, click.Option) and param.help, (
        f"feedpub {' '.join(path)} {option} has no help text"
    )


@pytest.mark.parametrize("path", list(COMMANDS), ids=command_id)
def test_every_command_explains_itself_in_help(path: tuple[str, ...]) -> None:
    command = COMMANDS[path]
    assert command.help and command.get_short_help_str(), f"{command_id(path)} has no help text"


# --- lint codes -------------------------------------------------------------------


def lint_table() -> dict[str, str]:
    rows = table_rows(chapter("Checking posts before they go out").text,
                      ("code", "severity", "what"))
    return {row[0].strip("`"): row[1] for row in rows}


@pytest.mark.parametrize("code", list(CODES))
def test_every_lint_code_is_in_the_readme_table(code: str) -> None:
    table = lint_table()
    assert code in table, f"lint code {code} is missing from README.md's table"
    assert table[code] == CODES[code], f"README.md says {code} is {table[code]}"


def test_the_lint_table_names_only_codes_the_linter_has() -> None:
    assert set(lint_table()) <= set(CODES)


# --- modules ------------------------------------------------------------------------

PY_PATH = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.py)(?![\w.])")
PACKAGE_PATH = re.compile(r"`(feedpub/(?:\w+/)+)`")
IMPORT = re.compile(
    r"^[ \t]*from[ \t]+(feedpub[\w.]*)[ \t]+import[ \t]+(?:\(([^)]*)\)|([^\n#]*))", re.MULTILINE
)


def module_references() -> list[str]:
    """Every ``*.py`` and ``feedpub/<package>/`` the README names, each once."""
    found = PY_PATH.findall(README) + PACKAGE_PATH.findall(README)
    return list(dict.fromkeys(found))


def resolve(reference: str) -> Path | None:
    candidates = (
        [REPO / reference] if reference.startswith("feedpub/")
        else [PACKAGE / reference, REPO / reference]
    )
    for candidate in candidates:
        if reference.endswith("/") and (candidate / "__init__.py").is_file():
            return candidate
        if not reference.endswith("/") and candidate.is_file():
            return candidate
    return None


@pytest.mark.parametrize("reference", module_references())
def test_every_module_the_readme_names_exists(reference: str) -> None:
    assert resolve(reference) is not None, (
        f"README.md names {reference}, which is not in feedpub/ or the repository"
    )


def python_imports() -> list[tuple[str, str]]:
    return [
        (module, name.strip())
        for block in code_blocks(README) if block.info == "python"
        for module, in_parentheses, on_the_line in IMPORT.findall(block.body)
        for name in (in_parentheses or on_the_line).split(",") if name.strip()
    ]


@pytest.mark.parametrize(("module", "name"), python_imports())
def test_every_import_in_the_readme_examples_works(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"{module} has no {name}"


def package_modules() -> list[str]:
    """The top-level modules and packages of feedpub, as the module map names them."""
    modules = [f"feedpub/{path.name}" for path in PACKAGE.glob("*.py")
               if path.name not in ("__init__.py", "__main__.py")]
    packages = [f"feedpub/{path.parent.name}/" for path in PACKAGE.glob("*/__init__.py")]
    return sorted(modules + packages)


@pytest.mark.parametrize("module", package_modules())
def test_the_module_map_lists_every_module(module: str) -> None:
    rows = table_rows(chapter("Module map").text, ("module", "its one job"))
    listed = [row[0].strip("`") for row in rows]
    assert module in listed, f"README.md's module map lacks `{module}`: add a row for it"


@pytest.fixture
def fresh_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder as the current one, and no FEEDPUB_* variables."""
    for key in [key for key in os.environ if key.startswith("FEEDPUB_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_python_example_runs_on_a_new_site(
    fresh_machine: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [example] = [block.body for block in code_blocks(chapter("Using it from Python").text)
                 if block.info == "python"]
    assert CliRunner().invoke(main, ["init", "mysite"]).exit_code == 0
    exec(compile(example, "README.md (Using it from Python)", "exec"), {})
    assert "Hello, feeds 👋 https://example.com/" in capsys.readouterr().out


def test_the_module_map_checks_something() -> None:
    references = module_references()
    assert "feedpub/content.py" in references and "feedpub/web/" in references
    assert resolve("web.py") is None and resolve("feedpub/nothing/") is None
    assert resolve("web/app.py") == PACKAGE / "web" / "app.py"


# --- the first two commands ---------------------------------------------------------


def opening_commands() -> list[list[str]]:
    """The ``&&``-joined commands of the code blocks above the first chapter."""
    opening = [block for block in code_blocks(README) if block.before_first_chapter]
    assert len(opening) == 2, "README.md should open with two commands: the main job, the tests"
    for block in opening:
        assert block.info == "sh" and len(block.body.splitlines()) == 1, block.body
    return [[part.strip() for part in block.body.split("&&")] for block in opening]


def pip_install_target(command: str) -> list[str]:
    """``python -m pip install -q -e '.[test]'`` -> ['-e', '.[test]']."""
    words = shlex.split(command)
    assert "install" in words and words[0] in ("pip", "python", "python3"), command
    rest = words[words.index("install") + 1:]
    return [word for word in rest if word not in ("-q", "--quiet", "--upgrade", "-U")]


def test_the_first_command_runs_the_main_job_in_an_empty_folder(fresh_machine: Path) -> None:
    install, *steps = opening_commands()[0]
    assert pip_install_target(install) == ["."]
    assert [shlex.split(step)[0] for step in steps] == ["feedpub"] * len(steps)
    for step in steps:
        result = CliRunner().invoke(main, shlex.split(step)[1:], catch_exceptions=False)
        assert result.exit_code == 0, f"{step}\n{result.output}"
    [site] = [path.parent for path in fresh_machine.glob("*/feedpub.toml")]
    assert (site / "public" / "atom.xml").stat().st_size > 0


def test_the_second_command_runs_the_tests_as_ci_does() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    [ci_tests] = [line.strip() for line in ci if re.match(r"\s*python3? -m pytest\b", line)]
    [ci_install] = [line.strip() for line in ci if re.search(r"\bpip install\b.*-e\b", line)]
    *installs, run_tests = opening_commands()[1]
    assert run_tests == ci_tests
    assert [pip_install_target(command) for command in installs] == [pip_install_target(ci_install)]
