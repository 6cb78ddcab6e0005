"""Labels checked against the model's class scores before any work: one sample through onnxruntime."""

from __future__ import annotations

from onnxkd import model as model_io
from onnxkd.data import Dataset
from onnxkd.data.labels import check_labels_fit
from onnxkd.model import ModelLike
from onnxkd.validate.inference import batch_limit
from onnxkd.validate.quality import is_class_scores
from onnxkd.validate.sessions import SessionConfig, create_session


def check_label_classes(teacher: ModelLike, specs: list, datasets: list[Dataset]) -> None:
    """Labels naming a class no class-score output of the model has, found from one sample through
    onnxruntime before any stage (distillation found them after pruning and kd scoring; quantize after
    calibration and timing)."""
    labelled = [d for d in datasets if d.labels is not None and len(d.labels)]
    if not labelled:
        return
    session = create_session(model_io.session_source(teacher), SessionConfig(), "teacher")[0]
    try:
        outputs = session.run(None, labelled[0].first(batch_limit(specs, 1)))
    except Exception:  # noqa: BLE001  (a run that fails here fails in the stages, which say why)
        return
    names = [o.name for o in session.get_outputs()]
    scores = [(out, name) for out, name in zip(outputs, names) if is_class_scores(out) and out.dtype.kind == "f"]
    for dataset in labelled:
        if scores and not any(out.shape[1] > int(dataset.labels.max()) for out, _ in scores):
            widest, name = max(scores, key=lambda pair: pair[0].shape[1])
            check_labels_fit(dataset.labels, widest, name, dataset.source)
