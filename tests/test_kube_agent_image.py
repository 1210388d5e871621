"""agent/Containerfile puts everything the agent imports into the image: the files it copies
plus the packages it installs are enough to import every agent module, and nothing else from
this repository or the local side's dependencies is needed. (No image builder runs here; this
checks the same file set with this machine's interpreter.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import ROOT

CONTAINERFILE = ROOT / "agent" / "Containerfile"
# Import name -> the distribution the Containerfile installs for it.
DISTRIBUTIONS = {
    "msgpack": "msgpack",
    "click": "click",
    "scapy": "scapy",
    "h11": "h11",
    "ptrace": "python-ptrace",
    "h2": "h2",
    "hpack": "h2",  # h2's own dependencies come with it
    "hyperframe": "h2",
    "httptools": "httptools",
    "jsonpath_rfc9535": "jsonpath-rfc9535",
    "regex": "jsonpath-rfc9535",  # its dependencies
    "iregexp_check": "jsonpath-rfc9535",
}


def copied_paths() -> list[str]:
    return [
        line.split()[1]
        for line in CONTAINERFILE.read_text().splitlines()
        if line.startswith("COPY ")
    ]


def installed_distributions() -> set[str]:
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    pip_line = next(line for line in text.splitlines() if "pip install" in line)
    return {re.split(r"[<>=]", spec.strip('"'))[0] for spec in re.findall(r'"([^"]+)"', pip_line)}


def test_kube_agent_image_holds_everything_the_agent_imports(tmp_path: Path) -> None:
    for relative in copied_paths():
        source, target = ROOT / relative, tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    modules = sorted(
        f"agent.{p.stem}" for p in (tmp_path / "agent").glob("*.py") if p.stem != "__main__"
    )
    site_packages = sysconfig.get_paths()["purelib"]
    probe = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"site = {site_packages!r}\n"
        "print(json.dumps(sorted({name.split('.')[0] for name, m in list(sys.modules.items())"
        " if (getattr(m, '__file__', None) or '').startswith(site)})))\n"
    )
    # -S: no site processing, so the editable install of this repository is invisible; only
    # the copied files and the third-party packages are on the path.
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        env={"PYTHONPATH": f"{tmp_path}:{site_packages}", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    third_party = set(json.loads(result.stdout))
    assert len(modules) > 5
    unexpected = {name for name in third_party if DISTRIBUTIONS.get(name) is None}
    assert not unexpected, f"the agent imports {unexpected}, which the image does not install"
    assert {DISTRIBUTIONS[name] for name in third_party} <= installed_distributions()
