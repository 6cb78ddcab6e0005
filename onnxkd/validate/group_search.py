"""Per-group ratios where they pay: after the uniform ratio search, leave whole the groups whose cut buys
little latency, and cut the others harder (``--target-speedup``, unless ``--uniform``).

A uniform ratio cuts every group alike, but latency does not fall with MACs alike: on AVX-512 CPUs a
conv cut from 16 channels to 8 falls off onnxruntime's 16-channel blocked kernels and runs 1.5x faster
for 4x fewer MACs, while 32 -> 16 runs 3x faster (README, speed). Measured, in the manner of NetAdapt:
starting from the uniform answer (ratio r, speed-up s, MACs m), each tried group is left whole alone and
timed. Its cut *pays* when the latency it saves per MAC it removes is at least ``PAYS`` of what the
uniform cut saves per MAC on average, (1 - 1/s) / (1 - m). The groups that do not pay are left whole;
the ratio of the others is bisected again in [r, max_ratio] until the target is met. The per-group
answer replaces the uniform one only when it keeps more MACs (a proxy for the accuracy left to recover)
and a second, independent timing confirms it meets the target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnxkd.validate.speed_search import Candidate, Meter, SpeedSearch

PAYS = 0.5


def refine(search: SpeedSearch, chosen: Candidate, measure_at: Meter, groups: list[int], *, steps: int) -> None:
    """Update ``search`` in place with per-group ratios when they keep more MACs at the target speed-up."""
    if not groups or chosen.macs_ratio is None or chosen.ratio == 0 or chosen.speedup <= 1 or chosen.macs_ratio >= 1:
        return
    search.uniform = chosen
    idle = _idle_groups(chosen, measure_at, groups)
    if not idle:
        return
    best = _bisect(search, chosen, measure_at, idle, steps)
    if best is None or best.macs_ratio is None or best.macs_ratio <= chosen.macs_ratio:
        return
    # the best of several noisy timings is biased high: time it once more
    again = measure_at(best.ratio, idle, chosen.round_to, fresh=True)
    if again.speedup < search.target:
        return
    search.ratio, search.speedup, search.macs_ratio = best.ratio, again.speedup, best.macs_ratio
    search.group_ratios = {gid: 0.0 for gid in idle}


def _idle_groups(chosen: Candidate, measure_at: Meter, groups: list[int]) -> tuple[int, ...]:
    """The groups whose cut at ``chosen`` saves less than ``PAYS`` of the average latency per MAC."""
    per_mac = (1 - 1 / chosen.speedup) / (1 - chosen.macs_ratio)  # fractions of the teacher's latency and MACs
    idle = []
    for gid in groups:
        trial = measure_at(chosen.ratio, (gid,), chosen.round_to)
        if trial.macs_ratio is None or trial.macs_ratio <= chosen.macs_ratio:
            continue  # nothing of this group was cut at this ratio
        saved = 1 / trial.speedup - 1 / chosen.speedup
        if saved < PAYS * per_mac * (trial.macs_ratio - chosen.macs_ratio):
            idle.append(gid)
    return tuple(sorted(idle))


def _bisect(search: SpeedSearch, chosen: Candidate, measure_at: Meter, idle: tuple[int, ...],
            steps: int) -> Candidate | None:
    """The smallest ratio in [chosen.ratio, max_ratio] meeting the target with ``idle`` left whole."""
    first = measure_at(chosen.ratio, idle, chosen.round_to)
    if first.speedup >= search.target:
        return first
    top = measure_at(search.max_ratio, idle, chosen.round_to)
    if top.speedup < search.target:
        return None
    low, high, best = chosen.ratio, search.max_ratio, top
    for _ in range(steps):
        mid = (low + high) / 2
        candidate = measure_at(mid, idle, chosen.round_to)
        if candidate.speedup >= search.target:
            high, best = mid, candidate
        else:
            low = mid
    return best
