"""`onnxkd compress` end to end: the student (checked by onnx and onnxruntime), the report, the recipe,
exit codes, Ctrl-C and failing stages (nothing half-written), --resume, and recipe replay."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from cli_runner import run_cli

from detector import export_detector, images

import onnxkd
from onnxkd.graph_passes.api import read_plan
from onnxkd.graph_passes.metrics import count_macs
from onnxkd.report.compress_tables import narrative

FAST = ["--epochs", "2", "--batch-size", "32"]


def _compress(*args):
    return run_cli("compress", *args)


def _compress_in_a_process(*args, timeout=600):
    """As a user runs it: `python -m onnxkd compress ...`."""
    return subprocess.run([sys.executable, "-m", "onnxkd", "compress", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def workspace(digits, small_digits, tmp_path):
    """A folder with the teacher and data, as a user has it."""
    shutil.copy(digits["teacher"], tmp_path / "teacher.onnx")
    shutil.copy(small_digits["train"], tmp_path / "train.npz")
    shutil.copy(small_digits["val"], tmp_path / "val.npz")
    return tmp_path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name not in ("teacher.onnx", "train.npz", "val.npz"))


def test_compress_writes_a_valid_smaller_student_a_report_and_a_recipe(workspace):
    run = _compress_in_a_process(workspace / "teacher.onnx", "--ratio", "0.5", "--data", workspace / "train.npz",
                                 "--val-data", workspace / "val.npz", *FAST)
    assert run.returncode == 0, run.stderr
    student = workspace / "teacher.student.onnx"
    assert _leftovers(workspace) == ["teacher.report", "teacher.student.onnx", "teacher.student.recipe.json"]
    onnx.checker.check_model(str(student), full_check=True)
    x = np.load(workspace / "val.npz")["image"]
    logits = ort.InferenceSession(str(student), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    assert logits.shape == (len(x), 10) and np.isfinite(logits).all()
    shape = {"image": [1, 1, 8, 8]}
    assert sum(count_macs(student, shape).values()) < 0.5 * sum(count_macs(workspace / "teacher.onnx", shape).values())
    assert read_plan(student)

    report = json.loads((workspace / "teacher.report" / "report.json").read_text())
    assert report["schema_version"] == "1.3" and report["passed"] is True
    assert report["student"]["path"] == str(student)
    # the file delivered, not the work folder's copy of it
    assert report["student"]["sha256"] == hashlib.sha256(student.read_bytes()).hexdigest()
    assert report["student"]["size_bytes"] == student.stat().st_size
    assert [s["name"] for s in report["compress"]["stages"]] == ["prune", "distill", "optimize", "validate"]
    split = report["compress"]["optimize"]["latency"]["rows"]  # teacher optimized alone was timed too
    assert [row["batch_size"] for row in split] == [1, 32]
    assert all(row["fusion_speedup"] > 0 and row["speedup"] == pytest.approx(
        report["speedup"]["p50"] if row["batch_size"] == 1 else report["speedup"]["batched"]["p50"]) for row in split)
    for row in split:  # a row's latencies divide into its speed-ups (the teacher optimized had its own run)
        assert row["teacher_ms"] / row["teacher_optimized_ms"] == pytest.approx(row["fusion_speedup"])
        assert row["teacher_optimized_measured_ms"] > 0
    assert report["compress"]["prune"]["criterion"] == "kd"  # data and no choice: teacher-guided
    assert len(report["compress"]["distill"]["history"]) == 2
    assert report["accuracy"]["student"] == pytest.approx(
        float((logits.argmax(1) == np.load(workspace / "val.npz")["labels"]).mean()))  # onnxruntime's figure
    layers = report["compress"]["prune"]["layers"]
    assert sum(row["macs_teacher"] for row in layers) == report["teacher"]["macs"]  # per layer adds up
    assert sum(row["macs_student"] for row in layers) == report["student"]["macs"]
    pruned = report["compress"]["pruned_quality"]["accuracy"]["student"]
    assert pruned < report["accuracy"]["student"] - 0.2  # what distillation bought, measured by onnxruntime
    html = (workspace / "teacher.report" / "report.html").read_text()
    assert "Where the speed-up comes from" in html
    assert "What was cut" in html and "What it bought" in html and "Training" in html and "Recipe" in html
    assert html.count("data:image/png;base64,") == 4  # channels, training curve, accuracy, latency
    md = (workspace / "teacher.report" / "report.md").read_text()
    assert md.startswith("# onnxkd compress") and "## Channels and MACs per layer" in md and "```json" in md
    recipe = json.loads((workspace / "teacher.student.recipe.json").read_text())
    assert recipe["prune"]["ratio"] == 0.5 and recipe["distill"]["epochs"] == 2 and recipe["teacher_sha256"]
    assert recipe["prune"]["criterion"] == "kd"  # what was used (null would replay as l1 without data)
    assert "What it bought" in run.stdout
    # whole paths on their own lines, however long the tmp path (rich wraps piped output at 80 columns)
    assert f"Student: {student}\n" in run.stdout and f"Report:  {workspace / 'teacher.report'}/report.html" in run.stdout


def test_recipe_replays_to_the_same_plan_and_prune_reads_it(workspace):
    first = _compress(workspace / "teacher.onnx", "--ratio", "0.6", "--criterion", "l1", "--data",
                      workspace / "train.npz", "--epochs", "1", "--seed", "4")
    assert first.returncode == 0, first.stderr
    recipe = workspace / "teacher.student.recipe.json"
    shutil.move(workspace / "teacher.student.onnx", workspace / "first.onnx")
    replay = _compress(workspace / "teacher.onnx", "--recipe", recipe, "--data", workspace / "train.npz",
                       "-o", workspace / "replay.onnx", "--report", workspace / "replay-report")
    assert replay.returncode == 0, replay.stderr
    assert read_plan(workspace / "replay.onnx") == read_plan(workspace / "first.onnx")
    again = json.loads((workspace / "replay.recipe.json").read_text())
    assert again["prune"] == json.loads(recipe.read_text())["prune"] and again["seed"] == 4
    # one format: onnxkd prune takes the compress recipe's prune section
    pruned = subprocess.run([sys.executable, "-m", "onnxkd", "prune", str(workspace / "teacher.onnx"), "--recipe",
                             str(recipe), "-o", str(workspace / "p.onnx")], capture_output=True, text=True)
    assert pruned.returncode == 0, pruned.stderr
    assert read_plan(workspace / "p.onnx") == read_plan(workspace / "first.onnx")


def test_a_failed_gate_exits_1_and_still_writes_student_and_report(workspace):
    run = _compress(workspace / "teacher.onnx", "--data", workspace / "train.npz", "--epochs", "1",
                    "--min-speedup", "1000", "-o", workspace / "s.onnx", "--report", workspace / "new" / "out")
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("Error: 1 gate(s) failed: speed-up p50")
    assert (workspace / "s.onnx").exists()  # and the report's folders are made, as validate makes them
    report = json.loads((workspace / "new" / "out" / "report.json").read_text())
    assert report["passed"] is False
    # no --val-data: 10% held out, which compress's and distill's parts of the report both say
    assert report["compress"]["held_out"] is True and report["compress"]["distill"]["data"]["val"]["held_out"] is True


@pytest.mark.parametrize("args, message", [
    (["-o", "{teacher}"], "the output path is the teacher"),
    (["--data", "{train}", "-o", "{train}"], "the output path is the data"),
    (["--data", "{train}", "--val-data", "{unlabelled}", "-o", "{unlabelled}"], "the output path is the validation data"),
    (["--ratio", "1.5"], "--ratio 1.5"),
    (["--max-accuracy-drop", "0.01", "--data", "{unlabelled}"], "--max-accuracy-drop needs --data with labels"),
    (["--max-accuracy-drop", "0.01", "--data", "{train}", "--val-data", "{unlabelled}"],
     "--max-accuracy-drop needs --val-data with labels"),  # what is measured on: not --data, which has labels
    (["--criterion", "taylor"], "--criterion taylor needs --data"),
    (["--recipe", "{bad_recipe}"], "unknown key"),
    (["--recipe", "{bad_round}"], "prune: round_to \"16\": expected an int or null"),
    (["--recipe", "{bad_section}"], "prune: expected a JSON object of settings, got 5"),
    (["--recipe", "{bad_gate}"], "validate: min_speedup \"1.5\": expected a number or null"),
    (["--provider", "tensorrt"], "--provider tensorrt"),
    (["--hint", "no/such/tensor"], "--hint no/such/tensor: no tensor of that name in the teacher graph"),
    (["--data", "{train}", "--val-data", "{labels_10}"], "labels10.npz: labels: class id 10 >= the 10 scores of output"),
])
def test_bad_input_is_refused_before_any_stage(workspace, args, message):
    np.savez(workspace / "unlabelled.npz", image=np.load(workspace / "train.npz")["image"])
    (workspace / "bad.json").write_text(json.dumps({"prune": {"ratoi": 0.5}}))
    (workspace / "round.json").write_text(json.dumps({"prune": {"round_to": "16"}}))
    (workspace / "section.json").write_text(json.dumps({"prune": 5}))
    (workspace / "gate.json").write_text(json.dumps({"validate": {"min_speedup": "1.5"}}))
    with np.load(workspace / "train.npz") as train:
        np.savez(workspace / "labels10.npz", image=train["image"], labels=np.full(len(train["labels"]), 10))
    paths = {"teacher": workspace / "teacher.onnx", "unlabelled": workspace / "unlabelled.npz",
             "bad_recipe": workspace / "bad.json", "bad_round": workspace / "round.json",
             "bad_section": workspace / "section.json", "bad_gate": workspace / "gate.json",
             "labels_10": workspace / "labels10.npz", "train": workspace / "train.npz"}
    run = _compress(workspace / "teacher.onnx", *[a.format(**paths) for a in args])
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], run.stderr
    assert _leftovers(workspace) == ["bad.json", "gate.json", "labels10.npz", "round.json", "section.json",
                                     "unlabelled.npz"]


def test_a_teacher_with_nothing_to_cut_is_refused_after_pruning_with_why(workspace):
    """A student that is its teacher is not worth distilling: one line saying why, exit 2, nothing written."""
    linear = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Gemm", ["image", "w"], ["logits"], transB=1)], "linear",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["n", 64])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 10])],
        [onnx.numpy_helper.from_array(np.ones((10, 64), np.float32), "w")]),
        opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(linear, workspace / "linear.onnx")
    train = np.load(workspace / "train.npz")
    np.savez(workspace / "flat.npz", image=train["image"].reshape(len(train["image"]), 64), labels=train["labels"])
    for teacher, data, extra, why in [
            ("linear.onnx", "flat.npz", [], "its only channel group is frozen (graph output 'logits')"),
            ("teacher.onnx", "train.npz", ["--round-to", "512"], "too narrow to cut at round-to 512")]:
        run = _compress(workspace / teacher, "--ratio", "0.5", "--data", workspace / data, *FAST, *extra)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: nothing to cut in {teacher} at ratio 0.5") \
            and why in lines[0], run.stderr
        assert _leftovers(workspace) == ["flat.npz", "linear.onnx"]


def test_with_int8_a_teacher_with_nothing_to_cut_goes_to_int8_as_it_is(workspace, monkeypatch):
    """The README's promise: with --int8, nothing to cut quantizes the teacher as it is. Distillation ran anyway
    and retrained it into another model (12% agreement with its teacher on an untrained one)."""
    import onnxkd.pipeline as pipeline

    quantized_from = []
    real_quantize = pipeline._quantize
    monkeypatch.setattr(pipeline, "_quantize",
                        lambda teacher, student, *a, **k: quantized_from.append(
                            _outputs(student, workspace)) or real_quantize(teacher, student, *a, **k))
    result = onnxkd.compress(workspace / "teacher.onnx", 0.5, workspace / "train.npz", epochs=2, round_to=512,
                             int8=True, qat=False, output=workspace / "s.onnx", report=False)
    distill = result.to_dict()["compress"]["distill"]
    assert distill["steps"] == 0 and "nothing was cut" in distill["skipped"]
    [float_student] = quantized_from
    np.testing.assert_allclose(float_student, _outputs(workspace / "teacher.onnx", workspace), rtol=1e-4, atol=1e-4)


def _outputs(model, workspace) -> np.ndarray:
    images = np.load(workspace / "val.npz")["image"]
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]


def test_ctrl_c_leaves_nothing_then_resume_finishes(workspace):
    args = [workspace / "teacher.onnx", "--data", workspace / "train.npz", "--val-data", workspace / "val.npz",
            "--epochs", "40", "--batch-size", "8"]
    process = subprocess.Popen([sys.executable, "-m", "onnxkd", "compress", *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = workspace / "teacher.student.onnx.work" / "distill" / "distill-checkpoint.pt"
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert checkpoint.exists(), process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert _leftovers(workspace) == ["teacher.student.onnx.work"]  # no student, no report, no recipe

    other = _compress(*["41" if a == "40" else a for a in args], "--resume")  # another recipe: named, refused
    assert other.returncode == 2 and "used another recipe (distill.epochs 40 -> 41)" in other.stderr, other.stderr
    resumed = _compress(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "prune: done before" in resumed.stdout and "resuming at epoch" in resumed.stdout
    assert _leftovers(workspace) == ["teacher.report", "teacher.student.onnx", "teacher.student.recipe.json"]


def test_a_failing_stage_leaves_no_student(workspace, monkeypatch):
    from onnxkd import pipeline

    def broken(*args, **kwargs):
        raise onnxkd.OnnxkdError("onnxruntime failed")

    monkeypatch.setattr(pipeline, "_validate", broken)
    with pytest.raises(onnxkd.OnnxkdError):
        onnxkd.compress(workspace / "teacher.onnx", 0.5, workspace / "train.npz", epochs=1)
    assert not (workspace / "teacher.student.onnx").exists() and not (workspace / "teacher.report").exists()


def test_val_data_that_is_the_training_data_is_said_not_to_be_held_out(workspace):
    """The same file (by another path) as --data and --val-data: the run warns, and the report does not call
    training samples held-out."""
    run = _compress(workspace / "teacher.onnx", "--ratio", "0.5", "--data", workspace / "train.npz",
                    "--val-data", workspace / ".." / workspace.name / "train.npz", "--epochs", "1", "--no-optimize")
    assert run.returncode == 0, run.stderr
    assert "warning: --val-data is the --data file" in run.stdout
    report = json.loads((workspace / "teacher.report" / "report.json").read_text())
    assert report["compress"]["val_is_train"] is True and report["compress"]["held_out"] is False
    assert report["compress"]["distill"]["data"]["val"]["held_out"] is False
    text = (workspace / "teacher.report" / "report.md").read_text()
    assert "on 300 samples it was trained on (--val-data was --data)" in text and "held-out samples" not in text


def test_a_report_that_fails_leaves_no_student_file_half_placed(workspace, monkeypatch):
    """The student is written beside its output before the report (to hash the file delivered): a report that
    fails removes it again, weights file and temp file included."""
    import onnxkd.report

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(onnxkd.report, "write_report", broken)
    shutil.copy(workspace / "teacher.onnx", workspace / "t.onnx")
    onnx.save_model(onnx.load(str(workspace / "t.onnx")), str(workspace / "t.onnx"), save_as_external_data=True,
                    location="t.onnx.data", size_threshold=0)  # a student with a weights file of its own
    with pytest.raises(OSError, match="disk full"):
        onnxkd.compress(workspace / "t.onnx", 0.5, workspace / "train.npz", epochs=1, output=workspace / "s.onnx")
    assert _leftovers(workspace) == ["s.onnx.work", "t.onnx", "t.onnx.data"]


def test_a_student_path_that_became_a_folder_leaves_no_report_or_recipe(workspace, monkeypatch):
    """A folder made at -o while the run worked: the report and recipe were moved into place, then the student
    could not be written, and they described a student that did not exist."""
    import onnxkd.report

    real = onnxkd.report.write_report

    def and_a_folder_appears(body, folder):
        (workspace / "s.onnx").mkdir()
        return real(body, folder)

    monkeypatch.setattr(onnxkd.report, "write_report", and_a_folder_appears)
    with pytest.raises(onnxkd.OnnxkdError, match="s.onnx: is a directory now"):
        onnxkd.compress(workspace / "teacher.onnx", 0.5, workspace / "train.npz", epochs=1, output=workspace / "s.onnx")
    assert _leftovers(workspace) == ["s.onnx", "s.onnx.work"] and not any((workspace / "s.onnx").iterdir())


def test_a_work_folder_in_use_by_another_run_is_refused_and_a_dead_runs_lock_is_taken(workspace):
    """Two runs with one -o cleared and overwrote each other's stage files (the loser died on a missing file)."""
    work = workspace / "s.onnx.work"
    work.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (work / "onnxkd.lock").write_text(str(other.pid))
        with pytest.raises(onnxkd.OnnxkdError, match=f"another onnxkd run \\(process {other.pid}\\) is working"):
            onnxkd.compress(workspace / "teacher.onnx", 0.5, None, epochs=1, output=workspace / "s.onnx", report=False)
        assert (work / "onnxkd.lock").read_text() == str(other.pid)  # its lock, and its folder, untouched
    finally:
        other.kill()
        other.wait()
    # the process is gone: its lock is stale and the run takes the folder, then leaves nothing behind
    onnxkd.compress(workspace / "teacher.onnx", 0.5, None, epochs=1, output=workspace / "s.onnx", report=False)
    assert not work.exists() and (workspace / "s.onnx").exists()


