"""``onnxkd prune`` and the groups section of ``onnxkd inspect``: output, errors, atomic writes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from cli_runner import cli
from prune_oracle import assert_close, random_inputs, run

from onnxkd.graph_passes.api import read_plan


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prune_writes_a_valid_smaller_model(zoo_model, tmp_path, capsys):
    source = zoo_model("resnet", "legacy")
    before = digest(source)
    out = tmp_path / "small.onnx"
    code, stdout, _ = cli(capsys, "prune", str(source), "--ratio", "0.5", "-o", str(out))
    assert code == 0, stdout
    assert "channel groups" in stdout and "MACs" in stdout and "Wrote" in stdout
    assert "round-to 16 left 3 narrow groups whole" in stdout  # its 16-wide groups, said so
    onnx.checker.check_model(str(out), full_check=True)
    assert read_plan(out)
    assert digest(source) == before
    assert list(tmp_path.iterdir()) == [out]  # no temp files left


def test_unsized_dynamic_dims_leave_macs_out_and_say_which_flag_sizes_them(zoo_model, tmp_path, capsys):
    source = zoo_model("transformer", "legacy", dynamic_seq=True)
    code, stdout, _ = cli(capsys, "prune", str(source), "--ratio", "0.5", "-o", str(tmp_path / "p.onnx"))
    assert code == 0 and "give --input-shape NAME=D0,D1,.. or --data" in stdout, stdout
    code, stdout, _ = cli(capsys, "prune", str(source), "--ratio", "0.5", "-o", str(tmp_path / "q.onnx"),
                          "--input-shape", f"{onnx.load(str(source)).graph.input[0].name}=1,12")
    assert code == 0 and "--input-shape" not in stdout.split("Wrote")[0], stdout


def test_the_python_api_checks_input_shapes_as_the_flag_does(zoo_model):
    """prune(input_shapes=...) took an unknown name or a wrong rank and summarised MACs of None or 0; a lone
    "x=1,3,32,32" string, as the flag takes it, was read character by character by validate."""
    import onnxkd

    source = zoo_model("resnet", "legacy")
    [name] = [i.name for i in onnx.load(str(source)).graph.input]
    with pytest.raises(onnxkd.OnnxkdError, match="has no input 'nope'"):
        onnxkd.prune(source, 0.5, input_shapes={"nope": [1, 3, 32, 32]})
    with pytest.raises(onnxkd.OnnxkdError, match="rank 3"):
        onnxkd.prune(source, 0.5, input_shapes={name: [1, 3, 32]})
    at_two = onnxkd.prune(source, 0.5, input_shapes=f"{name}=2,3,32,32").summary
    at_one = onnxkd.prune(source, 0.5, input_shapes={name: [1, 3, 32, 32]}).summary
    assert at_two["macs_before"] == 2 * at_one["macs_before"] > 0
    result = onnxkd.validate(source, source, input_shapes=f"{name}=1,3,32,32", runs=3, warmup=1, budget_s=0.1)
    assert result.to_dict()["teacher"]["inputs"][0]["measured_shape"] == [1, 3, 32, 32]
    # a batch given there is not what validate runs at: said (it was dropped without a word)
    batched = onnxkd.validate(source, source, input_shapes=f"{name}=2,3,32,32", runs=3, warmup=1, budget_s=0.1)
    assert any("its batch (2) is not used" in w for w in batched.warnings)
    assert not any("is not used" in w for w in result.warnings)


def test_a_model_with_nothing_to_cut_is_written_as_it_is_with_why(tmp_path, capsys):
    linear = helper.make_model(helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["logits"], transB=1)], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(np.ones((10, 64), np.float32), "w")]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(linear, tmp_path / "linear.onnx")
    code, stdout, _ = cli(capsys, "prune", str(tmp_path / "linear.onnx"), "--ratio", "0.5", "-o", str(tmp_path / "p.onnx"))
    assert code == 0, stdout
    assert "nothing was cut: its only channel group is frozen (graph output 'logits')" in stdout


def test_prune_json_summary(zoo_model, tmp_path, capsys):
    out = tmp_path / "small.onnx"
    code, stdout, _ = cli(capsys, "prune", str(zoo_model("mobilenetv3", "dynamo")), "--ratio", "0.3", "--global",
                          "--round-to", "2", "--criterion", "l2", "--ignore", "head", "-o", str(out), "--json")
    assert code == 0
    data = json.loads(stdout)
    assert data["summary"]["macs_after"] < data["summary"]["macs_before"]
    assert data["summary"]["params_after"] < data["summary"]["params_before"]


def test_round_to_defaults_to_16_and_a_recipe_or_flag_changes_it(zoo_model, tmp_path, capsys):
    source = zoo_model("mobilenetv2", "legacy")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"prune": {"round_to": 1}}))
    runs = {}
    for label, extra in (("default", []), ("recipe", ["--recipe", str(recipe)]), ("flag", ["--round-to", "8"])):
        out = tmp_path / f"{label}.onnx"
        code, stdout, stderr = cli(capsys, "prune", str(source), "--ratio", "0.5", "-o", str(out), "--json", *extra)
        assert code == 0, stderr
        runs[label] = json.loads(stdout)
    assert [runs[k]["round_to"] for k in ("default", "recipe", "flag")] == [16, 1, 8]
    assert all(len(kept) % 16 == 0 for kept in runs["default"]["plan"].values())
    narrow = runs["default"]["summary"]["whole_by_rounding"]  # 16-wide groups: kept whole, and said so
    assert narrow and all(len(runs["default"]["plan"][str(g)]) == 16 for g in narrow)
    assert all(len(runs["recipe"]["plan"][str(g)]) == 8 for g in narrow)
    assert runs["recipe"]["summary"]["whole_by_rounding"] == []
    assert any(len(kept) % 8 for kept in runs["recipe"]["plan"].values())  # exact halves of 24, 40, ...
    macs = [runs[k]["summary"]["macs_after"] for k in ("recipe", "flag", "default")]
    assert macs == sorted(macs) and macs[0] < macs[2]


def test_recipe_file(zoo_model, tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"prune": {"overrides": {".": 0.0}}}))
    out = tmp_path / "same.onnx"
    source = zoo_model("resnet", "dynamo")
    code, stdout, _ = cli(capsys, "prune", str(source), "--ratio", "0.5", "--recipe", str(recipe), "-o", str(out), "--json")
    assert code == 0
    assert json.loads(stdout)["summary"]["pruned"] == 0
    feeds = random_inputs(source)
    assert_close(run(out, feeds), run(source, feeds))


def test_a_recipe_saved_for_another_teacher_is_said_so(zoo_model, tmp_path, capsys):
    """As compress says it: group ids and per-node overrides may name other layers of another teacher."""
    source = zoo_model("resnet", "legacy")
    recipe = tmp_path / "recipe.json"
    for sha, warned in (("0" * 64, True), (digest(source), False)):
        recipe.write_text(json.dumps({"prune": {"ratio": 0.5}, "teacher_sha256": sha}))
        code, stdout, stderr = cli(capsys, "prune", str(source), "--recipe", str(recipe), "-o", str(tmp_path / "p.onnx"))
        assert code == 0, stderr
        assert ("the recipe was made for another teacher" in stderr) == warned


@pytest.mark.parametrize("case", ["corrupt", "ratio_high", "ratio_negative", "same_path", "missing_dir", "bad_regex",
                                  "missing_input"])
def test_bad_input_is_one_line_error_and_no_output(zoo_model, tmp_path, capsys, case):
    source = zoo_model("resnet", "legacy")
    out = tmp_path / "out.onnx"
    args = [str(source), "--ratio", "0.5", "-o", str(out)]
    if case == "corrupt":
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(b"\x08\x07garbage not a protobuf")
        args[0] = str(bad)
    elif case == "ratio_high":
        args[2] = "1.0"
    elif case == "ratio_negative":
        args[2] = "-0.1"
    elif case == "same_path":
        args[-1] = str(source)
    elif case == "missing_dir":
        out = tmp_path / "nope" / "out.onnx"
        args[-1] = str(out)
    elif case == "bad_regex":
        args += ["--ignore", "(unclosed"]
    elif case == "missing_input":
        args[0] = str(tmp_path / "missing.onnx")
    before = digest(source)
    code, stdout, stderr = cli(capsys, "prune", *args)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert not out.exists()
    assert digest(source) == before


def test_unwritable_output_folder(zoo_model, tmp_path, capsys):
    import os

    if os.geteuid() == 0:
        target = "/proc/onnxkd-out.onnx"  # root may write anywhere else
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "out.onnx")
    code, _, stderr = cli(capsys, "prune", str(zoo_model("resnet", "legacy")), "--ratio", "0.5", "-o", target)
    assert code == 2 and stderr.startswith("Error: ") and len(stderr.strip().splitlines()) == 1


def test_inspect_lists_groups(zoo_model, capsys):
    path = zoo_model("transformer", "legacy")
    code, stdout, _ = cli(capsys, "inspect", str(path), "--json")
    assert code == 0
    groups = json.loads(stdout)["groups"]
    assert {g["status"] for g in groups} == {"prunable", "frozen"}
    assert all(g["reason"] for g in groups if g["status"] == "frozen")
    code, stdout, _ = cli(capsys, "inspect", str(path))
    assert "Channel groups" in stdout
