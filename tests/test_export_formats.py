"""The export-format matrix (issue 18): every command on every kind of teacher file users bring, run the way
users run it, so that what breaks on real files breaks here first.

Each cell runs one command with paths relative to a working folder that holds neither the teacher nor the
outputs (``run/``), writing to a third folder (``out/``). Then, whatever the command:

- the teacher's files (every file in its folder, external data included) are byte-identical, and nothing was
  added next to them or to the working folder;
- ``out/`` holds the outputs and nothing else (no temp files, work folders or stray weights), each output's
  external data sits beside it, named after it;
- every output model runs in onnxruntime from yet another folder (``elsewhere/``, by a relative path), and again
  after ``out/`` is moved away, giving outputs of the teacher's shapes.

The commands are run in-process (``onnxkd.cli.main``, the console entry point) with the current folder changed:
a subprocess per cell would spend most of the matrix's time importing torch. The teachers are built once a
session (``export_formats.build_teachers``); runs are kept short (one epoch on 64 samples, a few timed runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from cli_runner import cli
from export_formats import KINDS, LIGHT, Teacher, TinyClassifier, build_teachers

COMMANDS = ("inspect", "prune", "optimize", "distill", "validate", "quantize", "compress", "compress-resume",
            "compress-target-speedup")
LIGHT_COMMANDS = ("inspect", "prune", "optimize", "validate")  # fixed shapes and no data: nothing to distill on
CELLS = [(kind, command) for kind in KINDS for command in COMMANDS] + \
        [(f"light-{name}", command) for name in LIGHT for command in LIGHT_COMMANDS]

# Latency is not what the matrix tests: a few timed runs per model (compress takes them from a recipe).
FAST_VALIDATE = ["--runs", "5", "--warmup", "1", "--time-budget", "0.05", "--batch-size", "8"]
FAST_RECIPE = {"validate": {"runs": 5, "warmup": 1, "time_budget": 0.05}}
FAST_TRAIN = ["--epochs", "1", "--batch-size", "32"]
REPORT_FILES = ["report.html", "report.json", "report.md"]


@pytest.fixture(scope="session")
def teachers(tmp_path_factory) -> dict[str, Teacher]:
    root = tmp_path_factory.mktemp("export-formats")
    built = build_teachers(root)
    (root / "fast.recipe.json").write_text(json.dumps(FAST_RECIPE))
    return built


@dataclass
class Cell:
    """One command run as a user runs it: from ``run/``, with relative paths, writing to ``out/``."""

    teacher: Teacher
    root: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture

    def __post_init__(self):
        for name in ("run", "out", "elsewhere", "moved"):
            (self.root / name).mkdir()

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def recipe(self) -> Path:
        return self.teacher.model.parents[2] / "fast.recipe.json"

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.run_dir)

    def onnxkd(self, *args) -> "Ran":
        self.monkeypatch.chdir(self.run_dir)
        code, out, err = cli(self.capsys, *map(str, args))
        return Ran(code, out, err)

    def data_args(self) -> list[str]:
        return ["--data", self.rel(self.teacher.train), "--val-data", self.rel(self.teacher.val)]

    def prune_l1(self, output: Path) -> Path:
        """A student for distill and validate: half the channels cut by weight norm (no data needed)."""
        ran = self.onnxkd("prune", self.rel(self.teacher.model), "--ratio", "0.5", "-o", self.rel(output))
        assert ran.code == 0, ran.why
        return output


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def why(self) -> str:
        """The command's last stderr line: what a failing cell reports."""
        lines = [line for line in self.err.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"(exit {self.code}, nothing on stderr)"


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("kind, command", CELLS, ids=[f"{kind}-{command}" for kind, command in CELLS])
def test_matrix(teachers, kind, command, tmp_path, monkeypatch, capsys):
    """One (teacher file, command) cell: the command succeeds, its outputs are self-contained and load anywhere,
    and the teacher is untouched."""
    teacher = teachers[kind]
    cell = Cell(teacher, tmp_path, monkeypatch, capsys)
    before = _hashes(teacher.folder)

    models, others = RUNNERS[command](cell)

    assert _hashes(teacher.folder) == before, "the teacher's files changed, or files were added next to them"
    assert not list(cell.run_dir.iterdir()), "the command wrote into the working folder"
    _check_outputs(cell, models, others)


def run_inspect(cell: Cell):
    """inspect --json: the declared dims as the file has them; MACs at batch 1 (or the fixed batch), or, with
    dynamic spatial dims and no size given, no MACs and a note saying how to give one."""
    t = cell.teacher
    ran = cell.onnxkd("inspect", cell.rel(t.model), "--json")
    assert ran.code == 0, ran.why
    summary = json.loads(ran.out)["summary"]
    assert summary["inputs"][0]["name"] == t.input_name
    assert summary["inputs"][0]["shape"] == [d if isinstance(d, str) or d > 0 else "?" for d in t.export_dims]
    if t.dynamic_spatial:
        assert summary["macs"] is None and "--input-shape" in summary["macs_note"]
    elif t.macs_per_sample is not None:
        assert summary["macs"] == t.macs_per_sample * (t.fixed_batch or 1)
    else:
        assert summary["macs"] > 0 and not summary["macs_unknown_nodes"]
    return [], []


def run_prune(cell: Cell):
    """prune at 0.5; with data, teacher-guided (kd), which runs the teacher on the data's shapes. MACs before are
    the teacher's at the data's sample shape (batch 1, or the fixed batch)."""
    t = cell.teacher
    output = cell.out / "pruned.onnx"
    args = ["prune", cell.rel(t.model), "--ratio", "0.5", "-o", cell.rel(output), "--json"]
    if t.train is not None:
        args += ["--criterion", "kd", "--data", cell.rel(t.train), "--max-batches", "1"]
    ran = cell.onnxkd(*args)
    assert ran.code == 0, ran.why
    summary = json.loads(ran.out)["summary"]
    assert 0 < summary["macs_after"] < summary["macs_before"]
    if t.macs_per_sample is not None:
        assert summary["macs_before"] == t.macs_per_sample * (t.fixed_batch or 1)
    _assert_same_interface(t.model, output)
    return [output], []


def run_optimize(cell: Cell):
    """optimize, checked on onnxruntime against the teacher. Dynamic spatial dims need --input-shape (optimize
    takes no data); the saturated sigmoid map must not false-alarm the check although its fusion changes rounding."""
    t = cell.teacher
    output = cell.out / "optimized.onnx"
    args = ["optimize", cell.rel(t.model), "-o", cell.rel(output), "--json"]
    if t.dynamic_spatial:
        args += ["--input-shape", f"{t.input_name}={_dims((1, *t.sample_shape))}"]
    ran = cell.onnxkd(*args)
    assert ran.code == 0, ran.why
    summary = json.loads(ran.out)
    assert summary["check"]["margin"] <= 1
    if t.kind == "sigmoid-map":  # the check compared two different graphs, on outputs near 3e-7
        assert summary["fused"]["HardSigmoid/HardSwish"] == 1
    _assert_same_interface(t.model, output)
    return [output], []


def run_distill(cell: Cell):
    """distill a pruned student for one epoch on the data; the checkpoint folder is gone afterwards."""
    t = cell.teacher
    pruned = cell.prune_l1(cell.out / "pruned.onnx")
    student = cell.out / "student.onnx"
    ran = cell.onnxkd("distill", cell.rel(t.model), cell.rel(pruned), *cell.data_args(), *FAST_TRAIN,
                      "-o", cell.rel(student), "--json")
    assert ran.code == 0, ran.why
    result = json.loads(ran.out)
    assert len(result["history"]) == 1
    if t.classifier:
        assert result["best"]["accuracy"] is not None
    _assert_same_interface(t.model, student)
    return [pruned, student], []


def run_validate(cell: Cell):
    """validate the teacher against a pruned student on the data (light models: random inputs of their fixed
    shapes). Dynamic dims take the data's shapes: the measured shape and the MACs are the data's sample's."""
    t = cell.teacher
    pruned = cell.prune_l1(cell.out / "pruned.onnx")
    report = cell.out / "report"
    args = ["validate", cell.rel(t.model), cell.rel(pruned), "--report", cell.rel(report), *FAST_VALIDATE]
    if t.val is not None:
        args += ["--data", cell.rel(t.val)]
    ran = cell.onnxkd(*args)
    assert ran.code == 0, ran.why
    r = json.loads((report / "report.json").read_text())
    measured = r["teacher"]["inputs"][0]["measured_shape"]
    assert measured == [t.fixed_batch or 1, *t.sample_shape]
    _assert_macs(t, r["teacher"]["macs"], measured[0])
    assert 0 < r["student"]["macs"] < r["teacher"]["macs"]
    if t.classifier and t.val is not None:
        assert r["accuracy"]["n"] == 32 and r["accuracy"]["teacher"] >= 31 / 32  # labels are its own argmax
    if t.kind == "sigmoid-map":
        assert r["quality"][0]["max_abs_error"] is not None and r["accuracy"] is None
    return [pruned], [f"report/{name}" for name in REPORT_FILES]


def run_quantize(cell: Cell):
    """quantize on the data: the model written (int8, or float where int8 did not pay on this machine) keeps the
    teacher's interface, dynamic dims included, and agrees with the teacher on the validation data."""
    t = cell.teacher
    output = cell.out / "int8.onnx"
    ran = cell.onnxkd("quantize", cell.rel(t.model), "--data", cell.rel(t.train), "-o", cell.rel(output), "--json",
                      "--eval-samples", "32")
    assert ran.code == 0, ran.why
    summary = json.loads(ran.out)
    assert summary["quantized_nodes"] > 0 if summary["int8"] else summary["notes"]
    if summary["int8"]:
        assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(output), load_external_data=False).graph.node)
    _assert_same_interface(t.model, output)
    return [output], []