def test_resume_redoes_the_stages_whose_files_are_gone(workspace, monkeypatch):
    """A work folder emptied by hand: the state said distill was done, and every --resume failed reading the
    missing student. The stages from the first missing file on run again."""
    from onnxkd import pipeline

    real = pipeline._validate
    monkeypatch.setattr(pipeline, "_validate", lambda *a, **k: (_ for _ in ()).throw(onnxkd.OnnxkdError("down")))
    args = dict(ratio=0.5, data=workspace / "train.npz", epochs=1, output=workspace / "s.onnx", report=False)
    with pytest.raises(onnxkd.OnnxkdError, match="down"):
        onnxkd.compress(workspace / "teacher.onnx", **args)
    work = workspace / "s.onnx.work"
    assert {"pruned.onnx", "student.onnx", "optimized.onnx"} <= {p.name for p in work.iterdir()}
    (work / "student.onnx").unlink()
    monkeypatch.setattr(pipeline, "_validate", real)
    redone = []
    distill = onnxkd.distill.api.distill
    monkeypatch.setattr(onnxkd.distill.api, "distill", lambda *a, **k: redone.append(1) or distill(*a, **k))
    result = onnxkd.compress(workspace / "teacher.onnx", resume=True, **args)
    assert redone and result.student == str(workspace / "s.onnx") and not work.exists()


