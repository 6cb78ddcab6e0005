"""The compress section of a report: what was cut, what training did, what it cost and bought.

Read from ``r["compress"]`` (present in reports written by ``onnxkd compress``); like ``tables``, every
table is plain rows of strings that the markdown, HTML and terminal renderers lay out.
"""

from __future__ import annotations

from onnxkd.quantize.result import SCOPE_TEXT, written_text
from onnxkd.report import fmt
from onnxkd.report.tables import Table, detection_line

FROZEN_SHOWN = 12  # most frequent reasons listed; the rest are summed in one row


def narrative(r: dict, frozen_listed: str = "below") -> list[str]:
    """Three sentences a newcomer reads first: what was cut, what it cost, what it bought; ``frozen_listed``:
    where the table of the groups left whole is, "below" (the files) or "above" (the terminal)."""
    c, speed = r["compress"], r["speedup"]
    p, s = c["prune"], c["prune"]["summary"]
    whole = s["frozen"] + len(s.get("whole_by_rounding") or [])
    cut = (f"What was cut: {s['pruned']} of {s['groups']} channel groups (criterion {p['criterion']}, ratio "
           f"{p['ratio']:g}{_steps(p)}), {s['channels_before']:,} → {s['channels_after']:,} channels; "
           f"{_groups(s['frozen'])} left whole because cutting could not be proven safe"
           + _rounded(s) + (f" (listed {frozen_listed})." if whole else "."))
    cost_parts = []
    pruned = c.get("pruned_quality") or {}
    if r.get("accuracy"):
        acc = r["accuracy"]
        before = f"; {fmt.pct(pruned['accuracy']['student'])} straight after pruning" if pruned.get("accuracy") else ""
        cost_parts.append(f"accuracy {fmt.pct(acc['teacher'])} → {fmt.pct(acc['student'])} "
                          f"({fmt.points(-acc['drop'])}, 95% CI {_points_ci(acc)}{before})")
    if r.get("agreement"):
        cost_parts.append(f"top-1 agreement with the teacher {fmt.pct(r['agreement']['top1'])}")
    for i, q in enumerate(r.get("quality", [])):
        if q.get("class_ids") and not r.get("agreement"):
            before = f" ({fmt.pct(pruned['quality'][i]['top1_agreement'])} straight after pruning)" \
                if pruned.get("quality") else ""
            cost_parts.append(f"output {q['name']!r}: {fmt.pct(q['top1_agreement'])} of class ids agree with the "
                              f"teacher's{before}")
        elif q.get("per_token") and not r.get("agreement") and q["top1_agreement"] is not None:
            before = f" ({fmt.pct(pruned['quality'][i]['top1_agreement'])} straight after pruning)" \
                if pruned.get("quality") else ""
            cost_parts.append(f"output {q['name']!r}: top-1 agreement with the teacher per token "
                              f"{fmt.pct(q['top1_agreement'])}{before}")
        elif q.get("data_shaped") and not r.get("agreement"):
            cost_parts.append(f"output {q['name']!r}: {q['rows']['teacher']:,} → {q['rows']['student']:,} rows "
                              f"(its shape follows {q['data_shaped']})")
        elif not r.get("agreement"):
            before = ""
            if pruned.get("quality"):
                before = f" (straight after pruning: cosine {fmt.num(pruned['quality'][i]['cosine'])})"
            what = f"tensor {q['name']!r} (read by {q['read_by']})" if q.get("read_by") else f"output {q['name']!r}"
            if q.get("parts"):  # the whole tensor's figures are its largest part's: say each part's
                parts = ", ".join(f"{p['label']} mean |Δ| {fmt.num(p['mean_abs_error'])}" for p in q["parts"])
                found = q.get("detections")
                cost_parts.append(detection_line(q["name"], found) + f"; {parts}" if found else f"{what}: {parts}")
                continue
            cost_parts.append(f"{what}: cosine {fmt.num(q['cosine'])}, mean |Δ| "
                              f"{fmt.num(q['mean_abs_error'])}{before}")
    n = r["data"]["n"] if r.get("data") else 0
    measured_on = ("samples it was trained on (--val-data was --data)" if c.get("val_is_train") else
                   "held-out samples")
    cost = ("What it cost: " + "; ".join(cost_parts) + f" on {n:,} {measured_on}." if cost_parts else
            "What it cost: not measured (no validation data: the run was data-free).")
    macs = f"{fmt.ratio(speed['macs_reduction'])} fewer MACs" if speed.get("macs_reduction") else "MACs not counted"
    bought = (f"What it bought: {macs}, "
              f"{fmt.ratio(speed['params_reduction'])} fewer parameters, a p50 latency {_faster(speed['p50'])} at "
              f"batch {speed['batch_size']}")
    if speed.get("batched"):
        bought += f" and {_faster(speed['batched']['p50'])} at batch {speed['batched']['batch_size']}"
    bought += f" on onnxruntime ({', '.join(r['environment']['providers'])})"
    optimize = c.get("optimize") or {}
    fusion = (optimize.get("latency") or {}).get("rows")
    if fusion and any(optimize["fused"].values()):
        bought += (f"; optimize alone (fusions, constants) makes the teacher {_faster(fusion[0]['fusion_speedup'])} "
                   f"at batch {fusion[0]['batch_size']}, so pruning's own share is about "
                   f"{fmt.ratio(fusion[0]['speedup'] / fusion[0]['fusion_speedup'])}")
    return [cut, cost, bought + "."]


