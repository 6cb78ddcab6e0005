"""The one exception type for problems a user can fix (bad file, bad flag, bad data, unsupported op).

The CLI prints ``Error: <message>`` and exits 2 for it; anything else is a bug.
"""


class OnnxkdError(Exception):
    """A user-facing problem, carrying a one-line message."""

    exit_code = 2


class UnsupportedOpError(OnnxkdError):
    """The model uses an operator that a stage (e.g. the torch bridge) cannot handle."""

    def __init__(self, op_type: str, domain: str, opset: int, node_name: str):
        self.op_type, self.domain, self.opset, self.node_name = op_type, domain, opset, node_name
        shown_domain = domain or "ai.onnx"
        super().__init__(
            f"unsupported op {op_type} (domain {shown_domain}, opset {opset}) at node {node_name!r}"
        )
