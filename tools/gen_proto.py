"""Regenerate isloader/_proto from proto/ (run `make proto`; a test checks it is current).

protoc names modules after the proto path (``isloader.v1``); the generated files
live flat in ``isloader/_proto`` so their cross-import is rewritten to match.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "isloader" / "_proto"
SOURCES = ["isloader/v1/store.proto"]


def generate() -> dict[str, str]:
    """The generated files' names and text, from the current proto sources."""
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}"]
        args += [f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        if protoc.main([*args, *SOURCES]) != 0:
            raise SystemExit("protoc failed")
        files = {}
        for path in sorted(Path(tmp, "isloader", "v1").iterdir()):
            text = path.read_text().replace(
                "from isloader.v1 import", "from isloader._proto import"
            )
            files[path.name] = text
    return files


def main() -> None:
    for name, text in generate().items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote {OUT_DIR / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
