"""The agent image: built from Debian's packages with no container engine, written as an OCI
archive, pushed to a registry over the OCI distribution API.

    rootfs.py       the cached Debian base tree (debootstrap)
    agent_tree.py   the agent's sources, compiled by the image's Python
    layer.py        a directory tree -> a reproducible gzip tar layer and its digests
    archive.py      layers + config -> the OCI (and docker-load) archive; reading it back
    build.py        the whole build, with its caches
    reference.py    REGISTRY/NAME:TAG
    credentials.py  ~/.docker/config.json
    registry.py     the push (OCI distribution API, Basic and Bearer authentication)
    cli.py          `mirrord-trace agent-image build|push`
"""
