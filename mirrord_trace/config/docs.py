"""docs/configuration.md's tables of every mirrord key and variable, generated from the code.

    python -m mirrord_trace.config.docs            # rewrite the tables in docs/configuration.md
    python -m mirrord_trace.config.docs --check    # exit 1 if they are out of date

The tables sit between two marker comments; the rest of the page is written by hand.
tests/test_config_keys.py keeps them true.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mirrord_trace.config.environ import (
    CONFIG_FILE_VARIABLE,
    FALLBACK_VARIABLES,
    FILE_OPS_VARIABLES,
    KEY_VARIABLE,
    STEAL_VARIABLE,
    VARIABLES,
)
from mirrord_trace.config.keys import KEYS, Status, counts

BEGIN = "<!-- BEGIN GENERATED: python -m mirrord_trace.config.docs -->"
END = "<!-- END GENERATED -->"
DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
MIRRORD_VERSION = "3.250"


def _anchor(key: str) -> str:
    # GitHub's heading anchors drop the backquotes and dots: `feature.fs.mode` -> featurefsmode
    return "#" + key.replace(".", "")


def _what(key: str, documented: set[str]) -> str:
    entry = KEYS[key]
    if entry.status is Status.WORKS:
        if key in documented:
            return f"see [`{key}`]({_anchor(key)})"
        fields = ("pod", "deployment", "rollout", "container")
        if key.startswith("target.") and key.split(".")[-1] in fields:
            return "a field of the target path (see [`target.path`](#targetpath))"
        parent = key.rsplit(".", 1)[0]
        while parent not in documented and "." in parent:
            parent = parent.rsplit(".", 1)[0]
        return f"part of [`{parent}`]({_anchor(parent)})"
    if entry.status is Status.OPERATOR:
        return entry.why or "the file fails, saying so (its off value is accepted)"
    return entry.why


def generated(documented: set[str]) -> str:
    """The text between the markers."""
    totals = counts()
    lines = [
        BEGIN,
        "",
        f"## Every key of mirrord {MIRRORD_VERSION}",
        "",
        f"All {len(KEYS)} keys of mirrord {MIRRORD_VERSION}'s schema: "
        + ", ".join(f"{totals[status]} {status.value}" for status in Status)
        + ". A key that warns is accepted and does nothing here, with one line on stderr (in "
        "`verify-config`: in `warnings`) naming it and saying why.",
        "",
        "| Key | mirrord-trace | What happens |",
        "|-----|---------------|--------------|",
    ]
    for key in sorted(KEYS):
        what = _what(key, documented).replace("|", "\\|")
        lines.append(f"| `{key}` | {KEYS[key].status.value} | {what} |")
    lines += [
        "",
        "## Every mirrord variable",
        "",
        "| Variable | Sets |",
        "|----------|------|",
        f"| `{CONFIG_FILE_VARIABLE}` | the configuration file, when `-f` is not given |",
        f"| `{KEY_VARIABLE}` | `key` (below `-k/--key`, above the file's `key`) |",
    ]
    for variable, (key, _) in sorted(VARIABLES.items()):
        below = "; below the file's value" if variable in FALLBACK_VARIABLES else ""
        lines.append(f"| `{variable}` | `{key}` ({KEYS[key].status.value}{below}) |")
    lines += [
        f"| `{STEAL_VARIABLE}` | `feature.network.incoming.mode`: `true` steal, `false` mirror |",
        f"| `{FILE_OPS_VARIABLES[0]}`, `{FILE_OPS_VARIABLES[1]}` | `feature.fs.mode` (mirrord's "
        "older pair: `FILE_OPS=true` write, `FILE_RO_OPS=true` read, `false` local), unless "
        "`MIRRORD_FILE_MODE` is set |",
        "| `MIRRORD_BRANCH_NAME` | `{{ git_branch }}` in templates |",
        "",
        END,
    ]
    return "\n".join(lines)


def documented_keys(text: str) -> set[str]:
    import re

    return set(re.findall(r"^### `([a-z0-9_.]+)`$", text, re.MULTILINE))


def updated(text: str) -> str:
    """`text` (the page) with its generated part brought up to date (appended if missing)."""
    table = generated(documented_keys(text))
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        return head + table + tail
    return text.rstrip("\n") + "\n\n" + table + "\n"


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = updated(text)
    if "--check" in argv:
        if new != text:
            print(f"{DOC} is out of date: run python -m mirrord_trace.config.docs", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