def _compress_args(cell: Cell, student: Path, *extra, report: str | None = "report") -> list[str]:
    """``report=None``: the default report folder (beside the student, named after it)."""
    where = [] if report is None else ["--report", cell.rel(cell.out / report)]
    return ["compress", cell.rel(cell.teacher.model), *cell.data_args(), *FAST_TRAIN, "--validate-batch-size", "8",
            "--recipe", cell.rel(cell.recipe), "-o", cell.rel(student), *where, *extra]


def _check_compress(cell: Cell, student: Path, smaller: bool = True, report: str = "report") -> dict:
    """The compress outputs are all there, the work folder is gone, and MACs in the prune summary are counted at
    the shapes validation measured (the data's sample shape). ``smaller``: the student has fewer MACs."""
    t = cell.teacher
    assert not (cell.out / "student.onnx.work").exists()
    r = json.loads((cell.out / report / "report.json").read_text())
    assert [s["name"] for s in r["compress"]["stages"]] == ["prune", "distill", "optimize", "validate"]
    measured = r["teacher"]["inputs"][0]["measured_shape"]
    assert measured == [t.fixed_batch or 1, *t.sample_shape]
    assert r["compress"]["prune"]["summary"]["macs_before"] == r["teacher"]["macs"]
    _assert_macs(t, r["teacher"]["macs"], measured[0])
    assert r["compress"]["prune"]["summary"]["macs_after"] == r["student"]["macs"]
    assert r["student"]["macs"] < r["teacher"]["macs"] or not smaller
    assert r["compress"]["optimize"]["check"]["margin"] <= 1
    weights = {e.value for init in onnx.load(str(student), load_external_data=False).graph.initializer
               for e in init.external_data if e.key == "location"}
    assert r["student"]["sha256"] == hashlib.sha256(student.read_bytes()).hexdigest()  # the file delivered
    assert r["student"]["size_bytes"] == sum(f.stat().st_size for f in [student, *(student.parent / w for w in weights)])
    _assert_same_interface(t.model, student)
    return r


