"""`mirrord-trace agent-image push` against a real registry (Debian's docker-registry on
loopback): what it stores is read back through the registry's API and by skopeo, byte for
byte; blobs the registry has are not sent again; large blobs go in chunks; credentials come
from ~/.docker/config.json, and a registry that wants them says so in one line.

The archives here hold a small tree made by the test (the real image: test_agent_image_build).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from mirrord_trace.agent_image.archive import MANIFEST_TYPE, read_archive
from tests.kube_standin.fixtures import MIRRORD_TRACE, the_error
from tests.registry_fixtures import Registry
from tests.test_agent_image_archive import build
from tests.token_service import SERVICE, TokenService

ACCEPT = {"Accept": MANIFEST_TYPE}


def push(home: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), **extra_env}
    env.pop("DOCKER_CONFIG", None)
    return subprocess.run(
        [MIRRORD_TRACE, "agent-image", "push", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def archive_with_a_large_file(tmp_path: Path) -> Path:
    """An archive whose layer is over 3 MiB (incompressible), for the chunked upload."""
    return build(tmp_path, "one", os.urandom(3 << 20))


def assert_registry_holds(registry: Registry, repository: str, tag: str, archive: Path) -> None:
    """The registry serves the archive's manifest under the tag, and every blob unchanged."""
    with read_archive(archive) as image:
        response = registry.get(f"/v2/{repository}/manifests/{tag}", headers=ACCEPT)
        assert response.status_code == 200, response.text
        assert response.content == image.manifest
        assert response.headers["Docker-Content-Digest"] == image.manifest_digest
        for blob in image.blobs():
            served = registry.get(f"/v2/{repository}/blobs/{blob.digest}")
            assert served.status_code == 200
            assert f"sha256:{hashlib.sha256(served.content).hexdigest()}" == blob.digest
            assert served.content == image.open_blob(blob.digest).read()


def test_agent_image_push_to_a_registry_and_read_it_back(tmp_path: Path) -> None:
    archive = build(tmp_path, "one")
    with Registry(tmp_path / "registry") as registry:
        reference = f"{registry.host}/team/mirrord-trace-agent:0.1.0"
        result = push(tmp_path, reference, "--archive", str(archive))
        assert result.returncode == 0, result.stderr
        with read_archive(archive) as image:
            assert result.stdout.strip() == f"{reference}@{image.manifest_digest}"
        assert "pushed 2 blobs (0 were there already)" in result.stderr
        assert f"MIRRORD_AGENT_IMAGE={reference}" in result.stderr
        assert_registry_holds(registry, "team/mirrord-trace-agent", "0.1.0", archive)

        # The same image under another tag: every blob is there, only the manifest is sent.
        again = push(
            tmp_path, f"{registry.host}/team/mirrord-trace-agent:next", "--archive", str(archive)
        )
        assert again.returncode == 0, again.stderr
        assert "pushed 0 blobs (2 were there already)" in again.stderr
        assert_registry_holds(registry, "team/mirrord-trace-agent", "next", archive)


def test_agent_image_push_in_chunks(tmp_path: Path) -> None:
    archive = archive_with_a_large_file(tmp_path)
    with read_archive(archive) as image:
        assert image.blobs()[1].size > 3 << 20
    with Registry(tmp_path / "registry") as registry:
        reference = f"{registry.host}/agent:chunked"
        result = push(tmp_path, reference, "--archive", str(archive), "--chunk-size", "1")
        assert result.returncode == 0, result.stderr
        assert_registry_holds(registry, "agent", "chunked", archive)


