"""``onnxkd prune``: structural channel pruning in the ONNX graph; also the channel-group table of ``inspect``."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import click

from onnxkd.commands.options import ROUND_TO_HELP, input_shape_option, session_options, target_speedup_options
from onnxkd.errors import OnnxkdError

CRITERIA = ["l1", "l2", "bn", "random", "taylor", "kd"]


@click.command(name="prune", short_help="Remove channels from a model's layers (ONNX in, smaller ONNX out).")
@click.argument("model", type=click.Path())
@click.option("--ratio", type=float, help="Fraction of channels removed from every prunable group, in [0, 1) (required unless --target-speedup or --recipe gives it).")
@click.option("-o", "--output", required=True, type=click.Path(), help="Where to write the pruned model.")
@click.option("--criterion", type=click.Choice(CRITERIA), default="l1", show_default=True,
              help="Channel importance: weight norm over the whole group (l1, l2), BN scale, random, "
                   "|weight x gradient| (taylor, needs --data), or Fisher saliency under the model's own softened "
                   "predictions (kd: teacher-guided, no labels needed, needs --data).")
@click.option("--global", "global_rank", is_flag=True, help="Rank channels across groups (same overall fraction, capped per group).")
@click.option("--max-group-ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.9, show_default=True,
              help="With --global: the largest fraction of any one group's channels removed.")
@click.option("--round-to", type=int, help=ROUND_TO_HELP)
@click.option("--ignore", metavar="REGEX", help="Leave groups whose node or weight names match REGEX whole.")
@click.option("--recipe", type=click.Path(), help='A recipe JSON (its "prune" section: ratio, criterion, overrides {"REGEX": RATIO}, ...); flags override it.')
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --criterion random and the labels kd samples.")
@click.option("--data", type=click.Path(), help="--criterion taylor/kd: samples to compute gradients on, an .npz keyed by "
              "input name (+ optional int `labels`) or an image folder DIR/<class>/*.png|jpg.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="--criterion taylor: samples per step.")
@click.option("--max-batches", type=click.IntRange(min=1), help="--criterion taylor/kd: use at most N batches of --data.")
@click.option("--prune-normalized", is_flag=True,
              help="Also cut hidden sizes normalised by LayerNormalization (residual stream, embeddings); "
                   "changes the statistics, so the student needs distillation.")
@target_speedup_options("MODEL", "timing pruned candidates (bisection). The written model is the pruned one, "
                                 "not optimised")
@session_options("--target-speedup: ")
@click.option("--optimize/--no-optimize", "optimize_candidates", default=True, show_default=True,
              help="--target-speedup: time each candidate after `optimize` (fused activations), as compress ships "
                   "it; the written model is still the pruned, unoptimised one.")
@input_shape_option("Sizes of an input's dynamic dims for MACs and --target-speedup timing (repeatable; default: "
                    "those of --data, a free batch is 1).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary and plan as JSON.")
def command(model, ratio, output, criterion, global_rank, round_to, ignore, recipe, seed, as_json,
            prune_normalized=False, data=None, batch_size=32, max_batches=None, max_group_ratio=0.9,
            target_speedup=None, max_ratio=0.9, latency_batch=1, provider="auto", threads=0,
            optimize_candidates=True, input_shapes=(), per_group=False, group_trials=24) -> None:
    """Prune MODEL's channels with ONNX-native dependency analysis and write the smaller model to OUTPUT.

    Coupled channels (residual adds, concats, depthwise convs, attention heads) are cut together;
    groups the analysis cannot prove safe are left whole. The plan (kept channels per group) is stored
    in the output's metadata for distillation.

    \b
    Example:
      onnxkd prune resnet50.onnx --ratio 0.5 -o resnet50-pruned.onnx
      onnxkd prune bert.onnx --ratio 0.3 --global --round-to 8 --ignore 'classifier' -o small.onnx
      onnxkd prune resnet50.onnx --ratio 0.5 --criterion taylor --data calib.npz --max-batches 8 -o small.onnx
      onnxkd prune resnet50.onnx --target-speedup 1.5 -o resnet50-fast.onnx
    """
    from click.core import ParameterSource

    from onnxkd.graph_passes.analyze.quantized import QUANTIZED_ADVICE, refuse_quantized
    from onnxkd.graph_passes.api import prune
    from onnxkd.graph_passes.prune.plan import DEFAULT_ROUND_TO
    from onnxkd.model import check_output_path, has_external_data, load, save

    ctx = click.get_current_context()
    options = from_recipe(ctx, recipe, ratio=ratio, criterion=criterion,
                          global_rank=global_rank, round_to=round_to, ignore=ignore, seed=seed,
                          prune_normalized=prune_normalized, max_group_ratio=max_group_ratio)
    ratio, criterion, prune_normalized = options["ratio"], options["criterion"], options["prune_normalized"]
    if target_speedup is not None:
        # a recipe's ratio yields to --target-speedup like any recipe value to a flag; a typed --ratio conflicts
        if ctx.get_parameter_source("ratio") == ParameterSource.COMMANDLINE:
            raise OnnxkdError("--ratio and --target-speedup exclude each other: give one")
    elif ratio is None:
        raise OnnxkdError("--ratio or --target-speedup is required (or a --recipe that gives the ratio)")
    elif not 0 <= ratio < 1:
        raise OnnxkdError(f"--ratio {ratio}: must be in [0, 1)")
    if options["round_to"] is not None and options["round_to"] < 1:
        raise OnnxkdError(f"--round-to {options['round_to']}: must be >= 1")
    if target_speedup is None and options["round_to"] is None:
        options["round_to"] = DEFAULT_ROUND_TO
    source, target = Path(model), check_output_path(output, {"input model": model}, data={"data": data})
    teacher = load(source)  # once: every candidate below is cut from this object
    refuse_quantized(teacher, str(source), QUANTIZED_ADVICE)  # before its importance is measured
    dataset, shapes = _data_and_shapes(teacher, data, input_shapes, needed=target_speedup is not None)
    measured = _measured_importance(criterion, teacher, dataset, batch_size, max_batches, options["seed"],
                                    prune_normalized) if criterion in ("taylor", "kd") else {}

    def prune_at(at: float, round_to: int = options["round_to"], group_ratios: dict[int, float] | None = None):
        plan_recipe = options["plan_recipe"]
        if group_ratios:
            plan_recipe = dict(plan_recipe or {}, group_ratios=group_ratios)
        return prune(teacher, at, criterion=criterion, global_rank=options["global_rank"], round_to=round_to,
                     ignore=options["ignore"], recipe=plan_recipe, seed=options["seed"],
                     prune_normalized=prune_normalized, max_group_ratio=options["max_group_ratio"],
                     input_shapes=shapes, **measured)

    search, chosen = None, {}
    if target_speedup is not None:
        from onnxkd.graph_passes.api import groups_by_weight
        from onnxkd.validate.speed_search import round_to_values

        groups = groups_by_weight(teacher, options["ignore"], options["plan_recipe"], prune_normalized) if per_group else ()
        search = _search_ratio(model, lambda at, **kw: prune_at(at, **kw).model, target_speedup, max_ratio,
                               latency_batch, provider, threads, optimize_candidates, shapes,
                               round_to=round_to_values(options["round_to"]), per_group=groups,
                               max_trials=group_trials)
        ratio, chosen = search.ratio, dict(round_to=search.round_to, group_ratios=search.group_ratios)
    result = prune_at(ratio, **chosen)  # again for the chosen candidate: only one is ever held in memory
    try:
        save(result.model, target, external_data=True if has_external_data(source) else None)
    except OSError as exc:
        raise OnnxkdError(f"{output}: cannot write ({exc.strerror or exc})") from None
    if as_json:
        report = {"output": str(target), "ratio": ratio, "round_to": chosen.get("round_to", options["round_to"]),
                  "summary": result.summary,
                  "plan": {str(k): v for k, v in result.plan.items()}}
        if search is not None:
            report.update(target_speedup=target_speedup, speed_search=search.to_dict())
        click.echo(json.dumps(report, indent=2))
        return
    from onnxkd.commands.console import make_console

    console = make_console()
    if search is not None:
        render_search(search, console)
    render_summary(result.summary, console)
    from onnxkd.graph_passes.prune.plan import nothing_cut, rounding_note

    note = rounding_note(result.summary)
    if note is None and (why := nothing_cut(result.summary, [g.frozen for g in result.groups if g.frozen])):
        note = f"nothing was cut: {why}; `onnxkd inspect` lists each group with its reason"
    if note:
        console.print(f"Note: {note}", style="dim", highlight=False)
    console.print(f"Wrote {target}", highlight=False, soft_wrap=True)


def _data_and_shapes(model, data: str | None, input_shapes: tuple[str, ...], needed: bool):
    """``--data`` read once, and the sizes MACs (and timing) use: --input-shape, else the data's, else the
    model's fixed dims. Where dynamic dims stay unsized, the summary leaves MACs out, unless ``needed``."""
    import onnx_ir as ir

    from onnxkd.data import check_input_shapes, input_specs, load_data, parse_input_shapes, reference_shapes

    specs = input_specs(ir.to_proto(model))
    given = check_input_shapes(parse_input_shapes(input_shapes), specs)
    dataset = load_data(data, specs) if data is not None else None
    try:
        return dataset, reference_shapes(specs, given, dataset.sample_shapes() if dataset is not None else None)
    except OnnxkdError:
        if needed:
            raise
        return dataset, None