def _compress_outputs(cell: Cell, student: Path, report: str = "report"):
    return [student], ["student.recipe.json", *(f"{report}/{name}" for name in REPORT_FILES)]


def run_compress(cell: Cell):
    """compress with the defaults users get with data (kd criterion, ratio 0.5, the report beside the student
    as student.report/, never beside the teacher), one epoch."""
    student = cell.out / "student.onnx"
    ran = cell.onnxkd(*_compress_args(cell, student, report=None))
    assert ran.code == 0, ran.why
    r = _check_compress(cell, student, report="student.report")
    assert r["compress"]["prune"]["criterion"] == "kd"
    return _compress_outputs(cell, student, report="student.report")


def run_compress_resume(cell: Cell):
    """compress interrupted (Ctrl-C) during validation leaves no student; --resume then reloads the pruned,
    distilled and optimized models from the work folder (written there in this teacher's format) and finishes."""
    from onnxkd import pipeline

    student = cell.out / "student.onnx"
    args = _compress_args(cell, student, "--criterion", "l1")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with cell.monkeypatch.context() as patch:
        patch.setattr(pipeline, "_validate", interrupt)
        ran = cell.onnxkd(*args)
    assert ran.code == 130, ran.why
    assert not student.exists() and not (cell.out / "report").exists()
    assert (cell.out / "student.onnx.work").is_dir()

    ran = cell.onnxkd(*args, "--resume")
    assert ran.code == 0, ran.why
    for stage in ("prune", "distill", "optimize"):
        assert f"{stage}: done before" in ran.out
    _check_compress(cell, student)
    return _compress_outputs(cell, student)


