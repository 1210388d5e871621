"""Which paths are local, remote, or not found: mirrord's fs modes, default lists and overrides.

The decision order (docs/fs.md documents it; tests keep the two in step) is mirrord's:

    1. user not_found      -> not found
    2. user read_write     -> remote, reads and writes
    3. user read_only      -> remote reads; writes stay local
    4. user local          -> local
    5. default not_found   -> not found   (~/.kube, ~/.config/gcloud, ~/.azure)
    6. default remote      -> remote reads; writes stay local (/etc/resolv.conf, /etc/hosts...)
    7. default local       -> local       (/proc, /sys, /dev, /lib*, /usr, /etc, /tmp, cwd...)
    8. feature.fs.mode     -> read: remote reads, local writes; write: remote both;
                              localwithoverrides: local

The first rule whose patterns match the absolute path decides. Mode `local` traps nothing at
all; without a target every "remote" answer becomes local (there is nothing remote to reach).
Patterns are regular expressions searched (not anchored) case-insensitively, like mirrord's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mirrord_trace.config.model import FsConfig, FsMode

LOCAL = "local"
REMOTE = "remote"
NOT_FOUND = "not_found"

# Credentials of the developer's own machine, hidden from a program that pretends to run in the
# pod: under the home directory of whoever runs mirrord-trace.
DEFAULT_NOT_FOUND = (
    r"^{home}/\.config/gcloud(/|$)",
    r"^{home}/\.kube(/|$)",
    r"^{home}/\.azure(/|$)",
)

# Read from the pod even though /etc is local: name resolution and TLS trust must match the pod.
DEFAULT_REMOTE = (
    r"^/etc/resolv\.conf$",
    r"^/etc/hosts$",
    r"^/etc/hostname$",
    r"^/etc/ssl/certs(/|$)",
)

# Read locally in every mode: the machine's own system files, language runtimes and tooling,
# scratch space, and the program itself with its working directory (mirrord's list; /lib* and
# versioned shared objects added because the dynamic loader runs under the filter here).
# These can only match a path's last component and the '/' before it: they are searched there
# alone, so an undecided path costs microseconds. (mirrord writes `.\.so$`; the look-behind
# matches the same and lets the regex engine skip positions that are not a '.'.)
DEFAULT_LOCAL_NAMES = (
    r"(?<=.)\.so(\.[0-9]+)*$",
    r"(?<=.)\.d$",
    r"(?<=.)\.pyc$",
    r"(?<=.)\.py$",
    r"(?<=.)\.jar$",
    r"(?<=.)\.class$",
    r"(?<=.)\.js$",
    r"(?<=.)\.pth$",
    r"(?<=.)\.plist$",
    r"venv\.cfg$",
    r"\.pdb$",
    r"\.dll$",
    r"/jvm\.cfg$",  # paths here are absolute: mirrord's (^|/) is always the '/'
    r"/package\.json$",
    r"/\.yarnrc$",
    r"/\.yarnrc\.yml$",
    r"/\.yarnrc\.json$",
    r"/\.tool-versions$",
)
DEFAULT_LOCAL = (
    r"^/proc(/|$)",
    r"^/sys(/|$)",
    r"^/lib[^/]*(/|$)",
    r"^/etc(/|$)",
    r"^/usr(/|$)",
    r"^/home(/|$)",
    r"^/bin(/|$)",
    r"^/sbin(/|$)",
    r"^/dev(/|$)",
    r"^/opt(/|$)",
    r"^/tmp(/|$)",
    r"^/var/tmp(/|$)",
    r"^/snap(/|$)",
    r"^/run(/|$)",
    r"^/selinux(/|$)",
    r"^/nix(/|$)",
    r"(?<=.)\.asdf/.",
    r"clr-.*-pipe-",
    r"/node_modules",
    "^{temp}",
    "^/$",
)

# (rule name, what a read gets, what a write gets); the order is the decision order.
RULE_ORDER: tuple[tuple[str, str, str], ...] = (
    ("user not_found", NOT_FOUND, NOT_FOUND),
    ("user read_write", REMOTE, REMOTE),
    ("user read_only", REMOTE, LOCAL),
    ("user local", LOCAL, LOCAL),
    ("default not_found", NOT_FOUND, NOT_FOUND),
    ("default remote", REMOTE, LOCAL),
    ("default local", LOCAL, LOCAL),
)
MODE_VERDICTS: dict[FsMode, tuple[str, str]] = {
    FsMode.READ: (REMOTE, LOCAL),
    FsMode.WRITE: (REMOTE, REMOTE),
    FsMode.LOCAL_WITH_OVERRIDES: (LOCAL, LOCAL),
    FsMode.LOCAL: (LOCAL, LOCAL),
}
_DECISION_CACHE_LIMIT = 4096


def _anchored_at_start(source: str) -> bool:
    """`^...` with no alternative outside brackets or groups (`^a|b` is not anchored)."""
    if not source.startswith("^"):
        return False
    depth, escaped, in_class = 0, False, False
    for char in source:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return False
    return True


def _combined(sources: Sequence[str]) -> re.Pattern[str] | None:
    if not sources:
        return None
    try:
        return re.compile("|".join(f"(?:{s})" for s in sources), re.IGNORECASE)
    except re.error:  # e.g. a user pattern with inline global flags: matched one by one
        return None


class PatternList:
    """Several regexes searched as one.

    Patterns anchored with `^` are tried at the start of the path only (one `match` of their
    combination); `names` only in the path's last component and the character before it; the
    others are searched everywhere. Searching dozens of alternatives at every position of
    every path would cost tens of microseconds per decision.
    """

    def __init__(
        self, patterns: Iterable[str | re.Pattern[str]], names: Iterable[str] = ()
    ) -> None:
        sources = tuple(p.pattern if isinstance(p, re.Pattern) else p for p in patterns)
        name_sources = tuple(names)
        self.sources = name_sources + sources
        self._compiled: tuple[re.Pattern[str], ...] | None = None  # each alone, when needed
        anchored = [s for s in sources if _anchored_at_start(s)]
        floating = [s for s in sources if s not in anchored]
        self._anchored = _combined(anchored)
        self._names = _combined(name_sources)
        self._floating = _combined(floating)
        self._one_by_one = bool(
            (anchored and self._anchored is None)
            or (floating and self._floating is None)
            or (name_sources and self._names is None)
        )

    def __bool__(self) -> bool:
        return bool(self.sources)

    @property
    def compiled(self) -> tuple[re.Pattern[str], ...]:
        # Compiled on first use only: start-up pays for the combinations alone.
        if self._compiled is None:
            self._compiled = tuple(re.compile(s, re.IGNORECASE) for s in self.sources)
        return self._compiled

    def matches(self, path: str) -> bool:
        if self._one_by_one:
            return any(pattern.search(path) for pattern in self.compiled)
        if self._anchored is not None and self._anchored.match(path):
            return True
        if self._names is not None:
            tail = path[max(0, path.rfind("/") - 1) :]
            if self._names.search(tail):
                return True
        return self._floating is not None and self._floating.search(path) is not None

    def first_match(self, path: str) -> str | None:
        """The source of the first pattern that matches (for --trace)."""
        for source, pattern in zip(self.sources, self.compiled, strict=True):
            if pattern.search(path):
                return source
        return None


# Files that mark the top of a local working tree (a repository, a Go workspace): the tree
# above the working directory holds the program's own sources and sibling modules (a monorepo's
# ../lib), which exist on this machine only.
TREE_MARKERS = (".git", ".hg", ".svn", ".jj", "go.work")
# Environment variables that name a local toolchain's directories: module and build caches,
# interpreters, virtual environments, SDKs. What a build or an interpreter reads from there
# exists only here; looking it up in the pod fails with "no such file" far from the cause.
TOOLCHAIN_VARIABLES = (
    "GOPATH", "GOMODCACHE", "GOCACHE", "GOROOT", "GOTMPDIR",
    "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "PYTHONPATH", "PYENV_ROOT",
    "CARGO_HOME", "RUSTUP_HOME", "CARGO_TARGET_DIR",
    "JAVA_HOME", "GRADLE_USER_HOME", "MAVEN_HOME", "M2_HOME",
    "NVM_DIR", "NPM_CONFIG_PREFIX", "npm_config_cache", "ASDF_DATA_DIR", "UV_CACHE_DIR",
    "PIP_CACHE_DIR", "XDG_CACHE_HOME",
)


@dataclass(frozen=True)
class Whereabouts:
    """What the default lists are relative to: this machine's user, directories and program."""

    home: str
    cwd: str
    program: str
    temp_dir: str
    tree: str = ""  # the top of the local working tree around cwd ("" when there is none)
    toolchain: tuple[str, ...] = ()  # local toolchain directories (variables, program prefix)

    @classmethod
    def current(cls, program: str = "") -> Whereabouts:
        try:
            cwd = os.getcwd()
        except FileNotFoundError:  # started in a directory removed since: no cwd rule
            cwd = ""
        program = os.path.abspath(program) if program else ""
        return cls(
            home=os.path.expanduser("~"),
            cwd=cwd,
            program=program,
            temp_dir=temp_directory(),
            tree=working_tree_top(cwd),
            toolchain=toolchain_directories(os.environ, program),
        )


