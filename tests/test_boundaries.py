"""Architecture rules that a test can keep honest."""

import subprocess
import sys
from pathlib import Path

import grpc

from isloader import errors
from isloader.store.status import ERROR_FOR_STATUS, STATUS_FOR_ERROR, error_for, status_for

ROOT = Path(__file__).resolve().parents[1]


def test_store_and_data_import_neither_torch_nor_ray() -> None:
    code = (
        "import sys, isloader, isloader.store.server, isloader.store.client, "
        "isloader.store.local, isloader.data.catalog, isloader.data.reader; "
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"loaded: {result.stdout} {result.stderr}"


def test_every_grpc_status_code_maps_to_an_error() -> None:
    assert set(ERROR_FOR_STATUS) == set(grpc.StatusCode)
    for code in grpc.StatusCode:
        assert isinstance(error_for(code, "x"), errors.IsloaderError)


def test_error_to_status_round_trips_for_every_mapped_error() -> None:
    for kind, code in STATUS_FOR_ERROR:
        exc = kind("x") if not issubclass(kind, errors.ShardError) else kind("u", "x")
        assert status_for(exc) == code
        received = error_for(code, "x")  # what a client raises: the kind, or what it refines
        assert isinstance(received, kind) or issubclass(kind, type(received))


def test_generated_protobuf_code_is_current() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    for name, text in gen_proto.generate().items():
        committed = (ROOT / "isloader" / "_proto" / name).read_text()
        assert committed == text, f"isloader/_proto/{name} is stale: run `make proto`"
