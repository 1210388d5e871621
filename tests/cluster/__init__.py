"""The end-to-end tests' Kubernetes cluster: one node on this machine, built from upstream.

`make cluster` runs `python -m tests.cluster.up`, `make cluster-down` runs
`python -m tests.cluster.down`. Each module here does one job; layout.py names every path, port
and address range in one place.
"""