def working_tree_top(cwd: str) -> str:
    """The nearest directory at or above `cwd` that holds a TREE_MARKERS entry, else ""."""
    directory = cwd
    while directory and directory != "/":
        if any(os.path.lexists(os.path.join(directory, m)) for m in TREE_MARKERS):
            return directory
        directory = os.path.dirname(directory)
    return ""


def toolchain_directories(environ: Mapping[str, str], program: str) -> tuple[str, ...]:
    """Absolute toolchain directories named by the environment, and the program's prefix.

    The prefix is the parent of the program's `bin` directory (a virtualenv's
    `/srv/env/bin/python` -> `/srv/env`, where its site-packages live), for the path as
    executed and for the file it resolves to; `/` itself is never a prefix.
    """
    found: list[str] = []
    for name in TOOLCHAIN_VARIABLES:
        for entry in environ.get(name, "").split(os.pathsep):
            if os.path.isabs(entry):
                found.append(os.path.normpath(entry))
    if program:
        for path in (program, os.path.realpath(program)):
            directory = os.path.dirname(path)
            if os.path.basename(directory) in ("bin", "sbin"):
                found.append(os.path.dirname(directory))
    return tuple(dict.fromkeys(d for d in found if d != "/"))


def temp_directory() -> str:
    """The temporary directory as tempfile.gettempdir() names it in the usual cases (its import
    alone would cost start-up milliseconds): $TMPDIR, $TEMP or $TMP, else /tmp."""
    for name in ("TMPDIR", "TEMP", "TMP"):
        value = os.environ.get(name)
        if value and os.path.isdir(value):
            return os.path.abspath(value)
    return "/tmp"


