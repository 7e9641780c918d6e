"""The store image, for real: built from docker/store.Dockerfile by a container engine,
run as its non-root user with a named volume and the token as a mounted secret, its
HEALTHCHECK run inside it, and an authenticated update and sample from the host.

Skips with the reason where no container engine is usable (none installed, or it cannot
run a container here). The whole compose stack is `make deploy-check` (deploy/smoke.sh).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from isloader.errors import AuthenticationError
from isloader.store.client import StoreClient
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = "docker.io/library/python:3.11-slim"
IMAGE = "isloader-store:latest"


def _engine() -> tuple[list[str], dict[str, str]]:
    """The engine deploy/engine.sh picks for the deploy scripts, and its environment."""
    script = 'source deploy/engine.sh && echo "${ENGINE[0]}" && echo "${CONTAINERS_CONF:-}"'
    picked = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT)
    if picked.returncode != 0:
        pytest.skip(picked.stderr.strip())
    engine, conf = picked.stdout.splitlines()
    return [engine], {**os.environ, **({"CONTAINERS_CONF": conf} if conf else {})}


@pytest.fixture(scope="module")
def engine() -> tuple[list[str], dict[str, str]]:
    """The engine, once it has shown it can make the base image and run a container."""
    cmd, env = _engine()
    if subprocess.run([*cmd, "info"], capture_output=True, env=env).returncode != 0:
        pytest.skip(f"{cmd[0]} is installed but not usable here ({cmd[0]} info fails)")
    base = subprocess.run(
        [str(DEPLOY / "offline" / "base-image.sh")], capture_output=True, text=True, env=env
    )
    if base.returncode != 0:
        pytest.skip(f"no {BASE} and none can be made here: {base.stderr.strip()[-300:]}")
    probe = subprocess.run([*cmd, "run", "--rm", BASE, "true"], capture_output=True, env=env)
    if probe.returncode != 0:
        pytest.skip(f"{cmd[0]} cannot run a container here: {probe.stderr.decode()[-300:]}")
    return cmd, env


@pytest.mark.timeout(900)
def test_the_store_image_serves_authenticated_requests_as_its_own_user(engine, tmp_path) -> None:
    cmd, env = engine
    built = subprocess.run(
        [str(DEPLOY / "build-images.sh"), "store"], capture_output=True, text=True, env=env
    )
    assert built.returncode == 0, built.stderr[-2000:]

    def run(*args: str, check: bool = True) -> str:
        out = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env)
        assert not check or out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip()

    code = "import importlib.util as u; print([m for m in ('torch', 'ray', 'pyarrow') if u.find_spec(m)])"  # noqa: E501
    stack = run("run", "--rm", "--entrypoint", "python", IMAGE, "-c", code)
    assert stack == "[]", f"the store image installs {stack}"

    token = tmp_path / "isloader_token"
    token.write_text("image-test-token\n")
    token.chmod(0o600)
    if os.getuid() == 0:
        os.chown(token, 10001, -1)  # the image's user reads the secret, as deploy/README says
    else:
        token.chmod(0o644)
    name = f"isloader-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    run("volume", "create", name)
    try:
        run(
            "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:50051",
            "-v", f"{name}:/var/lib/isloader", "-v", f"{token}:/run/secrets/isloader_token:ro",
            "-e", "ISLOADER_NUM_SAMPLES=1000",
            "-e", "ISLOADER_TOKEN_FILE=/run/secrets/isloader_token",
            "-e", "ISLOADER_WAL_DIR=/var/lib/isloader/wal",
            "-e", "ISLOADER_SNAPSHOT_URI=/var/lib/isloader/snapshots",
            IMAGE,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not _healthy(cmd, env, name):
            assert time.monotonic() < deadline, run("logs", name, check=False)
            time.sleep(0.5)
        assert run("exec", name, "id", "-u") == "10001"
        address = f"127.0.0.1:{port}"
        with StoreClient([address], token="image-test-token") as client:
            assert client.num_samples == 1000
            client.update(np.array([3, 999]), np.array([2.0, 5.0]))
            np.testing.assert_allclose(client.lookup(np.array([3, 999])), [2.0, 5.0])
            plan = client.sample(64, seed=0)
            assert len(plan) == 64 and np.all((plan.indices >= 0) & (plan.indices < 1000))
            np.testing.assert_allclose(plan.weights, 1 / (1000 * plan.probabilities))
        with pytest.raises(AuthenticationError), StoreClient([address], token="wrong") as client:
            client.stats()
        wal = run("exec", name, "stat", "-c", "%u %s", "/var/lib/isloader/wal")
        assert wal.split()[0] == "10001"  # the non-root user writes the named volume
    finally:
        run("rm", "-f", name, check=False)
        run("volume", "rm", "-f", name, check=False)


def _healthy(cmd: list[str], env: dict[str, str], name: str) -> bool:
    """The image's HEALTHCHECK, run now (podman without systemd runs no timers)."""
    if cmd[0] == "podman":
        check = subprocess.run([*cmd, "healthcheck", "run", name], capture_output=True, env=env)
        return check.returncode == 0
    status = subprocess.run(
        [*cmd, "inspect", name, "--format", "{{.State.Health.Status}}"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    return status.stdout.strip() == "healthy"
