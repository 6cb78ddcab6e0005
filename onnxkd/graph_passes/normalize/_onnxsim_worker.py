"""Run onnxsim on one file, in a process of its own: ``python _onnxsim_worker.py IN OUT``.

A separate process because onnxsim can hang or abort on odd graphs (the caller kills it after a timeout
and falls back), and because ``import onnxsim`` would import torch, which graph_passes never does.
This file imports nothing from onnxkd, so the worker starts in well under a second.
"""

import sys

# onnxsim imports torch only for features we do not use; blocking it keeps the worker light.
sys.modules["torch"] = None  # type: ignore[assignment]

import onnx  # noqa: E402
import onnxsim  # noqa: E402

PROTOBUF_LIMIT = 2**31 - 2**20


def main(source: str, target: str) -> None:
    model = onnx.load(source)
    # Only constant folding and shape inference: onnxsim's optimizer fuses BN into Conv, q/k/v Gemms into
    # one, and attention into com.microsoft ops, which would change the structure the pruner works on.
    simplified, ok = onnxsim.simplify(model, check_n=0, perform_optimization=False)
    if not ok:
        raise SystemExit("onnxsim reported the simplified model as invalid")
    large = sum(len(t.raw_data) for t in simplified.graph.initializer) > PROTOBUF_LIMIT // 2
    onnx.save(simplified, target, save_as_external_data=large, location=target.rsplit("/", 1)[-1] + ".data")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