def test_data_free_compress_still_gives_a_valid_faster_student(workspace):
    result = onnxkd.compress(workspace / "teacher.onnx", 0.5, None, epochs=1, report=False)
    r = result.to_dict()
    assert r["accuracy"] is None and r["agreement"] is None and r["data"] is None
    assert r["compress"]["prune"]["criterion"] == "l1" and r["compress"]["distill"]["data"]["data_free"]
    assert r["speedup"]["macs_reduction"] > 2
    assert os.path.exists(result.student) and not (workspace / "teacher.report").exists()


def test_an_end_to_end_detector_is_compressed_and_judged_on_what_non_max_suppression_reads(tmp_path):
    """Its outputs' row counts follow the data (the run stopped at distillation, then at validation): the student
    learns and is measured on the boxes and scores NonMaxSuppression reads, and its rows are counted."""
    teacher = export_detector(tmp_path / "detector.onnx", post_nms_only=True)
    result = onnxkd.compress(teacher, 0.5, {"images": images(96)}, epochs=2, round_to=1, report=False)
    r = result.to_dict()
    assert [(q["name"], q.get("data_shaped"), q.get("read_by")) for q in r["quality"]] == [
        ("selected", "NonMaxSuppression", None), ("det_boxes", "NonMaxSuppression", None),
        ("boxes", None, "NonMaxSuppression"), ("scores", None, "NonMaxSuppression")]
    assert r["speedup"]["macs_reduction"] > 2 and r["quality"][2]["cosine"] > 0.5
    cost = narrative(r)[1]
    assert f"output 'selected': {r['quality'][0]['rows']['teacher']:,} → " in cost
    assert "tensor 'boxes' (read by NonMaxSuppression): cosine" in cost


