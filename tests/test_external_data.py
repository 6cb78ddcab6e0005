"""External data as exporters write it (torch's default: ``m.onnx`` + ``m.onnx.data``), through model.py's rule:
a loaded model reads its weights from its own folder whatever the current folder is, every save writes a
self-contained pair named after the output, and onnxruntime and the checker get the bytes of an in-memory
model, never a relative path. The oracle is onnxruntime on the original file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from cli_runner import cli

import onnxkd
from onnxkd import model as model_io
from onnxkd.validate.sessions import SessionConfig, create_session

TEACHER = Path(__file__).resolve().parents[1] / "examples" / "digits" / "teacher.onnx"
X = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)


def _run(source) -> np.ndarray:
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"image": X})[0]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def exported(tmp_path) -> Path:
    """The digits teacher laid out as torch's default export: every weight in ``models/t.onnx.data``."""
    folder = tmp_path / "models"
    folder.mkdir()
    proto = onnx.load(str(TEACHER))
    onnx.save_model(proto, str(folder / "t.onnx"), save_as_external_data=True, location="t.onnx.data",
                    size_threshold=0)
    return folder / "t.onnx"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A current folder that is not the model's: relative external-data paths would resolve here."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_a_loaded_model_reads_its_weights_from_its_own_folder(exported, elsewhere):
    model = model_io.load(Path("..") / "models" / "t.onnx")  # relative, as users give it
    tensors = [v.const_value for v in model.graph.initializers.values()]
    assert any(isinstance(t, ir.ExternalTensor) for t in tensors)
    expected = onnx.load(str(TEACHER))
    for init in expected.graph.initializer:
        np.testing.assert_array_equal(model.graph.initializers[init.name].const_value.numpy(),
                                      onnx.numpy_helper.to_array(init))


@pytest.mark.parametrize("command", ["inspect", "compress", "validate"])
def test_a_model_moved_without_its_weights_file_is_refused_with_what_to_move(exported, elsewhere, capsys, command):
    shutil.copy(exported, elsewhere / "t.onnx")  # the .data file left behind, as a user moving one file does
    args = {"inspect": [], "compress": ["--ratio", "0.5"], "validate": [str(exported)]}[command]
    code, out, err = cli(capsys, command, "t.onnx", *args)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "its weights are in t.onnx.data, which is not beside it" in err and "move or copy t.onnx.data" in err
    assert _files(elsewhere) == ["t.onnx"]  # nothing written


def test_weights_in_a_subfolder_are_named_as_the_model_names_them(tmp_path, elsewhere, capsys):
    """location="weights/w.bin": the advice named w.bin, and a user copying w.bin beside the model was still refused."""
    (tmp_path / "weights").mkdir()
    onnx.save_model(onnx.load(str(TEACHER)), str(tmp_path / "c.onnx"), save_as_external_data=True,
                    location="weights/w.bin", size_threshold=0)
    shutil.copy(tmp_path / "c.onnx", elsewhere / "c.onnx")
    code, _, err = cli(capsys, "inspect", "c.onnx")
    assert code == 2 and "c.onnx: its weights are in weights/w.bin, which is not in weights/ beside it" in err, err
    assert "move or copy weights/w.bin with the model" in err


def test_validate_and_inspect_count_an_external_data_model_from_another_folder(exported, elsewhere, capsys):
    """The figures of the embedded teacher (one file) are the oracle."""
    from onnxkd.graph_passes.metrics import count_params, mac_summary

    code, _, err = cli(capsys, "validate", "../models/t.onnx", "../models/t.onnx", "--runs", "2", "--report", "r")
    assert code == 0, err
    student = json.loads((elsewhere / "r" / "report.json").read_text())["student"]
    assert student["params"] == count_params(TEACHER) and student["macs"] == mac_summary(TEACHER)["total"]
    code, out, err = cli(capsys, "inspect", "../models/t.onnx", "--json")
    assert code == 0 and json.loads(out)["summary"]["macs"] == mac_summary(TEACHER)["total"], err


