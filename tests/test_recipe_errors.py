"""A recipe's unknown key is named with the keys a recipe may hold, as recipes write them."""

from __future__ import annotations

import pytest

from onnxkd.errors import OnnxkdError
from onnxkd.recipe import Recipe


def test_an_unknown_prune_key_lists_global_as_recipes_write_it():
    with pytest.raises(OnnxkdError, match=r"unknown key\(s\) 'globl'; known: .*\bglobal\b") as error:
        Recipe.from_dict({"prune": {"ratio": 0.5, "globl": True}}, "recipe.json")
    assert "global_rank" not in str(error.value)
    assert Recipe.from_dict({"prune": {"ratio": 0.5, "global": True}}, "recipe.json").prune.global_rank
