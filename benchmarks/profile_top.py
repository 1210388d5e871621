"""Summarise a py-spy profile: the top functions by own time and by time spent inside them.

    py-spy record --subprocesses --threads -f raw -o profile.txt -- COMMAND...
    python -m benchmarks.profile_top profile.txt [--top 30] [--process agent]

`--process` keeps only the samples of processes whose command line contains the text (the
agent, the supervisor), so each side of a session can be read on its own. Samples spent
waiting (select, poll, a lock) are counted like any other: py-spy records wall-clock stacks.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int, process: str | None) -> str:
    own: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        # py-spy's first frames name the process (and its parents) and the thread.
        prefix = [f for f in frames if f.startswith(("process ", "thread "))]
        if process is not None and not any(process in f for f in prefix if f.startswith("process")):
            continue
        count = int(count_text)
        total += count
        code = [f for f in frames if f not in prefix]
        threads[prefix[-1] if prefix else "?"] += count
        if code:
            own[code[-1]] += count
        for frame in set(code):
            inside[frame] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples"]
    for title, counter in (("threads", threads), ("own time", own), ("inside", inside)):
        lines.append(f"-- {title}")
        lines += [f"{n:7d} {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--process", help="only processes whose command line contains this")
    arguments = parser.parse_args()
    print(summarise(arguments.profile, arguments.top, arguments.process))


if __name__ == "__main__":
    main()