def run_compress_target_speedup(cell: Cell):
    """compress --target-speedup: candidates are timed on inputs of the data's shapes (no --input-shape), at one
    round-to and a low target so the search is short."""
    student = cell.out / "student.onnx"
    ran = cell.onnxkd(*_compress_args(cell, student, "--criterion", "l1", "--target-speedup", "1.01",
                                      "--max-ratio", "0.75", "--round-to", "8", "--threads", "1"))
    assert ran.code == 0, ran.why
    # ratio 0 may be the answer: candidates are timed optimized, against the teacher as given (the sigmoid map's
    # written-out hard-swish fused is faster by itself)
    r = _check_compress(cell, student, smaller=False)
    search = r["compress"]["prune"]["speed_search"]
    assert search["target"] == 1.01 and search["speedup"] >= 1.01 and search["candidates"]
    return _compress_outputs(cell, student)


RUNNERS = {"inspect": run_inspect, "prune": run_prune, "optimize": run_optimize, "distill": run_distill,
           "validate": run_validate, "quantize": run_quantize, "compress": run_compress, "compress-resume": run_compress_resume,
           "compress-target-speedup": run_compress_target_speedup}


# --------------------------------------------------------------------------- refusals


@pytest.fixture(scope="session")
def refusal_teacher(teachers) -> tuple[Teacher, Path]:
    """torch's default export with a dynamic batch, and a pruned student of it in a folder of its own."""
    import onnxkd

    teacher = teachers["torch-default-dynamic-batch"]
    folder = teacher.model.parents[2] / "students" / teacher.kind
    folder.mkdir(parents=True)
    onnxkd.save(onnxkd.prune(teacher.model, 0.5).model, folder / "pruned.onnx")
    return teacher, folder / "pruned.onnx"


def _command_args(command: str, cell: Cell, student: Path | None) -> list[str]:
    """Each command that takes --input-shape, without data, writing under out/."""
    t, out = cell.teacher, cell.out
    return {
        "prune": ["prune", cell.rel(t.model), "--target-speedup", "1.01", "-o", cell.rel(out / "p.onnx")],
        "optimize": ["optimize", cell.rel(t.model), "-o", cell.rel(out / "o.onnx")],
        "validate": ["validate", cell.rel(t.model), cell.rel(student), "--report", cell.rel(out / "report"),
                     *FAST_VALIDATE],
        "distill": ["distill", cell.rel(t.model), cell.rel(student), *FAST_TRAIN, "-o", cell.rel(out / "s.onnx")],
        "compress": ["compress", cell.rel(t.model), *FAST_TRAIN, "--recipe", cell.rel(cell.recipe),
                     "-o", cell.rel(out / "s.onnx"), "--report", cell.rel(out / "report")],
    }[command]