def test_compress_fuses_written_out_activations_and_keeps_the_gains_apart(zoo_model, tmp_path):
    """A MobileNetV3 whose hard-swish is written out: the student ships with single HardSwish ops (onnxruntime
    agrees with the unfused student), and the report times the teacher optimized alone."""
    teacher = zoo_model("mobilenetv3w", "legacy")
    result = onnxkd.compress(teacher, 0.5, None, epochs=1, output=tmp_path / "s.onnx", report=False,
                             validate={"runs": 5, "time_budget": 0.2})
    r = result.to_dict()["compress"]
    assert [s["name"] for s in r["stages"]] == ["prune", "distill", "optimize", "validate"]
    assert r["optimize"]["fused"]["HardSigmoid/HardSwish"] >= 10 and r["optimize"]["check"]["margin"] <= 1
    ops = [n.op_type for n in onnx.load(tmp_path / "s.onnx").graph.node]
    assert "HardSwish" in ops and "Div" not in ops and "Clip" not in ops
    assert read_plan(tmp_path / "s.onnx")  # the plan survives for later distillation
    assert {row["batch_size"] for row in r["optimize"]["latency"]["rows"]} == {1, 32}


def test_no_optimize_ships_the_distilled_student_as_is(workspace):
    result = onnxkd.compress(workspace / "teacher.onnx", 0.5, None, epochs=1, report=False, optimize=False)
    r = result.to_dict()
    assert [s["name"] for s in r["compress"]["stages"]] == ["prune", "distill", "validate"]
    assert r["compress"]["optimize"] is None and result.to_dict()["compress"]["recipe"]["optimize"] is False