def stages(r: dict) -> Table:
    table = Table("stages", "Pipeline", ["stage", "result", "wall time"], left=2)
    for stage in r["compress"]["stages"]:
        table.rows.append([stage["name"], stage["detail"], f"{stage['seconds']:.1f} s"])
    table.note = f"Whole run {r['compress']['wall_s']:.1f} s."
    return table


def pruning(r: dict) -> Table:
    p, s = r["compress"]["prune"], r["compress"]["prune"]["summary"]
    table = Table("pruning", "What was cut", ["", "teacher", "student", "change"])
    table.rows = [
        ["channel groups cut", str(s["groups"]), f"{s['pruned']} cut, {s['frozen']} frozen", ""],
        ["channels", f"{s['channels_before']:,}", f"{s['channels_after']:,}",
         fmt.pct(s["channels_after"] / s["channels_before"] if s["channels_before"] else None) + " kept"],
        ["params", fmt.count(s.get("params_before")), fmt.count(s.get("params_after")),
         _fewer(s.get("params_before"), s.get("params_after"))],
        ["MACs", fmt.count(s.get("macs_before")), fmt.count(s.get("macs_after")),
         _fewer(s.get("macs_before"), s.get("macs_after"))],
    ]
    for step in p.get("steps") or []:
        table.rows.append([f"step {step['step']}", "", f"{step['channels']:,} channels", ""])
    found = (f" (found for a {fmt.ratio(p['speed_search']['target'])} target speed-up)" if p.get("speed_search") else "")
    table.note = f"Criterion {p['criterion']}, ratio {p['ratio']:g}{found}{_steps(p)}; MACs at batch 1."
    return table


def _rounded(s: dict) -> str:
    narrow = len(s.get("whole_by_rounding") or [])
    step = s.get("round_to")
    return (f", and {narrow} {'group' if narrow == 1 else 'groups'} because round-to {step} keeps whole blocks of "
            f"{step} channels" if narrow else "")


def frozen(r: dict) -> Table:
    table = Table("frozen", "Groups left whole, and why", ["reason", "groups", "channels"], left=1)
    counts: dict[str, list[int]] = {}
    for group in r["compress"]["prune"]["groups"]:
        if group["status"] == "frozen" or group["reason"].startswith("round-to"):
            entry = counts.setdefault(group["reason"], [0, 0])
            entry[0] += 1
            entry[1] += group.get("channels", group["size"])  # (reports before "channels": units)
    ordered = sorted(counts.items(), key=lambda item: (-item[1][1], item[0]))
    for reason, (groups, channels) in ordered[:FROZEN_SHOWN]:
        table.rows.append([reason, str(groups), f"{channels:,}"])
    rest = ordered[FROZEN_SHOWN:]
    if rest:
        table.rows.append([f"{len(rest)} other reasons", str(sum(v[0] for _, v in rest)),
                           f"{sum(v[1] for _, v in rest):,}"])
    return table


def layers(r: dict) -> Table:
    table = Table("layers", "Channels and MACs per layer",
                  ["layer", "op", "channels", "kept", "MACs teacher", "MACs student", "MACs change"], left=2)
    for row in r["compress"]["prune"].get("layers", []):
        channels = f"{row['teacher']} → {fmt.DASH if row['student'] is None else row['student']}"
        table.rows.append([row["layer"], row["op_type"], channels, fmt.pct(row["kept"], 0),
                           fmt.count(row.get("macs_teacher")), fmt.count(row.get("macs_student")),
                           _fewer(row.get("macs_teacher"), row.get("macs_student"))])
    return table


