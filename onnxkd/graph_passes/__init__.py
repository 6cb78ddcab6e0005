"""ONNX -> ONNX, torch-free. One folder per stage, in the order a prune runs them:

- ``normalize/``: one canonical form of any exporter's graph (``canonical``), then the form the analysis reads
  (``prepare``: weights as initializers, untied, split sizes and slice bounds as constants);
- ``analyze/``: channel layouts followed op by op (``rules/``) into the channel groups cut together;
- ``prune/``: importance scores, the plan (kept channels per group), the rewrite, plans composed over steps;
- ``metrics``: parameters, MACs and size; ``optimize/``: fusions for the runtime, on the finished student.

``api`` is the entry point (``prune``, ``channel_groups``, ``prune_with_plan``).
"""
