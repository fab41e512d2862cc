"""Generates the ``tdev`` package (gRPC code and a descriptor set with comments) from protos/ with protoc.

One generator for both places the code is needed: ``make proto`` (``python scripts/protogen.py gen``) and the
wheel build (setup.py's build_py hook loads this file by path), so a wheel from a clean checkout has the same
code as a developer's gen/. Needs only grpcio-tools, nothing of the project.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# What reflection serves: the services' own files with their comments, plus the vendored google.rpc files so a
# client can fetch the error detail types (ErrorInfo, BadRequest, ...) from a running service too.
DESCRIPTOR_SET = "descriptor_set.binpb"
VENDORED = ("google/rpc/status.proto", "google/rpc/error_details.proto", "google/rpc/code.proto")


def tdev_protos(protos: Path) -> list[str]:
    """The project's own .proto files, relative to ``protos`` (sorted, so the output does not depend on order)."""
    return sorted(path.relative_to(protos).as_posix() for path in (protos / "tdev").rglob("*.proto"))


def _protoc(protos: Path, arguments: list[str]) -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(["grpc_tools.protoc", f"-I{protos}", f"-I{well_known}", *arguments])
    if code != 0:
        raise RuntimeError(f"protoc failed (exit {code}): {' '.join(arguments)}")


def generate(protos: Path, out: Path) -> Path:
    """Writes ``out/tdev``: *_pb2.py, *_pb2.pyi, *_pb2_grpc.py, __init__.py and py.typed in every directory,
    and ``tdev/descriptor_set.binpb`` (source info and imports included). Returns ``out/tdev``.

    Raises:
        RuntimeError: when protoc reports an error (the message names the arguments).
    """
    package = out / "tdev"
    shutil.rmtree(package, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    files = tdev_protos(protos)
    # Python code only for the project's packages: google.rpc's Python code comes from googleapis-common-protos
    # (a dependency of grpcio-status); a second copy would clash with it in the default descriptor pool.
    _protoc(protos, [f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *files])
    _protoc(
        protos,
        [f"--descriptor_set_out={package / DESCRIPTOR_SET}", "--include_source_info", "--include_imports",
         *files, *VENDORED],
    )
    for directory in [package, *(path for path in package.rglob("*") if path.is_dir())]:
        (directory / "__init__.py").touch()
        (directory / "py.typed").touch()
    return package


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/protogen.py OUT_DIR   (writes OUT_DIR/tdev from protos/)")
    generate(Path(__file__).resolve().parents[1] / "protos", Path(sys.argv[1]))