def _measured_importance(criterion: str, model, dataset, batch_size: int, max_batches: int | None,
                         seed: int, prune_normalized: bool) -> dict:
    """``gradients`` (taylor) or ``scores`` (kd) for ``prune``, measured on --data through the torch bridge.

    Both are taken on the graph prune analyses: a weight untied for several consumers then gets each
    consumer's own gradient, not their sum."""
    if dataset is None:
        raise OnnxkdError(f"--criterion {criterion} needs --data (an .npz keyed by input name, or an image folder) "
                          "to compute gradients on")
    from onnxkd.commands.console import make_console
    from onnxkd.graph_passes.normalize.prepare import prepare

    prepared = prepare(model)
    if criterion == "kd":
        from onnxkd.distill.importance import BATCH, MAX_SAMPLES, kd_scores

        limit = MAX_SAMPLES if max_batches is None else max_batches * BATCH
        return {"scores": kd_scores(model, dataset, max_samples=limit, seed=seed, prune_normalized=prune_normalized,
                                    progress=make_console(stderr=True))}
    from onnxkd.torch_bridge.gradients import initializer_gradients

    return {"gradients": initializer_gradients(prepared, dataset, batch_size=batch_size, max_batches=max_batches,
                                               progress=make_console(stderr=True))}


def _search_ratio(model: str, prune_at, target_speedup: float, max_ratio: float, batch: int, provider: str,
                  threads: int, optimize_candidates: bool, input_shapes: dict, **per_group):
    """The timed search against MODEL as given, with a spinner on a terminal."""
    from onnxkd.commands.console import make_console
    from onnxkd.validate.sessions import SessionConfig
    from onnxkd.validate.speed_search import timed_search

    search = partial(timed_search, model, prune_at, target_speedup, max_ratio=max_ratio, batch=batch,
                     session_config=SessionConfig(provider, threads), optimize_candidates=optimize_candidates,
                     input_shapes=input_shapes, **per_group)
    console = make_console(stderr=True)
    if not console.is_terminal:  # like the other commands' progress bars: nothing when piped or tested
        return search()
    with console.status(f"Searching the ratio for a {target_speedup:g}x speed-up") as status:
        def progress(at: float, candidate) -> None:
            if candidate is None:
                status.update(f"Timing candidate ratio {at:.3f}")
            else:
                console.print(f"candidate {candidate.label}: speed-up {candidate.speedup:.2f}x", highlight=False)

        return search(progress=progress)


