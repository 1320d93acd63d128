"""`helpers.pairwise_cases`: the covering designs that replace full products of test parameters."""

import itertools

import pytest
from helpers import pairwise_cases


def _pairs(rows, sizes):
    return {(a, row[a], b, row[b]) for row in rows for a, b in itertools.combinations(range(len(sizes)), 2)}


@pytest.mark.parametrize(
    "sizes, count",
    [((3,), 3), ((3, 2), 6), ((3, 2, 2), 6), ((5, 2, 2), 10), ((2, 2, 2), 4), ((2, 2, 2, 2), 6), ((7, 3, 3), 21)],
)
def test_every_pair_of_values_runs_in_fewer_cases(sizes, count):
    axes = {f"axis{i}": [f"v{j}" for j in range(size)] for i, size in enumerate(sizes)}
    cases = pairwise_cases(axes)
    assert len(cases) == count
    rows = [tuple(int(value[1:]) for value in values) for _, values in cases]
    assert len(set(rows)) == len(rows)
    full = list(itertools.product(*[range(size) for size in sizes]))
    assert _pairs(rows, sizes) == _pairs(full, sizes)
    assert all({row[i] for row in rows} == set(range(size)) for i, size in enumerate(sizes))


def test_ids_name_each_value_and_mappings_name_theirs():
    cases = pairwise_cases({"kind": ["lstm", "gru"], "jit": {"graph": False, "xla": True}, "flag": [True, False]})
    assert [case_id for case_id, _ in cases] == ["lstm-graph-True", "lstm-xla-False", "gru-graph-False", "gru-xla-True"]
    assert cases[1][1] == ("lstm", True, False)
