"""The import direction of docs/ARCHITECTURE.md, checked on the source (no imports executed).

Layers, lowest first; a module may import its own layer or lower ones only:

    0  ops, config, weights
    1  models
    2  data, promptgen
    3  evaluation
    4  train
    5  api, sweep, report
    6  main, cli, conversion, bench, the package's __init__

torch is imported only by ``conversion`` and ``bench`` (conversion, parity references and PyTorch
benchmarks), and ``conversion`` only by the ``medvlsm-convert`` CLI and the benchmarks.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "medvlsm_jax"
DOC = PKG.parent / "docs" / "ARCHITECTURE.md"

LAYERS = {
    "ops": 0, "config": 0, "weights": 0,
    "models": 1,
    "data": 2, "promptgen": 2,
    "evaluation": 3,
    "train": 4,
    "api": 5, "sweep": 5, "report": 5,
    "main": 6, "cli": 6, "conversion": 6, "bench": 6, "__init__": 6,
}
TORCH_USERS = {"conversion", "bench"}
CONVERSION_USERS = {"conversion", "bench", "cli"}
NOT_PACKAGES = {"configs", "benchmarks", "weight_conversion"}  # only medvlsm_jax is installed


def _component(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: pathlib.Path, package: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative imports resolved against
    ``package`` (the file's own package)."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out.append((node.lineno, base))
            # `from medvlsm_jax import weights` imports the submodule medvlsm_jax.weights
            if base == "medvlsm_jax":
                out += [(node.lineno, f"medvlsm_jax.{a.name}") for a in node.names]
    return out


def _target_component(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "medvlsm_jax" or len(parts) == 1:
        return None
    return parts[1]


SOURCES = sorted(PKG.rglob("*.py"))


def test_every_component_has_a_layer():
    assert {_component(p) for p in SOURCES} <= set(LAYERS), "add new top-level modules to LAYERS and the doc"


def _violations(path: pathlib.Path, src: str, package: str) -> list[str]:
    wrong = []
    for line, module in _imports(path, package):
        target = _target_component(module)
        if target is not None and target in LAYERS and LAYERS[target] > LAYERS[src]:
            wrong.append(f"line {line}: {src} (layer {LAYERS[src]}) imports {module} (layer {LAYERS[target]})")
        if module.split(".")[0] == "torch" and src not in TORCH_USERS:
            wrong.append(f"line {line}: torch imported outside conversion/bench")
        if target == "conversion" and src not in CONVERSION_USERS:
            wrong.append(f"line {line}: {module} imported by {src}")
        if module.split(".")[0] in NOT_PACKAGES:
            wrong.append(f"line {line}: {module} is a folder of the repository, not an installed package")
    return wrong


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_flow_one_way(path):
    package = ".".join(("medvlsm_jax", *path.relative_to(PKG).with_suffix("").parts[:-1]))
    wrong = _violations(path, _component(path), package)
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_wrong_way_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from medvlsm_jax.train import loop\nfrom ..evaluation import metrics\nimport torch\n"
                     "from medvlsm_jax import api\nfrom medvlsm_jax.conversion import rules\n"
                     "from weight_conversion.rules import ConversionError\n")
    wrong = _violations(probe, "models", "medvlsm_jax.models")
    assert wrong == ["line 1: models (layer 1) imports medvlsm_jax.train (layer 4)",
                     "line 2: models (layer 1) imports medvlsm_jax.evaluation (layer 3)",
                     "line 3: torch imported outside conversion/bench",
                     "line 4: models (layer 1) imports medvlsm_jax.api (layer 5)",
                     "line 5: models (layer 1) imports medvlsm_jax.conversion (layer 6)",
                     "line 5: medvlsm_jax.conversion imported by models",
                     "line 6: weight_conversion.rules is a folder of the repository, not an installed package"]
    assert _violations(probe, "bench", "medvlsm_jax.bench") == [
        "line 6: weight_conversion.rules is a folder of the repository, not an installed package"]


def test_the_document_states_the_same_layers():
    text = DOC.read_text()
    for name in LAYERS:
        if name != "__init__":
            assert f"`{name}`" in text, f"docs/ARCHITECTURE.md does not mention `{name}`"
    assert "imports flow one way" in text.lower()
