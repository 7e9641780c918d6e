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


def _loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys; {statement}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().split(",") if m]


def test_the_store_client_does_not_carry_the_server() -> None:
    heavy = ("isloader.store.shard", "isloader.store.wal", "isloader.store.snapshot",
             "isloader.store.service", "prometheus_client")  # fmt: skip
    assert _loaded_after("import isloader.store.client", heavy) == []


def test_the_data_plane_imports_neither_ray_nor_the_store() -> None:
    assert _loaded_after("import isloader.data.reader", ("ray", "isloader.store")) == []


def test_no_code_outside_the_formats_asks_which_format_it_has() -> None:
    import re

    pattern = re.compile(r"""(format|fmt)\s*[!=]=|[!=]=\s*["'](parquet|webdataset)["']""")
    formats = ROOT / "isloader" / "data" / "formats"
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (ROOT / "isloader").rglob("*.py")
        if formats not in path.parents
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


def _public_definitions(path: Path) -> list[tuple[str, bool]]:
    """``(name, has a docstring)`` of every public class, function and method in a file."""
    import ast

    found: list[tuple[str, bool]] = []

    def visit(nodes: list[ast.stmt], prefix: str) -> None:
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith("_"):
                    continue
                found.append((prefix + node.name, ast.get_docstring(node) is not None))
                if isinstance(node, ast.ClassDef):
                    visit(node.body, f"{prefix}{node.name}.")

    visit(ast.parse(path.read_text()).body, "")
    return found


def test_the_public_surface_of_every_subpackage_is_documented() -> None:
    package = ROOT / "isloader"
    by_part: dict[str, list[tuple[str, bool]]] = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).parts
        if parts[0] == "_proto":  # generated
            continue
        part = parts[0] if len(parts) > 1 else "(top level)"
        by_part.setdefault(part, []).extend(
            (f"{path.relative_to(ROOT)}:{name}", has) for name, has in _public_definitions(path)
        )
    assert {"store", "data", "pipeline", "demo", "(top level)"} <= set(by_part)
    for part, names in by_part.items():
        missing = [name for name, has in names if not has]
        assert len(missing) <= 0.05 * len(names), (part, missing)