@pytest.mark.parametrize("command", ["compress", "prune", "optimize", "quantize", "distill"])
def test_the_output_path_may_not_be_the_teachers_weights_file(exported, elsewhere, capsys, command):
    """-o models/t.onnx.data would replace the weights a user's model reads: refused before any work."""
    before = {name: (exported.parent / name).read_bytes() for name in ("t.onnx", "t.onnx.data")}
    args = {"compress": ["--ratio", "0.5"], "prune": ["--ratio", "0.5"], "optimize": [],
            "quantize": ["--random-data"], "distill": [str(exported)]}[command]
    code, _, err = cli(capsys, command, "../models/t.onnx", *args, "-o", "../models/t.onnx.data")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "the output path is the weights file of the" in err and "(t.onnx.data)" in err
    assert {name: (exported.parent / name).read_bytes() for name in before} == before
    np.testing.assert_allclose(_run(str(exported)), _run(str(TEACHER)), rtol=1e-6)


def test_a_truncated_weights_file_is_refused(exported, capsys):
    data = exported.parent / "t.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    code, _, err = cli(capsys, "inspect", str(exported))
    assert code == 2 and "holds 1,000 bytes, fewer than the" in err and "truncated" in err


def test_save_writes_a_pair_named_after_the_output_that_survives_a_move(exported, elsewhere, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    model = model_io.load(exported)
    model_io.save(model, out / "copy.onnx")  # default: weights that came from a file go to a file again
    assert _files(out) == ["copy.onnx", "copy.onnx.data"]
    locations = {e.value for t in onnx.load(str(out / "copy.onnx"), load_external_data=False).graph.initializer
                 for e in t.external_data if e.key == "location"}
    assert locations == {"copy.onnx.data"}  # never the teacher's file
    moved = shutil.move(str(out), str(tmp_path / "moved"))
    np.testing.assert_array_equal(_run(str(Path(moved) / "copy.onnx")), _run(str(TEACHER)))
    assert _files(exported.parent) == ["t.onnx", "t.onnx.data"]  # the input's files are untouched


def test_save_to_a_folder_says_it_is_a_folder_and_leaves_nothing(exported, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(onnxkd.OnnxkdError, match="is a folder; give the model's file name"):
        model_io.save(model_io.load(exported), folder)
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["models", "out"]


def test_save_embedded_reads_external_weights_in(exported, elsewhere, tmp_path):
    model_io.save(model_io.load(exported), tmp_path / "embedded.onnx", external_data=False)
    assert not (tmp_path / "embedded.onnx.data").exists()
    np.testing.assert_array_equal(_run(str(tmp_path / "embedded.onnx")), _run(str(TEACHER)))


@pytest.mark.parametrize("in_memory_limit", [None, 0], ids=["bytes", "temp-copy"])
def test_an_in_memory_model_with_external_weights_runs_in_onnxruntime_from_any_folder(exported, elsewhere,
                                                                                       monkeypatch, in_memory_limit):
    """As bytes; above SESSION_BYTES_IN_MEMORY (bytes cost 3-5x the weights at once) as a copy written out, which
    is removed when the path (and the session holding it) is dropped."""
    import gc

    if in_memory_limit is not None:
        monkeypatch.setattr(model_io, "SESSION_BYTES_IN_MEMORY", in_memory_limit)
    model = model_io.load(exported)
    fc = model.graph.initializers["classifier.weight"]  # one weight changed in memory, the others still in the file
    fc.const_value = ir.Tensor(fc.const_value.numpy() * 2, name="classifier.weight")
    assert model_io.has_external_tensors(model)
    source = model_io.session_source(model)
    assert isinstance(source, bytes) == (in_memory_limit is None)
    session, _ = create_session(source, SessionConfig(provider="cpu"), "changed")
    oracle = onnx.load(str(TEACHER))
    for init in oracle.graph.initializer:
        if init.name == "classifier.weight":
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * 2, "classifier.weight"))
    np.testing.assert_allclose(session.run(None, {"image": X})[0], _run(oracle.SerializeToString()), rtol=1e-6)
    if isinstance(source, str):
        folder = Path(source).parent
        del source, session  # onnxruntime's session keeps the path it was given
        gc.collect()
        assert not folder.exists()


