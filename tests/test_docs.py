"""The documentation stays true to the repository: every relative link in README.md and docs/*.md
leads to a file that exists (and to a heading that exists, when it names one), and every
command-line option the README shows is one the real `mirrord-trace` accepts."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

MIRRORD_TRACE = str(ROOT / ".venv" / "bin" / "mirrord-trace")
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
OPTION = re.compile(r"(?<![\w/.=-])(--?[A-Za-z][\w-]*)")
# `mirrord-trace exec`, `.venv/bin/mirrord-trace ls`, `mirrord-trace sandbox up|status|down`…
INVOCATION = re.compile(
    r"(?<![\w-])mirrord-trace\s+(exec|ls|sandbox(?:\s+(?:up|status|down)(?:\|(?:up|status|down))*)?)\b"
)
# Where a command's own arguments end: the program after `--`, a pipe, a command substitution,
# another invocation, a comment.
END_OF_ARGUMENTS = re.compile(r"\s--(?:\s|$)|\||\)|\$\(|mirrord-trace|\s#")


def prose(text: str) -> str:
    """The text without code blocks and inline code, where brackets are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    found: list[str] = []
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = anchor(heading)
        # A repeated heading gets -1, -2… appended, as on GitHub.
        found.append(f"{base}-{seen[base]}" if base in seen else base)
        seen[base] = seen.get(base, 0) + 1
    return frozenset(found)


def relative_links(path: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(prose(path.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto:…
    ]


def test_the_documents_link_to_each_other() -> None:
    # The check below means little if nothing is linked at all.
    readme_targets = {link.split("#")[0] for link in relative_links(README)}
    for path in DOCUMENTS[1:]:
        assert f"docs/{path.name}" in readme_targets, f"README does not link {path.name}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_leads_to_an_existing_file_and_heading(document: Path) -> None:
    broken = []
    for link in relative_links(document):
        target, _, fragment = link.partition("#")
        destination = (document.parent / target).resolve() if target else document
        if not destination.exists():
            broken.append(f"{link}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{link}: no heading with anchor #{fragment} in {destination.name}")
    assert not broken, f"{document.name}: " + "; ".join(broken)


@cache
def help_options(subcommand: str) -> frozenset[str]:
    """The options `mirrord-trace SUBCOMMAND --help` lists."""
    shown = subprocess.run([MIRRORD_TRACE, *subcommand.split(), "--help"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    return frozenset(OPTION.findall(shown))


def options_before_program(arguments: str) -> list[str]:
    """The options in a command line's own arguments (not the program's)."""
    return OPTION.findall(END_OF_ARGUMENTS.split(arguments, maxsplit=1)[0])


def readme_commands() -> list[tuple[str, list[str]]]:
    """(subcommand, options) for every mirrord-trace command the README shows: command lines in
    code blocks and inline code, and the option lines of the usage synopsis."""
    text = README.read_text()
    commands: list[tuple[str, list[str]]] = []
    blocks = [match.group(0).replace("\\\n", " ") for match in FENCE.finditer(text)]
    spans = [span.strip("`") for span in INLINE_CODE.findall(FENCE.sub("", text))]
    # An option quoted on its own in the prose (`--context`, `-n`) is one of exec's.
    commands += [("exec", OPTION.findall(span)[:1]) for span in spans if OPTION.match(span)]
    snippets = blocks + spans
    for snippet in snippets:
        synopsis: str | None = None  # the subcommand whose option lines follow
        for line in snippet.splitlines():
            for match in INVOCATION.finditer(line):
                # `sandbox up|status|down` shares its options: check them against `sandbox up`.
                words = match.group(1).replace("|", " ").split()
                subcommand = " ".join(words[:2]) if words[0] == "sandbox" else words[0]
                if subcommand == "sandbox":
                    subcommand = "sandbox up"
                commands.append((subcommand, options_before_program(line[match.end():])))
                synopsis = subcommand if "[OPTIONS]" in line else None
            if synopsis and re.match(r"^\s+-", line):
                option_column = re.split(r"(?<=\S)\s{2,}", line.strip(), maxsplit=1)[0]
                commands.append((synopsis, OPTION.findall(option_column)))
    return commands


def test_the_readme_shows_commands_and_options() -> None:
    commands = readme_commands()
    exec_options = {option for subcommand, options in commands if subcommand == "exec"
                    for option in options}
    # The synopsis lists the exec options; if it stopped being parsed, the test below would
    # pass on nothing.
    assert {"--target", "--trace", "--steal", "-f"} <= exec_options


def test_every_option_the_readme_shows_exists() -> None:
    unknown = sorted(
        {(subcommand, option) for subcommand, options in readme_commands() for option in options
         if option not in help_options(subcommand)}
    )
    assert not unknown, "README shows options the CLI does not accept: " + ", ".join(
        f"mirrord-trace {subcommand} {option}" for subcommand, option in unknown
    )