def test_agent_image_pushed_is_read_by_skopeo(tmp_path: Path) -> None:
    archive = build(tmp_path, "one")
    with Registry(tmp_path / "registry") as registry:
        reference = f"{registry.host}/team/agent:1"
        assert push(tmp_path, reference, "--archive", str(archive)).returncode == 0
        inspected = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{reference}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert inspected.returncode == 0, inspected.stderr
        copied = subprocess.run(
            [
                *("skopeo", "copy", "--src-tls-verify=false"),
                *(f"docker://{reference}", f"oci:{tmp_path / 'copy'}:agent"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert copied.returncode == 0, copied.stderr
    with read_archive(archive) as image:
        assert json.loads(inspected.stdout)["Digest"] == image.manifest_digest
        index = json.loads((tmp_path / "copy" / "index.json").read_text())
        assert index["manifests"][0]["digest"] == image.manifest_digest
        for blob in image.blobs():
            copy = tmp_path / "copy" / "blobs" / "sha256" / blob.digest.split(":")[1]
            assert copy.read_bytes() == image.open_blob(blob.digest).read()


def docker_config(home: Path, host: str, user: str, password: str) -> None:
    (home / ".docker").mkdir(exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))


def test_agent_image_push_with_basic_auth_from_docker_config(tmp_path: Path) -> None:
    archive = build(tmp_path, "one")
    with Registry(tmp_path / "registry", users={"alice": "s3cret"}) as registry:
        reference = f"{registry.host}/agent:1"
        line = the_error(push(tmp_path, reference, "--archive", str(archive)))
        assert f"registry {registry.host} needs a user name and password" in line
        assert f"(docker login {registry.host})" in line

        docker_config(tmp_path, registry.host, "alice", "wrong")
        line = the_error(push(tmp_path, reference, "--archive", str(archive)))
        assert "refused the credentials from" in line and "config.json auths" in line

        # a key written as a URL, as `docker login` may store it
        docker_config(tmp_path, f"http://{registry.host}", "alice", "s3cret")
        result = push(tmp_path, reference, "--archive", str(archive))
        assert result.returncode == 0, result.stderr
        assert_registry_holds(registry, "agent", "1", archive)


@pytest.mark.parametrize(
    ("reference", "complaint"),
    [
        ("127.0.0.1:1/Agent:1", "is not a repository name"),
        ("127.0.0.1:1/agent@sha256:00", "names a digest"),
    ],
)
def test_agent_image_push_with_a_bad_reference(
    tmp_path: Path, reference: str, complaint: str
) -> None:
    archive = build(tmp_path, "one")
    line = the_error(push(tmp_path, reference, "--archive", str(archive)), status=2)
    assert complaint in line and "REGISTRY/NAME:TAG" in line


def test_agent_image_push_to_nothing_fails_in_one_line(tmp_path: Path) -> None:
    archive = build(tmp_path, "one")
    from tests.registry_fixtures import free_port

    host = f"127.0.0.1:{free_port()}"
    line = the_error(push(tmp_path, f"{host}/agent:1", "--archive", str(archive)))
    assert f"registry {host} does not answer (cannot connect" in line


def test_agent_image_push_with_a_bearer_token(tmp_path: Path) -> None:
    """The registry answers `Bearer realm=...`: the push asks the token service for
    repository:NAME:pull,push with the config's user and password, then with an identity
    token (OAuth2 refresh token), and the real registry accepts the tokens."""
    archive = build(tmp_path, "one")
    users, refresh = {"bob": "pw"}, {"refresh-123": "bob"}
    with (
        TokenService(tmp_path / "tokens", users, refresh) as tokens,
        Registry(tmp_path / "registry", token_auth=tokens.registry_config()) as registry,
    ):
        reference = f"{registry.host}/team/agent:1"
        line = the_error(push(tmp_path, reference, "--archive", str(archive)))
        assert f"wants credentials and none are configured for {registry.host}" in line

        docker_config(tmp_path, registry.host, "bob", "pw")
        result = push(tmp_path, reference, "--archive", str(archive))
        assert result.returncode == 0, result.stderr
        assert ("GET", "repository:team/agent:pull,push", "bob") in tokens.requests

        config = {"auths": {registry.host: {"identitytoken": "refresh-123"}}}
        (tmp_path / ".docker" / "config.json").write_text(json.dumps(config))
        result = push(tmp_path, f"{registry.host}/team/agent:2", "--archive", str(archive))
        assert result.returncode == 0, result.stderr
        assert ("POST", "repository:team/agent:pull,push", "bob") in tokens.requests

        token = tokens.sign("reader", SERVICE, [])
        served = requests.get(
            f"http://{registry.host}/v2/team/agent/manifests/2",
            headers={**ACCEPT, "Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert served.status_code == 401  # a token without pull access is refused


def test_agent_image_push_with_a_credential_helper(tmp_path: Path) -> None:
    """`credHelpers` in config.json: the credentials come from docker-credential-NAME, asked
    with Docker's helper protocol (`get`, the registry's host on stdin, JSON on stdout)."""
    archive = build(tmp_path, "one")
    helpers = tmp_path / "bin"
    helpers.mkdir()
    asked = tmp_path / "asked"
    helper = helpers / "docker-credential-test"
    helper.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 1\ncat > {asked}\n'
        'echo \'{"ServerURL": "x", "Username": "carol", "Secret": "pw2"}\'\n'
    )
    helper.chmod(0o755)
    with Registry(tmp_path / "registry", users={"carol": "pw2"}) as registry:
        (tmp_path / ".docker").mkdir()
        config = {"credHelpers": {registry.host: "test"}}
        (tmp_path / ".docker" / "config.json").write_text(json.dumps(config))
        path = f"{helpers}:{os.environ['PATH']}"
        result = push(tmp_path, f"{registry.host}/agent:1", "--archive", str(archive), PATH=path)
        assert result.returncode == 0, result.stderr
        assert asked.read_text().strip() == registry.host
        assert_registry_holds(registry, "agent", "1", archive)

        config = {"credHelpers": {registry.host: "absent"}}
        (tmp_path / ".docker" / "config.json").write_text(json.dumps(config))
        line = the_error(
            push(tmp_path, f"{registry.host}/agent:1", "--archive", str(archive), PATH=path)
        )
        assert (
            "names the credential helper docker-credential-absent, which is not installed" in line
        )