def default_local_patterns(where: Whereabouts) -> list[str]:
    """Every default local pattern (DEFAULT_LOCAL_NAMES first), for this machine."""
    temp = re.escape(where.temp_dir.rstrip("/") or "/")
    patterns = [*DEFAULT_LOCAL_NAMES, *(p.replace("{temp}", temp) for p in DEFAULT_LOCAL)]
    # Not "/": a container's WORKDIR is often "/", which would make everything local.
    for directory in (where.cwd, where.tree, where.home, *where.toolchain):
        directory = directory.rstrip("/")
        if directory:
            patterns.append(f"^{re.escape(directory)}(/|$)")
    if where.program:
        patterns.append(f"^{re.escape(where.program)}$")
    return patterns


def default_not_found_patterns(where: Whereabouts) -> list[str]:
    home = re.escape(where.home.rstrip("/"))
    return [p.replace("{home}", home) for p in DEFAULT_NOT_FOUND] if home else []


class PathPolicy:
    """Decides each absolute path: `decide(path, write) -> (verdict, rule in words)`."""

    def __init__(
        self,
        fs: FsConfig,
        *,
        targetless: bool = False,
        where: Whereabouts | None = None,
        explain: bool = False,
    ) -> None:
        where = where if where is not None else Whereabouts.current()
        self.mode = fs.mode
        self.targetless = targetless
        self.explain = explain
        lists: Sequence[PatternList] = (
            PatternList(fs.not_found),
            PatternList(fs.read_write),
            PatternList(fs.read_only),
            PatternList(fs.local),
            PatternList(default_not_found_patterns(where)),
            PatternList(DEFAULT_REMOTE),
            PatternList(default_local_patterns(where)[len(DEFAULT_LOCAL_NAMES) :],
                        DEFAULT_LOCAL_NAMES),
        )
        self._rules = [
            (name, patterns, read, write)
            for (name, read, write), patterns in zip(RULE_ORDER, lists, strict=True)
            if patterns
        ]
        self._mode_read, self._mode_write = MODE_VERDICTS[fs.mode]
        self._cache: dict[tuple[str, bool], tuple[str, str]] = {}

    @property
    def can_write_remotely(self) -> bool:
        """Whether any path at all may be written in the target."""
        if self.targetless:
            return False
        return self.mode is FsMode.WRITE or any(
            name == "user read_write" for name, *_ in self._rules
        )

    def decide(self, path: str, write: bool = False) -> tuple[str, str]:
        key = (path, write)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        decision = self._decide(path, write)
        if len(self._cache) >= _DECISION_CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    def _decide(self, path: str, write: bool) -> tuple[str, str]:
        read_verdict, write_verdict = self._mode_read, self._mode_write
        rule = f"fs mode {self.mode.value}"
        for name, patterns, rule_read, rule_write in self._rules:
            if patterns.matches(path):
                read_verdict, write_verdict = rule_read, rule_write
                rule = f"{name} pattern {patterns.first_match(path)}" if self.explain else name
                break
        verdict = write_verdict if write else read_verdict
        if write and verdict != read_verdict:
            rule = f"{rule}, writes stay local"
        if verdict == REMOTE and self.targetless:
            return LOCAL, f"no target ({rule})"
        return verdict, rule
