"""The studies cache never runs code from a cache file (issue 12, item 9).

A crafted pickle (or an ``.npz`` smuggling a pickled object array, or a JSON tree naming a
class outside vitviz_core) placed where the cache looks must be ignored and recomputed,
without executing anything. Real result types round-trip exactly.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from vitviz_core.studies_eval import cache as sc


class _Exploit:
    """Unpickling this touches ``marker``: proof that the file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def studies(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "studies"
    folder.mkdir(parents=True)
    return folder


def test_crafted_pickle_in_the_cache_never_runs(studies, tmp_path):
    marker = tmp_path / "pwned"
    key = sc.cache_key("fg", (), None, {"a": 1})
    evil = pickle.dumps(_Exploit(marker))
    for name in (f"fg-{key}.pkl", f"fg-{key}.npz"):  # the old and the new file name
        (studies / name).write_bytes(evil)
    assert sc.cached("fg", lambda: 42, settings={"a": 1}) == 42
    assert not marker.exists(), "a crafted cache file executed code"
    assert sc.cached("fg", lambda: 0, settings={"a": 1}) == 42  # rewritten safely, then a hit
    assert not marker.exists()


def test_npz_with_a_pickled_object_array_never_runs(studies, tmp_path):
    marker = tmp_path / "pwned2"
    key = sc.cache_key("bg", (), None, {})
    obj = np.empty(1, dtype=object)
    obj[0] = _Exploit(marker)
    with open(studies / f"bg-{key}.npz", "wb") as fh:
        np.savez(fh, __json__=obj, a0=obj)
    assert sc.cached("bg", lambda: "fresh") == "fresh"
    assert not marker.exists()


def test_tree_naming_a_foreign_class_is_refused(studies):
    import io
    import json

    tree = {"v": sc._CACHE_VERSION, "tree": {"__dataclass__": "subprocess:Popen", "fields": {"args": "id"}}}
    buf = io.BytesIO()
    np.savez(buf, __json__=np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8))
    with pytest.raises(ValueError, match="not a vitviz_core class"):
        sc.loads(buf.getvalue())
    key = sc.cache_key("x", (), None, {})
    (studies / f"x-{key}.npz").write_bytes(buf.getvalue())
    assert sc.cached("x", lambda: [1]) == [1]


def test_result_types_round_trip():
    from vitviz_core.evaluate.frequency import FrequencyResult
    from vitviz_core.evaluate.probe import LinearProbe
    from vitviz_core.evaluate.records import ResultRecord
    from vitviz_core.evaluate.stats import Estimate
    from vitviz_core.evaluate.token_mixing import TokenMixingResult

    est = Estimate(0.5, 0.4, 0.6, 100, "bootstrap")
    rec = ResultRecord(experiment="f", data={"n_images": 3, "n_skipped": 1}, duration_s=1.5)
    fr = FrequencyResult(
        cutoffs=[4.0, math.inf], kinds=["low"], top1={"low": [est, est]}, natural_top1=est, record=rec
    )
    tm = TokenMixingResult(
        depth=2,
        natural={1: est},
        isolate={0: {1: est, 5: est}},
        best_position=(1, 2),
        patch_map={1: np.arange(6.0).reshape(2, 3)},
    )
    torch.manual_seed(0)
    probe = LinearProbe(4, 3, "cls", 1)
    value = {
        "fr": fr,
        "tm": tm,
        "maps": [np.zeros((2, 2), np.uint8)],
        "t": torch.arange(3, dtype=torch.bfloat16),
        (1, 2): ("a", None, True),
        "probe": probe,
        "nan": float("nan"),
        "i": np.int64(7),
    }
    back = sc.loads(sc.dumps(value))
    assert back["fr"].top1["low"][0] == est and back["fr"].cutoffs[1] == math.inf
    assert back["fr"].record.data == {"n_images": 3, "n_skipped": 1}
    assert back["tm"].isolate == {0: {1: est, 5: est}} and back["tm"].best_position == (1, 2)
    np.testing.assert_array_equal(back["tm"].patch_map[1], tm.patch_map[1])
    assert back["maps"][0].dtype == np.uint8 and back[(1, 2)] == ("a", None, True)
    assert back["t"].dtype == torch.bfloat16 and back["t"].tolist() == [0, 1, 2]
    assert math.isnan(back["nan"]) and back["i"] == 7 and isinstance(back["i"], np.int64)
    x = torch.randn(2, 4)
    torch.testing.assert_close(back["probe"](x), probe(x))


def test_unsupported_values_are_computed_but_not_cached(studies):
    calls = []

    def compute():
        calls.append(1)
        return {"f": lambda: 1}

    sc.cached("u", compute)
    sc.cached("u", compute)
    assert len(calls) == 2 and not list(studies.glob("u-*"))
