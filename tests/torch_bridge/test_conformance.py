"""The ONNX backend node suite through the bridge: the pass count must not drop, nor any recorded case regress.

Re-record after adding ops: ``python tests/torch_bridge/conformance.py --record`` (then raise PASS_FLOOR).
"""

from __future__ import annotations

from conformance import PASSING_FILE, run_node_suite

# The recorded pass count (of 1,884 node cases); the target is at least 1,500.
PASS_FLOOR = 1762


def test_node_suite_pass_count_and_no_regressions():
    results = run_node_suite()
    passed = {name for name, result in results.items() if result == "pass"}
    recorded = {line.strip() for line in PASSING_FILE.read_text().splitlines() if line.strip()}
    newly_failing = sorted(recorded - passed)
    detail = "\n".join(f"  {name}: {results.get(name, 'not run')}" for name in newly_failing)
    assert not newly_failing, f"{len(newly_failing)} recorded node cases now fail:\n{detail}"
    assert len(passed) >= PASS_FLOOR, f"{len(passed)} of {len(results)} node cases pass, below the recorded {PASS_FLOOR}"
    assert len(results) >= 1800, "the node suite was not found"