SHAPE_COMMANDS = ("prune", "optimize", "validate", "distill", "compress")
BAD_SHAPES = {"unknown-input": ("nosuch=1,3,16,16", "'nosuch'"), "wrong-rank": ("x=1,3,16", "rank 3")}


@pytest.mark.parametrize("bad", BAD_SHAPES)
@pytest.mark.parametrize("command", SHAPE_COMMANDS)
def test_a_bad_input_shape_is_refused_before_any_stage(refusal_teacher, command, bad, tmp_path, monkeypatch, capsys):
    """--input-shape naming an input the model lacks, or of the wrong rank, is a typo to point at, not something
    to find out after pruning and training: one line, exit 2, nothing printed or written before it."""
    teacher, student = refusal_teacher
    cell = Cell(teacher, tmp_path, monkeypatch, capsys)
    shape, says = BAD_SHAPES[bad]
    ran = cell.onnxkd(*_command_args(command, cell, student), "--input-shape", shape)
    assert ran.code == 2, ran.why
    _assert_one_error_line(ran, says)
    _assert_nothing_ran(ran)
    assert not list(cell.out.iterdir()) and not list(cell.run_dir.iterdir())


@pytest.fixture(scope="session")
def spatial_students(teachers) -> dict[str, Path]:
    """Pruned students of the two teachers with dynamic spatial dims, each in a folder of its own."""
    import onnxkd

    students = {}
    for kind in ("exporter-dim-names", "minus-one-dims"):
        folder = teachers[kind].model.parents[2] / "students" / kind
        folder.mkdir(parents=True)
        students[kind] = folder / "pruned.onnx"
        onnxkd.save(onnxkd.prune(teachers[kind].model, 0.5).model, students[kind])
    return students


@pytest.mark.parametrize("kind, names", [("exporter-dim-names", ["unk__12"]), ("minus-one-dims", [])],
                         ids=["exporter-dim-names", "minus-one-dims"])
@pytest.mark.parametrize("command", SHAPE_COMMANDS)
def test_dynamic_spatial_dims_without_data_ask_for_input_shape(teachers, spatial_students, command, kind, names,
                                                               tmp_path, monkeypatch, capsys):
    """Without data nothing says how tall an image is: a dynamic batch may default to 1, but height and width
    must be given. The one error line names the dims and shows the flag with an example to copy."""
    teacher = teachers[kind]
    cell = Cell(teacher, tmp_path, monkeypatch, capsys)
    ran = cell.onnxkd(*_command_args(command, cell, spatial_students[kind]))
    assert ran.code == 2, ran.why
    line = _assert_one_error_line(ran, f"--input-shape {teacher.input_name}=1,3,")
    assert all(name in line for name in names), line
    _assert_nothing_ran(ran)
    assert not list(cell.out.iterdir()) and not list(cell.run_dir.iterdir())


@pytest.mark.parametrize("kind, input_shape", [("torch-default-dynamic-batch", None),
                                               ("exporter-dim-names", (1, 3, 20, 24)),
                                               ("minus-one-dims", (1, 3, 12, 28))],
                         ids=["dynamic-batch-defaults-to-1", "dim-names-input-shape", "minus-one-input-shape"])
def test_without_data_the_batch_is_1_and_input_shape_sizes_the_rest(teachers, kind, input_shape, tmp_path,
                                                                     monkeypatch, capsys):
    """validate without data: random inputs at batch 1 and at --input-shape's sizes; MACs at the same shape."""
    teacher = teachers[kind]
    cell = Cell(teacher, tmp_path, monkeypatch, capsys)
    student = cell.prune_l1(cell.out / "pruned.onnx")
    args = ["validate", cell.rel(teacher.model), cell.rel(student), "--report", cell.rel(cell.out / "report"),
            *FAST_VALIDATE]
    if input_shape:
        args += ["--input-shape", f"{teacher.input_name}={_dims(input_shape)}"]
    ran = cell.onnxkd(*args)
    assert ran.code == 0, ran.why
    r = json.loads((cell.out / "report" / "report.json").read_text())
    expected = list(input_shape or (1, *teacher.sample_shape))
    assert r["teacher"]["inputs"][0]["measured_shape"] == expected
    assert r["teacher"]["macs"] == TinyClassifier.macs(*expected[2:])