def from_recipe(ctx: click.Context, path: str | None, **flags) -> dict:
    """The prune options: a flag given on the command line wins, then the recipe's prune section, then the
    flag's default. Also ``plan_recipe``, the per-node overrides ``graph_passes.prune`` reads."""
    if path is None:
        return dict(flags, plan_recipe=None)
    from click.core import ParameterSource

    from onnxkd.commands.console import make_console
    from onnxkd.commands.options import warn_other_teacher
    from onnxkd.recipe import load_recipe

    recipe, raw = load_recipe(path)
    warn_other_teacher(ctx.params["model"], raw.get("teacher_sha256"), make_console(stderr=True))
    section = recipe.prune
    merged = dict(flags)
    for name in flags:
        if ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            merged[name] = recipe.seed if name == "seed" else getattr(section, name)
    merged["criterion"] = merged["criterion"] or "l1"
    return dict(merged, plan_recipe=dict(section.plan_recipe(), prune_normalized=merged["prune_normalized"]))


# --------------------------------------------------------------------------- rendering


def render_summary(summary: dict[str, Any], console) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="Pruning", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for header, justify in [("", "left"), ("before", "right"), ("after", "right"), ("ratio", "right")]:
        table.add_column(header, justify=justify)
    table.add_row("channel groups", str(summary["groups"]),
                  f"{summary['pruned']} pruned, {summary['frozen']} frozen", "")
    for key in ("channels", "params", "macs"):
        before, after = summary.get(f"{key}_before"), summary.get(f"{key}_after")
        ratio = f"{after / before:.3f}" if before and after is not None else "-"
        table.add_row("MACs" if key == "macs" else key, _num(before), _num(after), ratio)
    if summary.get("macs_before") is None:
        table.caption = "MACs: the input has dynamic dims with no size; give --input-shape NAME=D0,D1,.. or --data"
        table.caption_justify = "left"
    console.print(table)


