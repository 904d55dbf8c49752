"""Renders deploy/kubernetes's kustomizations without kubectl, so the overlays are checked
where kubectl is not installed (CI installs nothing but Python).

Only the part of kustomize these files use: `resources` (files and directories),
`components`, `patches` given inline as JSON 6902 operations and aimed by kind, name and
label selector, `namespace` and `images`. Anything else fails loudly instead of being
ignored, and test_manifests.py checks that this renders exactly what `kubectl kustomize`
renders wherever kubectl is installed. Patches are inline on purpose: a partial manifest
in its own file would fail the schema check every manifest file gets.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

_FIELDS = {"apiVersion", "kind", "namespace", "resources", "components", "patches", "images"}
_CLUSTER_SCOPED = {"Namespace"}


def render(directory: Path) -> list[dict[str, Any]]:
    """The documents `kubectl kustomize directory` prints, in no particular order."""
    return _build(directory, "Kustomization", [])


def _build(directory: Path, kind: str, accumulated: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert spec["kind"] == kind, f"{directory}: a {spec['kind']} where a {kind} belongs"
    unknown = set(spec) - _FIELDS
    assert not unknown, f"{directory}: kustomize fields this renderer does not know: {unknown}"
    docs = list(accumulated)
    for entry in spec.get("resources", []):
        docs += _resource(directory, entry)
    for entry in spec.get("components", []):
        docs = _build(_relative(directory, entry), "Component", docs)
    for patch in spec.get("patches", []):
        docs = _patch(directory, docs, patch)
    if "namespace" in spec:
        for doc in docs:
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        _set_image(docs, image)
    return docs


def _relative(directory: Path, entry: str) -> Path:
    assert not Path(entry).is_absolute(), f"{directory}: kustomize refuses absolute {entry}"
    return directory / entry


def _resource(directory: Path, entry: str) -> list[dict[str, Any]]:
    path = _relative(directory, entry)
    if path.is_dir():
        return _build(path, "Kustomization", [])
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _selected(doc: dict[str, Any], target: dict[str, str]) -> bool:
    unknown = set(target) - {"kind", "name", "labelSelector"}
    assert not unknown, f"patch targets by {unknown}: not supported here"
    if "kind" in target and doc["kind"] != target["kind"]:
        return False
    if "name" in target and doc["metadata"]["name"] != target["name"]:
        return False
    labels = doc["metadata"].get("labels", {})
    for requirement in filter(None, target.get("labelSelector", "").split(",")):
        key, _, value = requirement.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def _patch(
    directory: Path, docs: list[dict[str, Any]], patch: dict[str, Any]
) -> list[dict[str, Any]]:
    assert set(patch) == {"target", "patch"}, f"{directory}: inline patches with a target only"
    operations = yaml.safe_load(patch["patch"])
    assert isinstance(operations, list), f"{directory}: JSON 6902 patches only"
    hits = [doc for doc in docs if _selected(doc, patch["target"])]
    # kustomize lets a patch match nothing; here that is a mistake in a target.
    assert hits, f"{directory}: the patch for {patch['target']} matches nothing"
    result = []
    for doc in docs:
        if any(doc is hit for hit in hits):
            doc = copy.deepcopy(doc)
            for operation in operations:
                _apply(doc, operation)
        result.append(doc)
    return result


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply(doc: dict[str, Any], operation: dict[str, Any]) -> None:
    """One RFC 6902 operation (add, replace, remove), in place."""
    *parents, last = _pointer(operation["path"])
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if isinstance(node, list):
        if op == "add":
            node.insert(len(node) if last == "-" else int(last), operation["value"])
            return
        index = int(last)
        assert 0 <= index < len(node), f"{operation['path']} does not exist"
        if op == "replace":
            node[index] = operation["value"]
        elif op == "remove":
            del node[index]
        else:
            raise AssertionError(f"operation {op!r} is not supported here")
        return
    assert op in ("add", "replace", "remove"), f"operation {op!r} is not supported here"
    if op != "add":  # replace and remove need the member to exist; add may create it
        assert last in node, f"{operation['path']} does not exist"
    if op == "remove":
        del node[last]
    else:
        node[last] = operation["value"]


def _set_image(docs: list[dict[str, Any]], image: dict[str, str]) -> None:
    assert set(image) <= {"name", "newName", "newTag"}, image
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                new_tag = image.get("newTag", tag)
                new_name = image.get("newName", name)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name
