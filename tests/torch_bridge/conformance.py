"""Run the ONNX backend node suite (shipped inside the onnx package) through the torch bridge.

``python tests/torch_bridge/conformance.py [--pattern REGEX] [--show-failures] [--record]``
prints the pass count; ``--record`` rewrites conformance_passing.txt, the list the test holds us to.
"""

from __future__ import annotations

import argparse
import re
import sys
import unittest
from pathlib import Path

import onnx.backend.test

HERE = Path(__file__).parent
PASSING_FILE = HERE / "conformance_passing.txt"


def run_node_suite(pattern: str | None = None) -> dict[str, str]:
    """Case name -> "pass" | failure text, for every node case of the onnx backend suite."""
    import torch

    from onnxkd.torch_bridge.backend import TorchBridgeBackend

    torch.set_num_threads(1)
    runner = onnx.backend.test.BackendTest(TorchBridgeBackend, __name__)
    cases = runner._test_items["NodeModel"]  # noqa: SLF001  (the public API only offers unittest suites)
    results: dict[str, str] = {}
    holder = unittest.TestCase()
    for name, item in sorted(cases.items()):
        if not name.endswith("_cpu") or (pattern and not re.search(pattern, name)):
            continue
        try:
            item.func(holder)
            results[name] = "pass"
        except unittest.SkipTest as exc:
            results[name] = f"skip: {exc}"
        except BaseException as exc:  # noqa: BLE001  (every failure mode is a data point here)
            if isinstance(exc, KeyboardInterrupt):
                raise
            text = str(exc).strip().splitlines()
            results[name] = f"{type(exc).__name__}: {text[0][:300] if text else ''}"
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pattern")
    parser.add_argument("--show-failures", action="store_true")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    results = run_node_suite(args.pattern)
    passed = sorted(n for n, r in results.items() if r == "pass")
    if args.show_failures:
        for name, result in sorted(results.items()):
            if result != "pass":
                print(f"{name}: {result}")
    print(f"{len(passed)} of {len(results)} node cases pass")
    if args.record:
        PASSING_FILE.write_text("\n".join(passed) + "\n")
        print(f"recorded in {PASSING_FILE}")


if __name__ == "__main__":
    sys.exit(main())