def render_search(search, console) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title=f"Speed search (target {search.target:g}x)", title_justify="left", title_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for header, justify in [("candidate", "left"), ("MACs ratio", "right"), ("speed-up", "right"), ("", "left")]:
        table.add_column(header, justify=justify)
    whole = tuple(sorted(search.group_ratios))
    for c in sorted(search.candidates, key=lambda c: (len(c.whole), c.whole, c.round_to, c.ratio)):
        macs = "-" if c.macs_ratio is None else f"{c.macs_ratio:.3f}"
        chosen = "[green]<- chosen[/]" if (c.ratio, c.round_to, c.whole) == (search.ratio, search.round_to, whole) else ""
        table.add_row(c.label, macs, f"{c.speedup:.2f}x", chosen)
    console.print(table)
    note = " (no channel needs to be cut: the unpruned model meets the target)" if search.ratio == 0 else ""
    if whole:
        note += (f", groups {', '.join(map(str, whole))} left whole (their cut barely lowered latency); "
                 f"MACs ratio {search.macs_ratio:.3f} against {search.uniform.macs_ratio:.3f} for the uniform ratio "
                 f"{search.uniform.ratio:.3f}")
    console.print(f"Chosen ratio {search.ratio:.3f}, round-to {search.round_to}: speed-up {search.speedup:.2f}x{note}", highlight=False)
    if search.warning:
        console.print(f"[yellow]Note:[/] {search.warning}", highlight=False)


def _num(value) -> str:
    return "-" if value is None else f"{value:,}"


def groups_section(model, prune_normalized: bool = False) -> list[dict[str, Any]]:
    """The channel groups of a model as rows (``onnxkd inspect``'s groups section and its --json)."""
    from onnxkd.graph_passes.api import channel_groups

    try:
        _, groups = channel_groups(model, prune_normalized)
    except OnnxkdError as exc:  # inspect still shows the rest of the model
        return [{"error": str(exc)}]
    return [{"id": g.id, "size": g.size, "block": g.channel_block, "members": len(g.members),
             "weights": len({s.name for s in g.slices}), "source": g.source,
             "status": "prunable" if g.prunable else "frozen",
             "reason": g.frozen or ("single channel" if not g.prunable else "")} for g in groups]


def render_groups(rows: list[dict[str, Any]], console) -> None:
    from rich import box
    from rich.table import Table

    if rows and "error" in rows[0]:
        console.print(f"[yellow]Channel groups: not analysed[/] ({rows[0]['error']})", highlight=False)
        return
    prunable = sum(r["status"] == "prunable" for r in rows)
    table = Table(title=f"Channel groups ({prunable} of {len(rows)} prunable)", title_justify="left",
                  title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for header, justify in [("id", "right"), ("size", "right"), ("block", "right"), ("members", "right"),
                            ("weights", "right"), ("source", "left"), ("status", "left")]:
        table.add_column(header, justify=justify)
    for r in rows:
        status = "[green]prunable[/]" if r["status"] == "prunable" else f"[yellow]frozen[/]: {r['reason']}"
        table.add_row(str(r["id"]), str(r["size"]), str(r["block"]), str(r["members"]), str(r["weights"]),
                      r["source"], status)
    console.print(table)
