"""The one cache of computed results (vitviz_core.cache): safe to load, keyed by code and
inputs, and the only way the package reads results back from disk."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vitviz_core
from vitviz_core import cache


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VITVIZ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_round_trip_of_per_image_results(cache_dir):
    from vitviz_core.evaluate.common import Correctness, SweepResult

    corr = Correctness(
        labels=np.arange(4),
        indices=np.arange(4),
        correct={"clean": {1: np.array([True, False, True, True]), 5: np.ones(4, bool)}},
        predicted={"clean": np.array([0, 3, 2, 3])},
        skipped={7: "bad.jpg"},
        seconds=1.5,
    )
    sweep = SweepResult(by_model={"vit": corr}, variants=["clean"], seconds={"vit": 1.5, "variants": 0.1})
    calls = []

    def compute():
        calls.append(1)
        return sweep

    for _ in range(2):
        back = cache.cached("sweep", compute, folder="t", settings={"a": 1}, code="c1")
    assert len(calls) == 1 and isinstance(back, SweepResult)
    np.testing.assert_array_equal(back.correct["vit"]["clean"][1], corr.correct["clean"][1])
    np.testing.assert_array_equal(back.by_model["vit"].predicted["clean"], corr.predicted["clean"])
    assert back.skipped == {7: "bad.jpg"} and back.variants == ["clean"]
    # another code version or other settings are other entries
    cache.cached("sweep", compute, folder="t", settings={"a": 1}, code="c2")
    cache.cached("sweep", compute, folder="t", settings={"a": 2}, code="c1")
    assert len(calls) == 3 and len(list((cache_dir / "t").glob("sweep-*.npz"))) == 3


def test_code_version_follows_the_source():
    a = cache.code_version(["vitviz_core.evaluate.fill"])
    assert a == cache.code_version(["vitviz_core.evaluate.fill"])
    assert a != cache.code_version(["vitviz_core.evaluate.fill", "vitviz_core.evaluate.stats"])


def test_a_pickle_where_the_cache_looks_is_never_run(cache_dir, tmp_path):
    marker = tmp_path / "pwned"
    path = cache.cache_path("t", "k", cache.cache_key("k", settings={}, code="c"))
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ValueError):
        cache.read(path)
    assert cache.cached("k", lambda: 5, folder="t", settings={}, code="c") == 5
    assert not marker.exists()
    obj = np.empty(1, dtype=object)
    obj[0] = _Exploit(marker)
    with open(path, "wb") as fh:
        np.savez(fh, __json__=obj)
    assert cache.cached("k", lambda: 6, folder="t", settings={}, code="c") == 6
    assert not marker.exists()


def test_exemplar_search_uses_the_safe_cache(cache_dir):
    timm = pytest.importorskip("timm")
    from torch.utils.data import TensorDataset

    from vitviz_core.evaluate.exemplars import find_exemplars

    torch.manual_seed(0)
    m = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=1,
        embed_dim=16,
        num_heads=2,
        num_classes=4,
    ).eval()
    data = TensorDataset(torch.rand(5, 3, 32, 32), torch.zeros(5, dtype=torch.long), torch.arange(5))
    first = find_exemplars(m, data, hooks=["blocks.0.hook_resid_post"], k=2, progress=False)
    files = list((cache_dir / "exemplars").glob("*"))
    assert [f.suffix for f in files] == [".npz"]
    again = find_exemplars(m, data, hooks=["blocks.0.hook_resid_post"], k=2, progress=False)
    assert again.from_cache
    t0, t1 = first.topk["blocks.0.hook_resid_post"]["mean"], again.topk["blocks.0.hook_resid_post"]["mean"]
    assert torch.equal(t0.indices, t1.indices) and torch.equal(t0.values, t1.values)


#: Calls that may unpickle: none may appear in the package (torch.load only with weights_only=True,
#: for converting user checkpoints; numpy loads only with allow_pickle=False).
_UNSAFE = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"\bcloudpickle\b|\bdill\b|\bjoblib\.load\b|\bshelve\b"), "a pickle-based loader"),
    (re.compile(r"allow_pickle\s*=\s*True"), "allow_pickle=True"),
    (re.compile(r"\bpd\.read_pickle\b|\bread_pickle\("), "read_pickle"),
]


def test_the_package_never_loads_a_pickle():
    root = Path(vitviz_core.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        for pattern, what in _UNSAFE:
            if pattern.search(text):
                bad.append(f"{path.relative_to(root)}: {what}")
        for m in re.finditer(r"torch\.load\((.*)", text):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{path.relative_to(root)}: torch.load without weights_only=True")
        for m in re.finditer(r"np\.load\((.*)", text):
            if "allow_pickle=False" not in m.group(1):
                bad.append(f"{path.relative_to(root)}: np.load without allow_pickle=False")
    assert not bad, "pickle loads in the package:\n" + "\n".join(bad)
