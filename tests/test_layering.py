"""The import rules of shared/DESIGN.md, checked on the source: layers only import downwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "onnxkd"

# layer folder -> top-level modules it must never import
FORBIDDEN = {
    "graph_passes": {"torch", "onnxruntime", "onnxkd.torch_bridge", "onnxkd.distill", "onnxkd.validate", "onnxkd.report"},
    "validate": {"torch", "onnxkd.torch_bridge", "onnxkd.distill"},
    "report": {"torch", "onnxruntime", "onnxkd.torch_bridge", "onnxkd.distill", "onnxkd.validate"},
    "distill": {"onnxruntime", "onnxkd.validate", "onnxkd.report", "onnxkd.pipeline", "onnxkd.commands", "onnxkd.cli"},
    "torch_bridge": {"onnxruntime", "onnxkd.distill", "onnxkd.validate", "onnxkd.report", "onnxkd.pipeline"},
    "quantize": {"torch", "onnxkd.torch_bridge", "onnxkd.distill", "onnxkd.report", "onnxkd.pipeline", "onnxkd.commands"},
    "data": {"torch", "onnxruntime", "onnxkd.torch_bridge", "onnxkd.distill", "onnxkd.validate", "onnxkd.report"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downwards(layer):
    violations = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            for banned in FORBIDDEN[layer]:
                if name == banned or name.startswith(banned + "."):
                    violations.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not violations, "\n".join(violations)


def test_pruning_rules_never_import_the_analysis_that_dispatches_to_them():
    """dependency -> rules -> (registry, layout, groups): a rule module importing the analysis (or a family
    importing the package that loads it) would bring back the import cycle the rules/ package removed."""
    rules = PACKAGE / "graph_passes" / "analyze" / "rules"
    violations = [f"{path.relative_to(PACKAGE)} imports {name}" for path in sorted(rules.glob("*.py"))
                  for name in _imports(path)
                  if name in ("onnxkd.graph_passes.analyze.dependency", "onnxkd.graph_passes.analyze.rules")]
    assert not violations, "\n".join(violations)
    assert "onnxkd.graph_passes.analyze.dependency" not in _imports(PACKAGE / "graph_passes" / "analyze" / "layout.py")


def test_import_onnxkd_and_cli_help_do_not_load_torch():
    code = (
        "import sys, onnxkd, onnxkd.cli, onnxkd.graph_passes, onnxkd.validate\n"
        "heavy = [m for m in ('torch', 'onnxruntime') if m in sys.modules]\n"
        "assert 'torch' not in sys.modules, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_command_has_a_one_line_description_and_an_example():
    from click.testing import CliRunner

    from onnxkd.cli import COMMANDS, cli

    runner = CliRunner()
    assert COMMANDS, "no command registered"
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example" in result.output, f"`onnxkd {name} --help` shows no example"
        listing = runner.invoke(cli, ["--help"]).output
        assert name in listing