def _speedup_from_macs(monkeypatch):
    """A deterministic clock for the ratio search: speed-up = teacher MACs / candidate MACs."""
    from onnxkd.graph_passes.api import measure
    from onnxkd.validate import speed_search

    def fake(teacher, *args, **kwargs):
        base = measure(onnxkd.load(teacher), "of")["macs_of"]
        return lambda candidate: base / measure(candidate, "of")["macs_of"]

    monkeypatch.setattr(speed_search, "onnxruntime_speedup", fake)


def test_target_speedup_picks_the_candidate_and_the_recipe_replays_it(workspace, monkeypatch):
    _speedup_from_macs(monkeypatch)
    teacher = workspace / "teacher.onnx"
    result = onnxkd.compress(teacher, data=workspace / "train.npz", target_speedup=2.0, epochs=1,
                             criterion="l1", report=False, per_group=True, group_trials=2)
    prune = result.to_dict()["compress"]["prune"]
    search = prune["speed_search"]
    meeting = [c for c in search["candidates"] if c["speedup"] >= 2.0 and not c["whole"]]
    assert {c["round_to"] for c in search["candidates"]} == {1, 8, 16}  # round-to values tried, as none was given
    assert search["macs_ratio"] == max(c["macs_ratio"] for c in meeting) and search["speedup"] >= 2.0
    assert (prune["ratio"], prune["round_to"]) == (search["ratio"], search["round_to"]) and 0 < prune["ratio"] < 0.9
    assert sum(1 for c in search["candidates"] if len(c["whole"]) == 1) == 2  # --group-trials 2
    assert search["group_ratios"] == {}  # on a device whose time is its MACs, every cut pays
    recipe = json.loads(open(result.recipe_path).read())["prune"]
    assert recipe["target_speedup"] is None  # a replay needs no timing
    assert (recipe["ratio"], recipe["round_to"], recipe["group_ratios"]) == (prune["ratio"], prune["round_to"], {})
    replay = onnxkd.prune(teacher, recipe["ratio"], round_to=recipe["round_to"],
                          recipe={"group_ratios": recipe["group_ratios"]})
    assert read_plan(replay.model) == read_plan(result.student)