# --------------------------------------------------------------------------- helpers


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _dims(shape) -> str:
    return ",".join(map(str, shape))


def _assert_macs(teacher: Teacher, macs: int, batch: int) -> None:
    if teacher.macs_per_sample is not None:
        assert macs == teacher.macs_per_sample * batch
    else:
        assert macs > 0


def _assert_one_error_line(ran: Ran, says: str) -> str:
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and says in lines[0], ran.err
    return lines[0]


# What the commands print once work starts: compress's stages, the speed search, distillation's progress, the
# summary tables, the written file. (A warning printed before the refusal is fine.)
STARTED = ("[1/5]", "candidate ratio", "distilling:", "epoch ", "Teacher vs student", "onnxruntime check", "Wrote")


def _assert_nothing_ran(ran: Ran) -> None:
    """Refused before any stage: no stage or progress line was printed."""
    started = [mark for mark in STARTED if mark in ran.out]
    assert not started, f"something ran before the refusal: {started} in {ran.out!r}"


def _interface(path: Path) -> list:
    """Inputs and outputs with their declared dims: a fixed dim as its size, a named dim by its name, an unnamed
    dynamic dim (-1 or empty) as None."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    rows = []
    for value in [v for v in graph.input if v.name not in weights] + list(graph.output):
        dims = tuple(d.dim_param if d.dim_param else (d.dim_value if d.dim_value > 0 else None)
                     for d in value.type.tensor_type.shape.dim)
        rows.append((value.name, dims))
    return rows


def _assert_same_interface(teacher: Path, output: Path) -> None:
    """Names and dims kept: a student must drop in where its teacher ran, dynamic dims included."""
    assert _interface(output) == _interface(teacher)


def _external_files(path: Path) -> set[str]:
    """The files an output's external data lives in; each must sit beside it, named after it."""
    graph = onnx.load(str(path), load_external_data=False).graph
    tensors = list(graph.initializer) + [a.t for node in graph.node for a in node.attribute if a.HasField("t")]
    files = set()
    for tensor in tensors:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next(e.value for e in tensor.external_data if e.key == "location")
        assert not os.path.isabs(location) and os.path.dirname(location) == "", \
            f"{path.name} keeps weights outside its folder: {location}"
        assert location.startswith(path.name), f"{path.name}'s weights are in {location}, not named after it"
        assert (path.parent / location).is_file(), f"{path.name}: {location} is missing"
        files.add(str((path.parent / location).relative_to(path.parent)))
    return files


def _check_outputs(cell: Cell, models: list[Path], others: list[str]) -> None:
    """out/ holds exactly the outputs; each runs in onnxruntime from another folder and after out/ moved, on
    the teacher's inputs (and, where the teacher's dims are dynamic, at other sizes than the data's)."""
    expected = {str(m.relative_to(cell.out)) for m in models} | set(others)
    for model in models:
        expected |= {str((model.parent / f).relative_to(cell.out)) for f in _external_files(model)}
    actual = {str(p.relative_to(cell.out)) for p in cell.out.rglob("*") if p.is_file()}
    assert actual == expected, f"unexpected files in the output folder: {sorted(actual - expected)}; " \
                               f"missing: {sorted(expected - actual)}"

    cell.monkeypatch.chdir(cell.root / "elsewhere")
    moved = cell.root / "moved" / "out"
    for feeds in cell.teacher.feeds():
        shapes = [o.shape for o in _run(cell.teacher.model, feeds)]
        for model in models:
            assert [o.shape for o in _run(model, feeds)] == shapes, model.name
    shutil.move(cell.out, moved)
    for feeds in cell.teacher.feeds():
        shapes = [o.shape for o in _run(cell.teacher.model, feeds)]
        for model in models:
            assert [o.shape for o in _run(moved / model.relative_to(cell.out), feeds)] == shapes, model.name


def _run(model: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime on ``model`` by its path relative to the current folder (external data resolves against the
    model's own folder, or fails)."""
    session = ort.InferenceSession(os.path.relpath(model), providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    assert all(np.isfinite(o).all() for o in outputs)
    return outputs
