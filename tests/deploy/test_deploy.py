"""The deployment files: compose validated by docker-compose, store services run as
local processes with their compose environment, Dockerfiles linted."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
import yaml

from isloader.store.client import StoreClient
from tests.helpers import StoreProcess

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"


@pytest.fixture()
def compose_config(tmp_path) -> dict:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    token = tmp_path / "token.txt"
    token.write_text("compose-test-token\n")
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "ISLOADER_TOKEN_FILE": str(token)},
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    config["_token_file"] = str(token)
    return config


def test_compose_file_is_valid_and_safe_by_default(compose_config) -> None:
    services = compose_config["services"]
    assert {"store-0", "store-1", "minio", "demo-data", "trainer"} <= set(services)
    for name in ("store-0", "store-1"):
        store = services[name]
        assert store["healthcheck"]["test"][:4] == ["CMD", "isloader", "store", "health"]
        assert all(str(p).startswith("127.0.0.1:") for p in store["ports"])
        assert store["environment"]["ISLOADER_TOKEN_FILE"] == "/run/secrets/isloader_token"
        assert any("/var/lib/isloader" in str(v) for v in store["volumes"])
    trainer = services["trainer"]
    assert trainer["depends_on"]["store-0"]["condition"] == "service_healthy"
    assert trainer["depends_on"]["demo-data"]["condition"] == "service_completed_successfully"
    assert services["demo-data"]["depends_on"]["minio"]["condition"] == "service_healthy"


def _entrypoint(dockerfile: Path) -> list[str]:
    for line in dockerfile.read_text().splitlines():
        if line.startswith("ENTRYPOINT"):
            return yaml.safe_load(line.split(None, 1)[1])
    raise AssertionError(f"{dockerfile} has no ENTRYPOINT")


def test_store_services_come_up_healthy_as_local_processes(compose_config, tmp_path) -> None:
    assert _entrypoint(ROOT / "docker" / "store.Dockerfile") == ["isloader", "store", "serve"]
    procs = []
    try:
        for name in ("store-0", "store-1"):
            env = {k: str(v) for k, v in compose_config["services"][name]["environment"].items()}
            state = tmp_path / name
            env.update(  # container paths and ports mapped onto this machine
                ISLOADER_HOST="127.0.0.1",
                ISLOADER_PORT="0",
                ISLOADER_METRICS_PORT="0",
                ISLOADER_SNAPSHOT_URI=str(state / "snapshots"),
                ISLOADER_WAL_DIR=str(state / "wal"),
                ISLOADER_TOKEN_FILE=compose_config["_token_file"],
            )
            procs.append(StoreProcess([], env=env))
        for proc in procs:
            check = subprocess.run(
                [sys.executable, "-m", "isloader.cli", "store", "health", proc.address],
                capture_output=True,
                text=True,
            )
            assert check.returncode == 0, check.stderr
            assert "SERVING" in check.stdout
        with StoreClient([p.address for p in procs], token="compose-test-token") as client:
            n = int(compose_config["services"]["store-0"]["environment"]["ISLOADER_NUM_SAMPLES"])
            assert client.num_samples == n
            client.update(np.array([0, n - 1]), np.array([2.0, 3.0]))
            np.testing.assert_allclose(client.lookup(np.array([0, n - 1])), [2.0, 3.0])
    finally:
        for proc in procs:
            proc.stop()


def test_health_command_fails_for_a_dead_address() -> None:
    check = subprocess.run(
        [sys.executable, "-m", "isloader.cli", "store", "health", "127.0.0.1:1", "--timeout", "1"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1


def _extras(name: str, pyproject: dict) -> set[str]:
    """Every requirement the core plus extra ``name`` pulls in, extras expanded."""
    project = pyproject["project"]
    out, todo = set(project["dependencies"]), [name]
    while todo:
        for req in project["optional-dependencies"][todo.pop()]:
            if req.startswith("isloader["):
                todo.append(req[len("isloader[") : -1])
            else:
                out.add(req)
    return out


def test_dockerfiles_lint() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    store = (ROOT / "docker" / "store.Dockerfile").read_text()
    assert '".[store]"' in store
    assert "USER isloader" in store and "HEALTHCHECK" in store
    run_lines = " ".join(line for line in store.splitlines() if not line.startswith("#"))
    assert "torch" not in run_lines and " ray" not in run_lines.lower()
    store_reqs = " ".join(_extras("store", pyproject)).lower()
    assert "torch" not in store_reqs and "ray" not in store_reqs
    trainer = (ROOT / "docker" / "trainer.Dockerfile").read_text()
    assert "USER trainer" in trainer and '".[demo]"' in trainer
    assert _entrypoint(ROOT / "docker" / "trainer.Dockerfile") == ["isloader"]
    for command in (["store", "serve", "--help"], ["demo", "--help"], ["demo-data", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "isloader.cli", *command], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr


# What the store image lacks; its commands must not import them.
_BLOCK_TRAINING_STACK = """
import sys
class Block:
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in ("torch", "ray", "pyarrow", "matplotlib"):
            raise ModuleNotFoundError(f"No module named {name!r} (not in the store image)")
sys.meta_path.insert(0, Block())
from isloader.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "command", [["store", "serve", "--help"], ["store", "health", "127.0.0.1:1", "--timeout", "1"]]
)
def test_store_commands_run_without_the_training_stack(command) -> None:
    """The store image installs ``.[store]`` only: its entrypoint and HEALTHCHECK must not
    import torch, Ray or pyarrow (the demo's flags once did, and the image crashed)."""
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK_TRAINING_STACK, *command], capture_output=True, text=True
    )
    assert "not in the store image" not in result.stderr, result.stderr
    assert result.returncode == (0 if "--help" in command else 1), result.stderr


def test_env_example_documents_every_compose_variable() -> None:
    import re

    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    documented = {
        line.split("=", 1)[0]
        for line in (ROOT / "deploy" / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= documented, f"undocumented: {sorted(used - documented)}"
