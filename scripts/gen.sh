#!/usr/bin/env bash
# Regenerates gen/ from protos/: messages, gRPC stubs and mypy .pyi stubs.
# The proto package is the Python package: protos/herald/x/v1/*.proto becomes
# gen/herald/x/v1/*_pb2.py, imported as herald.x.v1 with gen/ on the path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
protos=$(find protos -name '*.proto' | sort)
rm -rf gen/herald
mkdir -p gen
wkt=$($PY -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
# shellcheck disable=SC2086
$PY -m grpc_tools.protoc -I protos -I "$wkt" \
  --python_out=gen --grpc_python_out=gen \
  --plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy --mypy_out=quiet:gen \
  --plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc --mypy_grpc_out=quiet:gen \
  $protos
# Every generated directory is a regular package so `import herald.x.v1` works
# from an installed wheel as well as from the source tree.
find gen/herald -type d -exec sh -c 'for d; do [ -f "$d/__init__.py" ] || : > "$d/__init__.py"; done' sh {} +
