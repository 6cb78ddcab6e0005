"""String ops on numpy object arrays (string tensors never become torch tensors in the bridge)."""

from __future__ import annotations

import re

import numpy as np
import torch

from onnxkd.torch_bridge.registry import register


def _strings(x) -> np.ndarray:
    array = np.asarray(x, dtype=object)
    if not array.size:
        return array
    return np.vectorize(lambda s: s.decode() if isinstance(s, bytes) else str(s), otypes=[object])(array)


@register("StringConcat", since=20)
def string_concat(ctx, x, y):
    return np.asarray(np.frompyfunc(lambda a, b: a + b, 2, 1)(_strings(x), _strings(y)), dtype=object)


@register("RegexFullMatch", since=20)
def regex_full_match(ctx, x, *, pattern):
    compiled = re.compile(pattern)
    matched = np.vectorize(lambda s: compiled.fullmatch(s) is not None, otypes=[bool])(_strings(x))
    return torch.from_numpy(matched.reshape(np.shape(x)))


@register("StringSplit", since=20)
def string_split(ctx, x, *, delimiter=None, maxsplit=None):
    words = _strings(x)
    separator = delimiter or None  # an empty delimiter means runs of whitespace
    parts = [s.split(separator, -1 if maxsplit is None else maxsplit) for s in words.reshape(-1)]
    width = max((len(p) for p in parts), default=0)
    padded = np.array([p + [""] * (width - len(p)) for p in parts], dtype=object).reshape(words.shape + (width,))
    counts = torch.tensor([len(p) for p in parts], dtype=torch.int64).reshape(words.shape)
    return padded, counts


@register("StringNormalizer", since=10)
def string_normalizer(ctx, x, *, case_change_action="NONE", is_case_sensitive=0, locale="", stopwords=None):
    words = _strings(x)
    stops = set(stopwords or [])
    if is_case_sensitive:
        kept = [w for w in words.reshape(-1) if w not in stops]
    else:
        lowered = {s.lower() for s in stops}
        kept = [w for w in words.reshape(-1) if w.lower() not in lowered]
    if case_change_action == "LOWER":
        kept = [w.lower() for w in kept]
    elif case_change_action == "UPPER":
        kept = [w.upper() for w in kept]
    kept = kept or [""]  # ONNX keeps one empty string rather than an empty tensor
    result = np.array(kept, dtype=object)
    return result.reshape(1, -1) if words.ndim == 2 else result
