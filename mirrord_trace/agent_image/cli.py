"""`mirrord-trace agent-image build|push`: make the agent image, and put it in a registry."""

from __future__ import annotations

from pathlib import Path

import click

from mirrord_trace.agent_image.archive import ArchiveError, read_archive
from mirrord_trace.agent_image.build import (
    DEFAULT_NAME,
    BuiltImage,
    build_image,
    default_cache_dir,
    default_output,
)
from mirrord_trace.agent_image.credentials import CredentialsError, lookup
from mirrord_trace.agent_image.reference import ReferenceError, parse_reference
from mirrord_trace.agent_image.registry import DEFAULT_CHUNK_SIZE, RegistryClient, RegistryError
from mirrord_trace.agent_image.rootfs import DEFAULT_MIRROR, RootfsError
from mirrord_trace.exec_run import EXIT_FAILURE, EXIT_USAGE, UserError


def _note(message: str) -> None:
    click.echo(f"agent-image: {message}", err=True)


def _build(output: Path, cache_dir: Path, name: str, mirror: str) -> BuiltImage:
    try:
        built = build_image(output, cache_dir, name, mirror, _note)
    except ReferenceError as error:
        raise UserError(str(error), "use NAME:TAG, e.g. " + DEFAULT_NAME, EXIT_USAGE) from None
    except RootfsError as error:
        raise UserError(error.message, error.hint, EXIT_FAILURE) from None
    _note(
        f"{built.path}: {built.reference.familiar()}, {built.size / 1e6:.1f} MB, "
        f"manifest {built.manifest_digest}"
    )
    return built


_cache_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_cache_dir,
    show_default="~/.cache/mirrord-trace/agent-image",
    help="Where the Debian base tree and downloaded packages are kept between builds.",
)
_mirror_option = click.option(
    "--mirror", default=DEFAULT_MIRROR, show_default=True, help="Debian mirror for debootstrap."
)


@click.group(name="agent-image")
def agent_image_group() -> None:
    """Build the agent image, and push it to your registry.

    \b
    mirrord-trace agent-image push registry.example/team/mirrord-trace-agent:0.1.0
    then set agent.image (or MIRRORD_AGENT_IMAGE) to that name.
    """


@agent_image_group.command("build")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=default_output,
    show_default="in the cache directory",
    help="The OCI archive to write.",
)
@click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    help="The image's name in the archive (what kind/k3d/minikube/docker load call it).",
)
@_cache_option
@_mirror_option
def build_command(output: Path, name: str, cache_dir: Path, mirror: str) -> None:
    """Build the agent image as an OCI archive (root and debootstrap needed)."""
    built = _build(output, cache_dir, name, mirror)
    click.echo(str(built.path))


@agent_image_group.command("push")
@click.argument("reference", metavar="REGISTRY/NAME:TAG")
@click.option(
    "--archive",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Push this archive (from `agent-image build`) instead of building one now.",
)
@click.option(
    "--insecure", is_flag=True, help="Plain HTTP (loopback registries fall back to it anyway)."
)
@click.option(
    "--chunk-size",
    type=click.IntRange(1, 4096),
    default=DEFAULT_CHUNK_SIZE >> 20,
    show_default=True,
    help="MiB per upload request; larger blobs go in chunks (for proxies that limit bodies).",
)
@_cache_option
@_mirror_option
def push_command(
    reference: str,
    archive: Path | None,
    insecure: bool,
    chunk_size: int,
    cache_dir: Path,
    mirror: str,
) -> None:
    """Push the agent image to REGISTRY/NAME:TAG, building it first unless --archive is given.

    Credentials come from ~/.docker/config.json (docker login, credential helpers).
    """
    try:
        target = parse_reference(reference)
    except ReferenceError as error:
        raise UserError(
            str(error), "give REGISTRY/NAME:TAG, e.g. registry.example/mirrord-trace-agent:0.1.0"
        ) from None
    if archive is None:
        archive = _build(default_output(), cache_dir, DEFAULT_NAME, mirror).path
    try:
        credentials = lookup(target)
        client = RegistryClient(target, credentials, insecure, chunk_size << 20)
        with read_archive(archive) as image:
            try:
                result = client.push(image, _note)
            finally:
                client.close()
    except (CredentialsError, RegistryError) as error:
        raise UserError(error.message, error.hint, EXIT_FAILURE) from None
    except ArchiveError as error:
        hint = "build it again with 'mirrord-trace agent-image build'"
        raise UserError(str(error), hint) from None
    _note(
        f"pushed {len(result.uploaded)} blobs ({len(result.skipped)} were there already); "
        f'use it with agent.image: "{target.normalized()}" or '
        f"MIRRORD_AGENT_IMAGE={target.normalized()}"
    )
    click.echo(f"{target.normalized()}@{result.digest}")
