"""Where the measured processes run. On these 2-vCPU VMs a ptrace stop costs ~12 us when tracer
and tracee share a CPU and ~100 us across CPUs, so every result says which placement it had."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    name: str
    prefix: tuple[str, ...]

    def wrap(self, command: list[str]) -> list[str]:
        """`command` run with this placement; children (tracer, tracee) inherit the pinning."""
        return [*self.prefix, *command]


SAME_CPU = Placement("same-cpu", ("taskset", "-c", "0"))
FREE = Placement("free", ())
PLACEMENTS: dict[str, Placement] = {p.name: p for p in (SAME_CPU, FREE)}
