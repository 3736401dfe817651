"""The one-glance tables (visprune.book.overview) on constructed grids, checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from visprune.book import overview


def _grid():
    rows = []
    for run, method, k, preds, flops in (("none", "none", None, [0, 1, 0, 1], 100.0),
                                         ("random-k4", "random", 4, [0, 0, 0, 1], 40.0),
                                         ("downsample-k4", "downsample", 4, [1, 0, 1, 0], 30.0)):
        for i, p in enumerate(preds):
            rows.append({"dataset": "pope-random", "run": run, "method": method, "k": k, "sample_id": f"s{i}",
                         "status": "ok", "prediction": p, "caption": None, "probs": [0.5, 0.5], "label": 0, "lm_tokens": 10, "visual_tokens": 4,
                         "visual_per_layer": 4.0, "prefill_flops": flops, "selector_flops": 0.0})
    return pd.DataFrame(rows)


def test_loyalty_counts_flips_against_the_unpruned_run():
    table = overview.loyalty_table(_grid()).set_index("run")
    assert table.loc["random-k4", "flip_rate"] == 0.25 and table.loc["downsample-k4", "flip_rate"] == 1.0
    assert table.loc["random-k4", "flip_rate_low"] < 0.25 < table.loc["random-k4", "flip_rate_high"]
    with pytest.raises(ValueError, match="^reference"):
        overview.loyalty_table(_grid()[lambda g: g["method"] != "none"])


def test_cost_relative_to_unpruned_and_conventions():
    table = overview.cost_table(_grid()).set_index("run")
    assert table["relative_flops"].tolist() == [1.0, 0.4, 0.3]
    assert table.loc["random-k4", "convention"] == "K tokens enter the language model"


def test_pareto_front_by_hand():
    cost = [1.0, 2.0, 3.0, 2.0, np.nan]
    value = [0.5, 0.7, 0.6, 0.7, 0.9]
    assert overview.pareto_front(cost, value).tolist() == [True, True, False, True, False]
    assert overview.pareto_front(cost, value, higher_is_better=False).tolist() == [True, False, False, False, False]
