"""The report's tables as plain rows of strings, built once from the result dict; renderers only lay them out."""

from __future__ import annotations

from dataclasses import dataclass, field

from onnxkd.report import fmt


@dataclass
class Table:
    key: str
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""
    left: int = 1  # columns aligned left (labels); the rest are numbers, right-aligned


def summary(r: dict) -> Table:
    t, s, sp = r["teacher"], r["student"], r["speedup"]
    table = Table("summary", "Teacher vs student", ["", "teacher", "student", "change", "95% CI"])
    if r.get("accuracy"):
        acc = r["accuracy"]
        lo, hi = acc["drop_ci95"]
        table.rows.append(["accuracy", fmt.pct(acc["teacher"]), fmt.pct(acc["student"]), fmt.points(-acc["drop"]),
                           f"[{fmt.points(-hi, False)}, {fmt.points(-lo, False)}]"])
    if r.get("agreement"):
        ag = r["agreement"]
        table.rows.append(["top-1 agreement", "", fmt.pct(ag["top1"]), "", fmt.ci(ag["top1_ci95"], fmt.pct)])
    rows = [(sp, "latency_ms")] + ([(sp["batched"], "latency_ms_batched")] if sp.get("batched") else [])
    for speed, key in rows:
        table.rows.append([f"latency p50, batch {speed['batch_size']}", fmt.ms(t[key]["p50"]), fmt.ms(s[key]["p50"]),
                           f"{fmt.ratio(speed['p50'])} speed-up", fmt.ci(speed["ci95"])])
    if sp.get("batched"):
        key = "latency_ms_batched"
        table.rows.append([f"throughput, batch {sp['batched']['batch_size']}", fmt.rate(t[key]["throughput_per_s"]),
                           fmt.rate(s[key]["throughput_per_s"]), "", ""])
    # a count missing some nodes (shapes not inferable) is a lower bound: no ratio from it (as macs_reduction)
    partial = t.get("macs_unknown_nodes") or s.get("macs_unknown_nodes")
    macs_ratio = "not comparable (some not counted)" if partial else _reduction(t["macs"], s["macs"], "fewer")
    table.rows.append(["MACs", fmt.count(t["macs"]), fmt.count(s["macs"]), macs_ratio, ""])
    if t.get("macs_int8") or s.get("macs_int8"):  # quantized models only (reports before schema 1.2 lack the field)
        table.rows.append(["int8 MACs", _int8(t), _int8(s), "", ""])
    table.rows += [
        ["params", fmt.count(t["params"]), fmt.count(s["params"]), _reduction(t["params"], s["params"], "fewer"), ""],
        ["file size", fmt.size(t["size_bytes"]), fmt.size(s["size_bytes"]),
         _reduction(t["size_bytes"], s["size_bytes"], "smaller"), ""],
        ["nodes", str(t["nodes"]), str(s["nodes"]), "", ""],
        ["session creation", fmt.ms(t["session_create_ms"]), fmt.ms(s["session_create_ms"]), "", ""],
        ["first run", fmt.ms(t["first_run_ms"]), fmt.ms(s["first_run_ms"]), "", ""],
    ]
    return table


def _int8(figures: dict) -> str:
    """'18.3 M (100%)': the int8 MACs and their share of all the model's MACs."""
    int8, total = figures.get("macs_int8") or 0, figures["macs"]
    return f"{fmt.count(int8)} ({fmt.pct(int8 / total, 0)})" if int8 and total else fmt.count(int8)


def gates(r: dict) -> Table:
    table = Table("gates", "Gates", ["gate", "threshold", "measured", "result"])
    for g in r.get("gates", []):
        threshold, value = _gate_figures(g)
        table.rows.append([g["name"], f"{g['op']} {threshold}", value, "PASS" if g["passed"] else "FAIL"])
    return table


def _gate_figures(gate: dict) -> tuple[str, str]:
    """Threshold and measured value with the digits that tell them apart: an agreement of 83.123% failing a
    limit of 83.13% read '>= 83.1% | 83.1% | FAIL'."""
    name = gate["name"]
    if "speed" in name:
        show, digits = fmt.ratio_digits, 2
    elif "agreement" in name or "accuracy" in name:
        show, digits = fmt.pct, 1
    else:  # a count (finite outputs)
        return str(gate["threshold"]), str(gate["value"])
    threshold, value = show(gate["threshold"], digits), show(gate["value"], digits)
    while threshold == value and gate["threshold"] != gate["value"] and digits < 6:
        digits += 1
        threshold, value = show(gate["threshold"], digits), show(gate["value"], digits)
    return threshold, value