def speed_search(r: dict) -> Table:
    """The candidates --target-speedup timed, and the one chosen."""
    search = r["compress"]["prune"].get("speed_search")
    table = Table("speed_search", "Search for the target speed-up",
                  ["ratio", "round-to", "groups left whole", "MACs kept", "speed-up", ""])
    if not search:
        return table
    whole = sorted(int(g) for g in search.get("group_ratios", {}))
    chosen_key = (search["ratio"], search.get("round_to", 1), whole)
    for c in sorted(search["candidates"], key=lambda c: (len(c.get("whole", [])), c.get("round_to", 1), c["ratio"])):
        key = (c["ratio"], c.get("round_to", 1), sorted(c.get("whole", [])))
        table.rows.append([f"{c['ratio']:.3f}", str(key[1]), ", ".join(map(str, key[2])) or fmt.DASH,
                           fmt.pct(c["macs_ratio"]), fmt.ratio(c["speedup"]), "chosen" if key == chosen_key else ""])
    per_group = (f" Groups {', '.join(map(str, whole))} are left whole: timed whole one at a time, their cut saved "
                 "less than half the average latency per MAC, and the others were cut harder."
                 if whole else "")
    table.note = (f"Target {fmt.ratio(search['target'])} at batch {r['compress']['recipe']['prune']['latency_batch']}: "
                  "of the timed candidates that met it, the one keeping the most MACs (largest ratio tried "
                  f"{search['max_ratio']:g}); candidates timed after optimize when the student is optimized."
                  + per_group + (f" Note: {search['warning']}." if search.get("warning") else ""))
    return table


def latency_split(r: dict) -> Table:
    """Teacher as given, teacher optimized (fusion alone), student (pruning + fusion): gains kept apart."""
    table = Table("latency_split", "Where the speed-up comes from (p50 latency, onnxruntime)",
                  ["batch", "teacher", "teacher optimized", "student", "fusion alone", "speed-up"])
    optimize = r["compress"].get("optimize") or {}
    for row in (optimize.get("latency") or {}).get("rows", []):
        table.rows.append([str(row["batch_size"]), fmt.ms(row["teacher_ms"]), fmt.ms(row["teacher_optimized_ms"]),
                           fmt.ms(row["student_ms"]), fmt.ratio(row["fusion_speedup"]), fmt.ratio(row["speedup"])])
    if optimize:
        fused = ", ".join(f"{n} {name}" for name, n in optimize["fused"].items() if n) or "nothing fused"
        table.note = (f"onnxkd optimize on the student: {fused}; nodes {optimize['nodes_before']:,} → "
                      f"{optimize['nodes_after']:,}. The teacher as given; fusion alone: teacher optimized vs "
                      "teacher; speed-up: student vs teacher. Each is the ratio of one interleaved pair; the teacher "
                      "optimized is shown as teacher / fusion alone.")
    return table


def training(r: dict) -> Table:
    d = r["compress"]["distill"]
    headers = ["epoch", "train loss", "val loss", "agreement", "accuracy", "output error", "samples/s", ""]
    table = Table("training", "Training (validation figures per epoch, measured in PyTorch)", headers, left=1)
    if d.get("skipped"):  # nothing was cut (compress --int8 of the teacher as it is): no training to show
        table.note = f"No distillation: {d['skipped']}."
        return table
    recalibration = d.get("recalibration")
    kept_as_it_was = "best" if d.get("best_epoch") == 0 else ""  # epoch 0: the student before training
    if recalibration:
        table.rows.append(["pruned", fmt.DASH, *_figures(recalibration["before"]), fmt.DASH, ""])
        recalibrated = "BN recalibrated" if recalibration.get("kept", True) else "BN recalibrated (worse: not kept)"
        table.rows.append([recalibrated, fmt.DASH, *_figures(recalibration["after"]), fmt.DASH, kept_as_it_was])
    elif d.get("initial"):
        table.rows.append(["pruned", fmt.DASH, *_figures(d["initial"]), fmt.DASH, kept_as_it_was])
    for record in d.get("history", []):
        best = "best" if record["epoch"] == d.get("best_epoch") else ""
        table.rows.append([str(record["epoch"]), fmt.num(record["loss"]), *_figures(record["val"]),
                           f"{record['samples_per_s']:,.0f}", best])
    data = d.get("data", {})
    train_n = data.get("train", {}).get("n", 0)
    written = ("the student as it was before training: no epoch did better" if kept_as_it_was
               else f"the best epoch's ({d.get('best_epoch')})")
    per_token = any(record["val"].get("agreement") is None and record["val"].get("token_agreement") is not None
                    for record in d.get("history", []))
    table.note = (f"{d['steps']:,} steps on {train_n:,} samples"
                  + (" (data-free: random inputs)" if data.get("data_free") else "")
                  + f", {d['device']}; the student written is {written}."
                  + (" Agreement is per token (the top-1 of the scores at each position)." if per_token else ""))
    return table