def test_a_given_round_to_is_the_only_one_searched_and_the_default_is_saved_as_16(workspace, monkeypatch):
    _speedup_from_macs(monkeypatch)
    teacher = workspace / "teacher.onnx"
    searched = onnxkd.compress(teacher, data=workspace / "train.npz", target_speedup=2.0, round_to=8, epochs=1,
                               criterion="l1", report=False)
    search = searched.to_dict()["compress"]["prune"]["speed_search"]
    assert {c["round_to"] for c in search["candidates"]} == {8} and search["round_to"] == 8
    plain = onnxkd.compress(teacher, 0.3, data=workspace / "train.npz", epochs=1, criterion="l1", report=False,
                            output=workspace / "plain.onnx")
    assert json.loads(open(plain.recipe_path).read())["prune"]["round_to"] == 16  # what was used, not null
    assert plain.to_dict()["compress"]["prune"]["round_to"] == 16
    assert all(len(kept) % 16 == 0 for kept in read_plan(plain.student).values())


def test_groups_rounding_left_whole_are_counted_and_named_in_the_group_rows(zoo_model):
    from onnxkd.pipeline import _prune
    from onnxkd.recipe import Recipe

    teacher = onnxkd.load(zoo_model("resnet", "legacy"))  # 16-wide groups: halved they would be 8
    model, info = _prune(teacher, Recipe(), None, None, None, None)
    narrow = info["summary"]["whole_by_rounding"]
    assert info["round_to"] == 16 and narrow
    rows = {row["id"]: row for row in info["groups"]}
    assert all(rows[g]["status"] == "whole" and rows[g]["reason"] == "round-to 16" for g in narrow)
    exact = onnxkd.prune(teacher, 0.5, round_to=1)
    assert all(len(exact.plan[g]) == rows[g]["size"] // 2 for g in narrow)


def test_unreachable_target_speedup_stops_before_distilling(workspace, monkeypatch):
    _speedup_from_macs(monkeypatch)
    with pytest.raises(onnxkd.OnnxkdError, match=r"--target-speedup 1000x not reached: the best speed-up is .* at "
                                                 r"ratio 0.9"):
        onnxkd.compress(workspace / "teacher.onnx", data=workspace / "train.npz", target_speedup=1000, epochs=1)
    assert not (workspace / "teacher.student.onnx").exists()
    assert not (workspace / "teacher.student.onnx.work" / "distill").exists()


def test_ratio_and_target_speedup_exclude_each_other(workspace):
    run = _compress(workspace / "teacher.onnx", "--ratio", "0.5", "--target-speedup", "2")
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "exclude each other" in lines[0], run.stderr


def test_a_student_slower_than_its_teacher_gets_advice_unless_its_speed_was_searched():
    from onnxkd.pipeline import slower_student_note

    note = slower_student_note({"p50": 0.58, "batch_size": 1}, {"ratio": 0.3, "round_to": 1, "speed_search": None})
    assert note.startswith("the student is 1.72x slower than the teacher at batch 1") and "--round-to 16" in note
    rounded = slower_student_note({"p50": 0.58, "batch_size": 1}, {"ratio": 0.3, "round_to": 16, "speed_search": None})
    assert "--round-to" not in rounded and "--target-speedup" in rounded
    assert slower_student_note({"p50": 1.2, "batch_size": 1}, {"ratio": 0.3, "speed_search": None}) is None
    assert slower_student_note({"p50": 0.9, "batch_size": 1}, {"ratio": 0.0, "speed_search": None}) is None
    assert slower_student_note({"p50": 0.9, "batch_size": 1}, {"ratio": 0.4, "speed_search": {"target": 1.1}}) is None


def test_bad_group_ratios_in_a_recipe_fail_before_any_work(workspace):
    for bad, message in (({"x": 0.5}, "expected a group id"), ({"0": 1.5}, "outside")):
        with pytest.raises(onnxkd.OnnxkdError, match=f"recipe group_ratios .*{message}"):
            onnxkd.compress(workspace / "teacher.onnx", data=workspace / "train.npz", epochs=1,
                            recipe={"prune": {"group_ratios": bad}})
    assert not (workspace / "teacher.student.onnx").exists()
    assert not (workspace / "teacher.student.onnx.work").exists()


def test_target_speedup_for_an_int8_student_searches_round_to_16_only(digits, monkeypatch):
    """onnxruntime's fast int8 convolution needs 16+ channels in multiples of 8: a student to be quantized is
    searched at round-to 16 (unless the user chose one), and the run says why."""
    from onnxkd.pipeline import _prune
    from onnxkd.recipe import PruneOptions, QuantizeOptions, Recipe

    _speedup_from_macs(monkeypatch)
    said: list[str] = []

    class Console:  # what compress prints to
        def print(self, text, **_):
            said.append(text)

    plan = Recipe(prune=PruneOptions(target_speedup=1.5, criterion="l1"), quantize=QuantizeOptions(enabled=True))
    model, info = _prune(onnxkd.load(digits["teacher"]), plan, None, None, None, Console())
    assert {c["round_to"] for c in info["speed_search"]["candidates"]} == {16} and info["round_to"] == 16
    assert all(len(kept) % 16 == 0 for kept in read_plan(model).values())
    assert any("the student will be int8" in line for line in said)


def test_every_recipe_flag_of_the_cli_is_a_keyword_of_the_python_api():
    """`onnxkd compress --augment light` has `onnxkd.compress(..., augment="light")` (it raised "unknown option"):
    every flag of the command either sets the recipe through the Python API's table or is one of its inputs."""
    from onnxkd.commands import compress as command
    from onnxkd.pipeline import _recipe

    inputs = {"teacher", "data", "val_data", "output", "report_dir", "recipe", "resume", "work_dir", "as_json",
              "input_shapes", "columns", "image_size", "mean", "std", "layout", "channel_order"}
    flags = {p.name for p in command.command.params} - inputs
    assert flags == set(command.recipe_flags())
    plan = _recipe(None, {"augment": "crop", "workers": 2, "loss": {"logits": "mse"}, "threads": 1,
                          "validate_batch_size": 8})
    assert (plan.distill.augment, plan.distill.workers, plan.distill.loss) == ("crop", 2, {"logits": "mse"})
    assert (plan.validate.threads, plan.validate.batch_size) == (1, 8)


def test_a_latency_batch_the_teacher_cannot_run_is_timed_and_recorded_at_its_fixed_batch():
    """torch's default export of a batch-1 example fixes the batch: --latency-batch 8 was timed at 1 and
    reported (terminal, report, recipe) as 8."""
    from onnxkd.data import InputSpec
    from onnxkd.pipeline import _recipe, _timed_batch

    plan, said = _recipe(None, {"target_speedup": 1.5, "latency_batch": 8}), []
    _timed_batch(plan, [InputSpec("x", np.dtype(np.float32), (1, 3, 32, 32))], said.append)
    assert plan.prune.latency_batch == 1 and plan.to_dict()["prune"]["latency_batch"] == 1
    assert said == ["the teacher fixes its batch at 1: --latency-batch 8 is timed at batch 1"]
    plan, said = _recipe(None, {"target_speedup": 1.5, "latency_batch": 8}), []
    _timed_batch(plan, [InputSpec("x", np.dtype(np.float32), ("N", 3, 32, 32))], said.append)
    assert plan.prune.latency_batch == 8 and not said