def test_weights_inside_leaves_the_model_as_it_was(exported):
    model = model_io.load(exported)
    small = model_io.weights_inside(model, max_bytes=1000)
    inside = model_io.weights_inside(model)
    assert model_io.has_external_tensors(model) and not model_io.has_external_tensors(inside)
    sizes = {v.name: v.const_value.nbytes for v in small.graph.initializers.values()}
    assert all(isinstance(v.const_value, ir.ExternalTensor) == (sizes[v.name] > 1000)
               for v in small.graph.initializers.values())
    plain = model_io.load(TEACHER)
    assert model_io.weights_inside(plain) is plain  # nothing external: no copy


def test_remove_deletes_the_model_and_its_weights(exported, tmp_path):
    model_io.save(model_io.load(exported), tmp_path / "gone.onnx")
    model_io.remove(tmp_path / "gone.onnx")
    assert not any(p.name.startswith("gone.onnx") for p in tmp_path.iterdir())
    assert _files(exported.parent) == ["t.onnx", "t.onnx.data"]


@pytest.mark.parametrize("name", ["bert", "shufflenetv2"])
def test_every_tensor_external_prunes_like_the_embedded_model(zoo_model, name, tmp_path, elsewhere):
    """size_threshold=0 puts Reshape targets and Slice bounds in the weights file too; shape inference cannot
    read them there, so small tensors are read in at load: the analysis must see the same graph."""
    embedded = zoo_model(name, "dynamo")
    external = tmp_path / "all_external.onnx"
    onnx.save_model(onnx.load(str(embedded)), str(external), save_as_external_data=True,
                    location="all_external.onnx.data", size_threshold=0)
    keys = ("groups", "pruned", "frozen", "macs_before", "macs_after")
    want = onnxkd.prune(embedded, 0.5, round_to=1).summary
    got = onnxkd.prune(external, 0.5, round_to=1)
    assert [got.summary[k] for k in keys] == [want[k] for k in keys]
    model_io.save(got.model, tmp_path / "pruned.onnx", external_data=True)  # the memory map is released cleanly
    assert _files(tmp_path) == ["all_external.onnx", "all_external.onnx.data", "pruned.onnx", "pruned.onnx.data"]


@pytest.mark.parametrize("opset", [11, 17])  # 11: upgraded first, through onnx's converter (protos)
def test_weights_in_constant_nodes_of_a_weights_file_are_read_from_the_models_folder(tmp_path, elsewhere, capsys,
                                                                                     opset):
    """onnx's ``convert_attribute=True`` puts Constant nodes' tensors in the weights file too; every pass that
    went through a proto read them from the current folder (exit 3) or left MACs uncounted."""
    from onnxkd.graph_passes.metrics import mac_summary

    proto = onnx.load(str(TEACHER))
    proto.opset_import[0].version = opset  # its ops (Conv, Relu, MaxPool, Gemm, ...) mean the same at 11
    constants = [onnx.helper.make_node("Constant", [], [init.name], value=init) for init in proto.graph.initializer]
    del proto.graph.initializer[:]
    nodes = constants + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    (tmp_path / "models").mkdir()
    onnx.save_model(proto, str(tmp_path / "models" / "m.onnx"), save_as_external_data=True, location="m.bin",
                    size_threshold=0, convert_attribute=True)
    saved = onnx.load(str(tmp_path / "models" / "m.onnx"), load_external_data=False)
    assert "m.bin" in {e.value for n in saved.graph.node if n.op_type == "Constant" for e in n.attribute[0].t.external_data}

    code, out, err = cli(capsys, "inspect", "../models/m.onnx", "--json")
    assert code == 0 and json.loads(out)["summary"]["macs"] == mac_summary(TEACHER)["total"], err
    code, _, err = cli(capsys, "prune", "../models/m.onnx", "--ratio", "0.5", "-o", "p.onnx")
    assert code == 0, err
    expected = onnxkd.prune(TEACHER, 0.5).model  # the embedded teacher pruned alike
    assert mac_summary(elsewhere / "p.onnx")["total"] == mac_summary(expected)["total"]