def int8(r: dict) -> Table:
    """The float student against the int8 one (``compress --int8``): what quantization kept, bought and cost."""
    q = r["compress"].get("quantize")
    table = Table("int8", "int8 student (against the float student)", ["", "value"], left=2)
    if not q:
        return table
    target, calibration = q["target"], q["calibration"]
    table.rows += [
        ["written", written_text(q)],
        ["target", f"{target['device']}: {target['activation']} activations, int8 weights"],
        ["calibration", f"{calibration['method']} on {calibration['samples']:,} samples, "
                        f"{'per-channel' if calibration['per_channel'] else 'per-tensor'} weights"],
        ["int8 compute nodes", f"{q['quantized_nodes']} of {q['compute_nodes']}"],
    ]
    if q.get("scope"):
        table.rows.append(["scope", SCOPE_TEXT[q["scope"]]])
    if q.get("padded_inputs"):
        table.rows.append(["inputs padded to 4 channels (fast int8 kernel)", ", ".join(q["padded_inputs"])])
    table.rows += [[f"speed-up over float, batch {b}", fmt.ratio(v)] for b, v in q["speedups"].items()]
    if q.get("quality"):
        quality = q["quality"]
        on = f" of {quality['output']} (the worst output)" if quality.get("outputs") else ""
        table.rows.append([f"{quality['metric']} drop{on}", f"{fmt.pct(quality['drop'])} (budget "
                                                             f"{fmt.pct(q['max_accuracy_drop'])})"])
    if q.get("qat"):
        table.rows.append(["quantization-aware distillation", f"drop {fmt.pct(q['qat']['ptq']['drop'])} (PTQ) → "
                           f"{fmt.pct(q['qat']['qat']['drop'])}{'' if q['qat']['kept'] else ', not kept'}"])
    size = q["size_bytes"]
    table.rows.append(["weights", f"{fmt.size(size['float'])} → {fmt.size(size['int8'])}"])
    table.rows += [[f"float: {name}", why] for name, why in q["float_nodes"].items()]
    table.note = " ".join(q["notes"])
    return table


def compress_tables(r: dict) -> list[Table]:
    if "compress" not in r:
        return []
    tables = [stages(r), pruning(r), speed_search(r), latency_split(r), int8(r), frozen(r), layers(r), training(r)]
    return [t for t in tables if t.rows]


def _faster(speedup: float) -> str:
    """'1.25x faster', or '1.11x slower' for a speed-up under 1 (not 'a 0.90x faster latency')."""
    if not speedup:
        return fmt.ratio(speedup)
    return f"{fmt.ratio(speedup)} faster" if speedup >= 1 else f"{fmt.ratio(1 / speedup)} slower"


def _groups(n: int) -> str:
    return "1 group was" if n == 1 else f"{n} groups were"


def _figures(val: dict) -> list[str]:
    """Loss, agreement (of samples, else per token: ``training``'s note says which), accuracy, output error."""
    agreement = val.get("agreement") if val.get("agreement") is not None else val.get("token_agreement")
    return [fmt.num(val.get("loss")), fmt.pct(agreement), fmt.pct(val.get("accuracy")), fmt.num(val.get("output_error"))]


def _steps(prune: dict) -> str:
    return f", in {len(prune['steps'])} steps" if prune.get("steps") else ""


def _fewer(before, after) -> str:
    return f"{fmt.ratio(before / after)} fewer" if before and after else ""


def _points_ci(acc: dict) -> str:
    lo, hi = acc["drop_ci95"]
    return f"[{fmt.points(-hi, False)}, {fmt.points(-lo, False)}] pts"
