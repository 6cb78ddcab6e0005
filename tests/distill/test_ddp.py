"""Several processes: `torchrun --nproc-per-node 2 -m onnxkd distill` (gloo on CPU) trains the same student
as one process with the same global batch — DDP averages the two halves' gradients into the whole's."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

import onnxkd


def _initializers(path):
    return {n: v.const_value.numpy() for n, v in onnxkd.load(path).graph.initializers.items()}


def test_two_gloo_processes_match_one_process(digits, digits_student, small_digits, tmp_path):
    args = [str(digits["teacher"]), str(digits_student), "--data", str(small_digits["train"]), "--val-data",
            str(small_digits["val"]), "--epochs", "2", "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.02",
            "--seed", "5"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, "-m", "onnxkd", "distill", *args, "-o", str(tmp_path / "one.onnx")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "onnxkd", "distill", *args, "-o", str(tmp_path / "two.onnx"), "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    import json

    report = json.loads(ddp.stdout)  # rank 0 alone prints
    assert report["world_size"] == 2 and report["device"] == "cpu"
    assert not (tmp_path / "two.onnx.work").exists()
    one, two = _initializers(tmp_path / "one.onnx"), _initializers(tmp_path / "two.onnx")
    assert one.keys() == two.keys()
    changed = 0
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
        changed += not np.array_equal(one[name], _initializers(digits_student)[name])
    assert changed  # it trained


def test_more_processes_than_gpus_is_one_clear_error(monkeypatch):
    """torchrun --nproc-per-node 2 on a one-GPU machine: rank 1 has no GPU of its own. Without the check it
    failed deep in CUDA ("invalid device ordinal", exit 3); CUDA is faked here, the check runs before any of it."""
    import pytest
    import torch

    from onnxkd.distill import distributed
    from onnxkd.distill.api import resolve_device
    from onnxkd.errors import OnnxkdError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    message = r"torchrun started 2 processes on this machine but torch sees 1 GPU\(s\): use --nproc-per-node 1"
    with pytest.raises(OnnxkdError, match=message):
        distributed.init("auto")
    with pytest.raises(OnnxkdError, match=message):
        resolve_device("cuda", distributed.World(rank=1, size=2, local_rank=1))
    assert resolve_device("cuda", distributed.World(rank=0, size=2, local_rank=0)) == torch.device("cuda", 0)


def test_torchrun_compress_runs_the_pipeline_once_and_trains_as_one_process(digits, small_digits, tmp_path):
    """Every rank ran the whole pipeline: two summaries, two report.json documents on stdout, the student written
    twice (one weights file left unreferenced), the work files raced. Rank 0 alone prunes, validates and writes;
    the other rank only trains with it: the student is the one process's, and stdout is one JSON document."""
    import json

    args = [str(digits["teacher"]), "--ratio", "0.5", "--data", str(small_digits["train"]), "--val-data",
            str(small_digits["val"]), "--epochs", "2", "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.02",
            "--seed", "5", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    runs = {}
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"])):
        folder = tmp_path / name
        folder.mkdir()
        command = [sys.executable, *launcher, "-m", "onnxkd", "compress", *args, "-o", str(folder / "s.onnx")]
        runs[name] = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert runs[name].returncode == 0, runs[name].stderr[-3000:]
    report = json.loads(runs["two"].stdout)  # one document: rank 0 alone prints
    assert report["compress"]["distill"]["world_size"] == 2
    assert runs["two"].stderr.count("[1/5] prune") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["s.onnx", "s.recipe.json", "s.report"]
    one, two = _initializers(tmp_path / "one" / "s.onnx"), _initializers(tmp_path / "two" / "s.onnx")
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)