def test_a_hub_cache_layout_of_symlinks_reads_the_weights_beside_the_link(exported, tmp_path, elsewhere, capsys):
    """huggingface_hub keeps files as blobs named by hash and links them from snapshots/<rev>/ under their
    own names: the weights are found beside the link (as onnxruntime finds them), through a link out of the
    folder (which onnx-ir refuses by default)."""
    blobs, snapshot = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "rev1"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, blob in (("t.onnx", "aaaa1111"), ("t.onnx.data", "bbbb2222")):
        shutil.move(exported.parent / name, blobs / blob)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
    linked = str(Path("..") / "hub" / "snapshots" / "rev1" / "t.onnx")
    np.testing.assert_allclose(_run(linked), _run(str(TEACHER)), rtol=1e-6)  # onnxruntime's reading

    from onnxkd.graph_passes.metrics import count_params

    code, _, err = cli(capsys, "validate", linked, linked, "--runs", "2", "--report", "r")
    assert code == 0, err
    assert json.loads((elsewhere / "r" / "report.json").read_text())["student"]["params"] == count_params(TEACHER)
    code, _, err = cli(capsys, "prune", linked, "--ratio", "0.5", "-o", "p.onnx")
    assert code == 0, err
    got = {n: v.const_value.numpy() for n, v in onnxkd.load(elsewhere / "p.onnx").graph.initializers.items()}
    expected = {n: v.const_value.numpy() for n, v in onnxkd.prune(TEACHER, 0.5).model.graph.initializers.items()}
    assert got.keys() == expected.keys()
    for name in got:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def _other_weights(model: Path) -> None:
    """The same graph file, the weights file rewritten with other values of the same size (a retrained export)."""
    data = Path(f"{model}.data")
    values = np.frombuffer(data.read_bytes(), np.uint8)
    data.write_bytes(np.roll(values, 4).tobytes())


def test_resume_and_recipes_know_a_teacher_by_its_weights_too(exported, tmp_path, digits):
    """Only the .onnx file was hashed: new weights under the same names resumed on the old teacher's pruned and
    half-distilled student, whose agreement with the real teacher was 10%."""
    from ctrl_c import interrupt_at

    before, graph = model_io.sha256_of(exported), model_io.sha256_file(exported)
    out = tmp_path / "s.onnx"
    with pytest.raises(KeyboardInterrupt):
        onnxkd.compress(exported, 0.5, digits["val"], output=out, epochs=2, batch_size=8, report=False,
                        progress=interrupt_at("epoch 1/2"))
    resumed_from = json.loads((tmp_path / "s.onnx.work" / "compress-state.json").read_text())["fingerprint"]["teacher"]
    assert resumed_from == before
    _other_weights(exported)
    assert model_io.sha256_file(exported) == graph and model_io.sha256_of(exported) != before
    with pytest.raises(onnxkd.OnnxkdError, match="--resume: the run in .* used another teacher"):
        onnxkd.compress(exported, 0.5, digits["val"], output=out, epochs=2, batch_size=8, report=False, resume=True)


def test_a_recipe_replayed_on_its_own_external_data_teacher_gives_no_warning(exported, tmp_path, capsys):
    recipe = tmp_path / "r.json"
    from onnxkd.recipe import Recipe, save_recipe

    save_recipe(Recipe(), recipe, model_io.sha256_of(exported))
    code, _, err = cli(capsys, "prune", str(exported), "--recipe", str(recipe), "-o", str(tmp_path / "p.onnx"))
    assert code == 0 and "another teacher" not in err, err
    _other_weights(exported)
    code, _, err = cli(capsys, "prune", str(exported), "--recipe", str(recipe), "-o", str(tmp_path / "q.onnx"))
    assert code == 0 and "the recipe was made for another teacher" in err, err