def quality(r: dict) -> Table:
    table = Table("quality", "Output agreement (teacher vs student on --data)",
                  ["output", "shape", "max |Δ|", "mean |Δ|", "cosine", "KL", "top-1 agreement", "NaN/Inf t / s"])
    for q in r.get("quality", []):
        tn, sn = q["teacher_nonfinite"], q["student_nonfinite"]
        shape = "×".join(map(str, q["shape"]))
        if q.get("data_shaped"):  # its rows follow the data: counted, not compared
            shape = f"{q['rows']['teacher']:,} / {q['rows']['student']:,} rows ({q['data_shaped']})"
        name = f"{q['name']} (read by {q['read_by']})" if q.get("read_by") else q["name"]
        table.rows.append([name, shape, fmt.num(q["max_abs_error"]),
                           fmt.num(q["mean_abs_error"]), fmt.num(q["cosine"]), fmt.num(q["kl"]),
                           fmt.pct(q["top1_agreement"]), f"{tn['nan'] + tn['inf']} / {sn['nan'] + sn['inf']}"])
        for part in q.get("parts", []):
            table.rows.append([f"  {q['name']} {part['label']}", f"axis {part['axis']}", fmt.num(part["max_abs_error"]),
                               fmt.num(part["mean_abs_error"]), fmt.num(part["cosine"]), "—", "—", ""])
    if r.get("data"):
        table.note = f"{r['data']['n']} samples from {r['data']['source']}; KL = KL(softmax(teacher) ‖ softmax(student)) in nats."
        if any(q.get("per_token") for q in r.get("quality", [])):
            table.note += (" An output of scores per position ([N, T, C]: a language model's or a tagger's logits, "
                           "a CTC recognizer's log-probabilities) has its top-1 agreement and KL per token.")
        if any(q.get("parts") for q in r.get("quality", [])):
            table.note += (" An output that holds values of different kinds side by side (a detector's box "
                           "coordinates next to its scores, probabilities 0 to 1) is also compared part by part: as "
                           "one tensor, the coordinates' magnitude hides the scores.")
        for q in r.get("quality", []):
            if (found := q.get("detections")) is not None:
                table.note += f" {detection_line(q['name'], found)}."
        if any(q.get("data_shaped") for q in r.get("quality", [])):
            table.note += (" Rows teacher / student: an output whose shape follows its data (the boxes "
                           "NonMaxSuppression keeps) is compared by its row count only, and the tensors it comes from "
                           "(read by ...) element by element.")
    return table


def detection_line(name: str, found: dict) -> str:
    """``output0: the student's detections reach mAP@0.5 0.448 against the teacher's (...)``"""
    figure = "n/a (the teacher detects nothing)" if found["map50"] is None else fmt.num(found["map50"])
    return (f"{name}: the student's detections reach mAP@0.5 {figure} against the teacher's ("
            f"{found['teacher_boxes']:,} / {found['student_boxes']:,} boxes above {found['confidence']} confidence)")


def latency(r: dict) -> Table:
    table = Table("latency", "Latency (ms, warm-up excluded, teacher and student interleaved)",
                  ["model", "batch", "n", "mean", "std", "p50", "p90", "p95", "p99", "CV", "throughput"])
    for key in ("latency_ms", "latency_ms_batched"):
        for who in ("teacher", "student"):
            lat = r[who].get(key)
            if lat:
                table.rows.append([who, str(lat["batch_size"]), str(lat["n"]), *(fmt.ms(lat[k]) for k in
                                   ("mean", "std", "p50", "p90", "p95", "p99")), fmt.pct(lat["cv"]),
                                   fmt.rate(lat["throughput_per_s"])])
    return table


def macs(r: dict) -> Table:
    t, s = r["teacher"]["macs_by_op"], r["student"]["macs_by_op"]
    shape = ", ".join(f"{i['name']} {'×'.join(map(str, i['measured_shape']))}" for i in r["teacher"]["inputs"])
    table = Table("macs", "MACs by op type", ["op", "teacher", "student", "reduction"],
                  note=f"At input shape {shape}.")
    for op in sorted(set(t) | set(s)):
        table.rows.append([op, fmt.count(t.get(op)), fmt.count(s.get(op)), _reduction(t.get(op), s.get(op), "fewer")])
    return table


def channels(r: dict) -> Table:
    table = Table("channels", "Channels kept per layer", ["layer", "op", "teacher", "student", "kept"], left=2)
    for c in r.get("channels", []):
        table.rows.append([c["layer"], c["op_type"], str(c["teacher"]), fmt.DASH if c["student"] is None else str(c["student"]),
                           fmt.pct(c["kept"], 0)])
    return table


def ops(r: dict) -> Table:
    t, s = r["teacher"]["op_histogram"], r["student"]["op_histogram"]
    table = Table("ops", "Nodes by op type", ["op", "teacher", "student"])
    for op in sorted(set(t) | set(s), key=lambda o: (-t.get(o, 0), o)):
        table.rows.append([op, str(t.get(op, 0)), str(s.get(op, 0))])
    return table


def environment(r: dict) -> Table:
    e = r["environment"]
    table = Table("environment", "Environment", ["", "value"], left=2)
    rows = [
        ("onnxruntime", e["onnxruntime_version"]),
        ("providers", ", ".join(e["providers"])),
        ("threads", str(e["threads"] or "default")),
        ("graph optimisation", e["graph_optimization_level"]),
        ("CPU", f"{e['cpu_model']} ({e['cpu_count']} logical cores)"),
        ("platform", e["platform"]),
        ("python / onnx / numpy", f"{e['python_version']} / {e['onnx_version']} / {e['numpy_version']}"),
        ("measured", e["timestamp_utc"]),
    ]
    for who in ("teacher", "student"):
        m = r[who]
        rows.append((f"{who}", f"{m['path']} (sha256 {m['sha256'][:16]}…)"))
        rows.append((f"{who} inputs", "; ".join(f"{i['name']} {i['dtype']}[{','.join(map(str, i['shape']))}]"
                                               for i in m["inputs"])))
    table.rows = [list(row) for row in rows]
    return table


def all_tables(r: dict) -> list[Table]:
    """In reading order; empty tables are dropped."""
    tables = [summary(r), gates(r), quality(r), latency(r), macs(r), channels(r), ops(r), environment(r)]
    return [t for t in tables if t.rows]


_OPPOSITE = {"fewer": "more", "smaller": "larger"}


def _reduction(a, b, word: str) -> str:
    """'3.99x fewer' when b < a; '2.10x more' when the student grew (e.g. weights a teacher generated at run
    time stored as initializers)."""
    if not a or not b:
        return ""
    return f"{fmt.ratio(a / b)} {word}" if a >= b else f"{fmt.ratio(b / a)} {_OPPOSITE.get(word, word)}"
