"""Tests of the neuron atlas (vitviz_core.atlas) on a tiny random timm ViT and generated images.

One reference job runs once per module with the local executor; the other tests compare
against it: the Ray executor on 2 CPUs, a job interrupted midway and resumed, a rerun that
must do nothing, sharded vs unsharded exemplars, and the generated site.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitviz_core.atlas import run as atlas_run
from vitviz_core.atlas.plan import DataSpec, ModelSpec, plan_job, plan_phase1
from vitviz_core.atlas.scores import neuron_scores
from vitviz_core.atlas.store import ResultStore, atomic_write, read_record, store_digest
from vitviz_core.atlas.tasks import Worker
from vitviz_core.cli import main
from vitviz_core.errors import HookError, VitvizError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = (
    ("depth", 2),
    ("embed_dim", 32),
    ("img_size", 32),
    ("num_classes", 10),
    ("num_heads", 2),
    ("patch_size", 8),
)
SPEC = ModelSpec("vit_tiny_patch16_224", "random", TINY, init_seed=0)
WNIDS = ("n01440764", "n01443537")  # ImageNet classes 0 and 1
SETTINGS = dict(steps=4, n_augment=2, k=4, chunk=2, shard_size=10, batch_size=8)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """24 distinct 40x40 images: smooth colour blobs at different places, in 2 class folders."""
    root = tmp_path_factory.mktemp("data") / "toy"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40]
    for c, wnid in enumerate(WNIDS):
        (root / wnid).mkdir(parents=True)
        for i in range(12):
            cy, cx = rng.integers(5, 35, 2)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(3, 9) ** 2))
            arr = rng.uniform(0, 60, (40, 40, 3)) + blob[..., None] * rng.uniform(60, 195, 3)
            Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(root / wnid / f"img{c}{i:02d}.png")
    return root


def make_job(data: Path, **over):
    kw = {**SETTINGS, **over}
    return plan_job(SPEC, "blocks.*.mlp.hook_post", kw.pop("features", "0-3"), DataSpec(str(data)), **kw)


@pytest.fixture(scope="module")
def reference(toy_data, tmp_path_factory):
    """The uninterrupted local run: (job, out folder, report, digest)."""
    job = make_job(toy_data)
    out = tmp_path_factory.mktemp("ref") / "atlas"
    report = atlas_run.run_atlas(job, out, executor="local", progress=False)
    return job, out, report, store_digest(out)


def test_plan_is_fixed_by_the_job_not_the_workers(toy_data):
    job = make_job(toy_data)
    assert job.hooks == ("blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post")
    assert job.features == ((0, 1, 2, 3), (0, 1, 2, 3)) and job.n_images == 24
    tasks = plan_phase1(job)
    assert [t.kind for t in tasks].count("vis") == 4  # 2 hooks x 2 chunks of 2
    assert [t.shard for t in tasks if t.kind == "exemplars"] == [(0, 10), (10, 20), (20, 24)]
    assert len({t.key for t in tasks}) == len(tasks)
    assert [t.key for t in plan_phase1(make_job(toy_data))] == [t.key for t in tasks]  # deterministic
    # recipe and seed are part of the address of visualizations, not of exemplars
    other = plan_phase1(make_job(toy_data, seed=1))
    assert {t.key for t in other if t.kind == "vis"}.isdisjoint(t.key for t in tasks if t.kind == "vis")
    assert [t.key for t in other if t.kind == "exemplars"] == [t.key for t in tasks if t.kind == "exemplars"]
    steps = plan_phase1(make_job(toy_data, steps=5))
    assert {t.key for t in steps if t.kind == "vis"}.isdisjoint(t.key for t in tasks if t.kind == "vis")


def test_reference_run_writes_store_index_and_site(reference):
    job, out, report, digest = reference
    assert report.executor_started and len(report.neurons) == 8
    assert report.tasks_total == 4 + 3 + 4 and len(report.tasks_run) == report.tasks_total
    records = list((out / "store").rglob("*.safetensors"))
    assert len(records) == 4 + 3 + 1 + 4  # vis, shards, merged, maps
    lines = [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and {(d["hook"], d["feature"]) for d in lines} == {
        (h, f) for h in job.hooks for f in range(4)
    }
    assert all(d["seed"] == 0 and d["recipe"] == "maco" and d["steps"] == 4 for d in lines)
    assert all("naturalness" in d["scores"] for d in lines)
    assert all(
        d["scores"]["vis_activation"] is not None and d["scores"]["exemplar_mean"] is not None for d in lines
    )
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.pkl"))


def test_activation_maps_agree_with_exemplar_scores(reference):
    """The maps task recomputes each exemplar's patch map with activation_maps: its mean over
    patches must be the score the exemplar search ranked it by."""
    job, out, _, _ = reference
    store = ResultStore(out, job.weights_hash)
    merged = atlas_run.merge_exemplars(job, store, [t for t in plan_phase1(job) if t.kind == "exemplars"])
    maps = atlas_run.plan_maps(job, {h: merged[h]["indices"] for h in job.hooks})
    for task in maps:
        arrays, record = store.read(task)
        for f in task.features:
            col = job.features_of(task.hook).index(f)
            np.testing.assert_allclose(
                arrays[f"f{f:05d}/map_mean"], merged[task.hook]["values"][:, col], rtol=1e-4, atol=1e-5
            )
            assert len(record["result"]["exemplars"][str(f)]) == job.k
            values = merged[task.hook]["values"][:, col]
            assert np.all(np.diff(values) <= 0)  # best first


def test_sharded_exemplars_equal_unsharded(reference):
    from vitviz_core.evaluate.exemplars import find_exemplars

    job, out, _, _ = reference
    store = ResultStore(out, job.weights_hash)
    merged = atlas_run.merge_exemplars(job, store, [t for t in plan_phase1(job) if t.kind == "exemplars"])
    loaded = SPEC.load()
    whole = find_exemplars(
        loaded,
        job.data.dataset(loaded),
        hooks=list(job.hooks),
        k=job.k,
        stats=("mean",),
        batch_size=24,
        cache=False,
        progress=False,
    )
    for hook, feats in zip(job.hooks, job.features):
        t = whole.topk[hook]["mean"]
        cols = list(feats)
        np.testing.assert_array_equal(merged[hook]["indices"], t.indices[:, cols].numpy())
        np.testing.assert_allclose(merged[hook]["values"], t.values[:, cols].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            merged[hook]["maps"].astype(np.float32), t.maps[:, cols].float().numpy(), rtol=1e-2, atol=1e-3
        )


def test_rerun_does_nothing_and_starts_no_executor(reference, monkeypatch):
    job, out, _, digest = reference
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    def no_executor(*a, **k):
        raise AssertionError("a finished job must not start an executor (nor Ray)")

    monkeypatch.setattr(atlas_run, "make_executor", no_executor)
    report = atlas_run.run_atlas(job, out, executor="ray", progress=False)
    assert not report.executor_started and report.tasks_run == []
    assert report.tasks_skipped == report.tasks_total == 11
    assert store_digest(out) == digest
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes  # nothing rewritten


def test_killed_job_resumes_without_redoing_finished_tasks(reference, toy_data, tmp_path, monkeypatch):
    job, _, _, digest = reference
    out = tmp_path / "atlas"
    written: list[str] = []
    real_write = ResultStore.write

    def dying_write(self, task, payload, run=None):
        if len(written) == 5:  # killed after 5 finished tasks, with a half-written temp file left
            (self.record_path(task).parent / f".{task.name}.safetensors.x.tmp").write_bytes(b"partial")
            raise KeyboardInterrupt
        written.append(task.key)
        return real_write(self, task, payload, run)

    monkeypatch.setattr(ResultStore, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        atlas_run.run_atlas(job, out, executor="local", progress=False)
    monkeypatch.setattr(ResultStore, "write", real_write)
    assert len(written) == 5 and not (out / "index.html").exists()

    ran: list[str] = []
    real_run = Worker.run

    def counting_run(self, task):
        ran.append(task.key)
        return real_run(self, task)

    monkeypatch.setattr(Worker, "run", counting_run)
    report = atlas_run.run_atlas(job, out, executor="local", progress=False)
    assert set(ran).isdisjoint(written), "a finished task ran twice"
    assert len(ran) == 11 - 5 and report.tasks_skipped == 5
    for tmp in out.rglob("*.tmp"):  # the interrupted write's leftover is no record
        tmp.unlink()
    assert store_digest(out) == digest


def test_new_seed_adds_entries_and_keeps_old_ones(reference, tmp_path):
    job, out, _, digest = reference
    copy = tmp_path / "atlas"
    shutil.copytree(out, copy)
    job1 = make_job(Path(job.data.name), seed=1)
    report = atlas_run.run_atlas(job1, copy, executor="local", progress=False)
    assert sorted(k for k in report.tasks_run) == sorted(t.key for t in plan_phase1(job1) if t.kind == "vis")
    after = store_digest(copy)
    old_store = {k: v for k, v in digest.items() if k.startswith("store/")}
    assert all(after[k] == v for k, v in old_store.items())  # nothing overwritten
    lines = [json.loads(x) for x in (copy / "index.jsonl").read_text().splitlines()]
    assert sorted({d["seed"] for d in lines}) == [0, 1] and len(lines) == 16


def test_site_pages_links_and_no_machine_paths(reference):
    job, out, _, _ = reference
    pages = sorted(out.rglob("*.html"))
    neuron_pages = [p for p in pages if p.parent.parent.name == "neurons"]
    assert (out / "index.html").is_file() and len(neuron_pages) == 8
    for page in pages:
        text = page.read_text()
        assert str(out) not in text and str(out.parent) not in text and "file:" not in text
        assert "http://" not in text and "https://" not in text  # no CDN, nothing remote
        for target in re.findall(r'(?:src|href)="([^"]+)"', text):
            assert not target.startswith("/"), f"{page.name}: absolute link {target}"
            assert (page.parent / target).resolve().is_file(), f"{page.name}: broken link {target}"
    page = (out / "neurons" / "blocks.1.mlp.hook_post" / "f00002.html").read_text()
    imgs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(imgs) == 1 + 2 * job.k  # visualization + k exemplars + k overlays
    assert "f00001.html" in page and "f00003.html" in page  # previous / next feature
    assert "blocks.0.mlp.hook_post/f00002.html" in page  # same feature one layer below
    for src in imgs:
        with Image.open(out / "neurons" / "blocks.1.mlp.hook_post" / src) as im:
            assert im.size[0] >= 32 and np.asarray(im).std() > 0  # a real, non-blank image


@pytest.mark.slow
def test_ray_executor_writes_the_same_store(reference, tmp_path):
    pytest.importorskip("ray")
    job, _, _, digest = reference
    out = tmp_path / "atlas"
    report = atlas_run.run_atlas(job, out, executor="ray", num_cpus=2, workers=2, progress=False)
    assert report.executor_started and report.workers == 2
    assert store_digest(out) == digest
    run_info = [read_record(p)[1]["run"] for p in (out / "store").rglob("*.safetensors")]
    assert {r.get("executor") for r in run_info} == {"ray", None}  # None: the merged record


def test_neuron_scores_known_answers():
    s = neuron_scores(3.0, np.array([2.0, 1.0, 0.0]))
    assert s == {
        "vis_activation": 3.0,
        "exemplar_mean": 1.0,
        "exemplar_top": 2.0,
        "activation_ratio": 3.0,
        "naturalness": None,
    }
    assert neuron_scores(3.0, None, 1.25)["naturalness"] == 1.25
    assert neuron_scores(3.0, None, float("nan"))["naturalness"] is None
    assert (
        neuron_scores(3.0, np.array([-1.0, -2.0]))["activation_ratio"] is None
    )  # no ratio of a negative mean
    assert neuron_scores(None, None) == {k: None for k in s}
    assert neuron_scores(float("nan"), np.array([np.inf, 1.0]))["exemplar_mean"] == 1.0


def test_atomic_write_skips_identical_bytes(tmp_path):
    path = tmp_path / "a" / "x.bin"
    assert atomic_write(path, b"abc") is True and path.read_bytes() == b"abc"
    assert atomic_write(path, b"abc") is False
    assert atomic_write(path, b"abd") is True and path.read_bytes() == b"abd"
    assert [p.name for p in path.parent.iterdir()] == ["x.bin"]


def test_random_weights_are_the_same_in_every_worker():
    a, b = SPEC.load(), SPEC.load()
    torch.testing.assert_close(a.model.state_dict(), b.model.state_dict(), rtol=0, atol=0)


# ----------------------------------------------------------------------------- bad input


def cli(toy: Path, out: Path, *extra: str) -> list[str]:
    return [
        "atlas",
        "--model",
        "vit_tiny_patch16_224",
        "--weights",
        "random",
        "--timm-kwargs",
        json.dumps(dict(TINY)),
        "--data",
        str(toy),
        "--out",
        str(out),
        "--steps",
        "2",
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize(
    "hooks, features, message",
    [
        ("blocks.0.mlp.hook_postt", "0-3", "unknown hook"),
        ("blocks.*.mlp.nothing", "0-3", "matches no hook"),
        ("blocks.*.mlp.hook_post", "120-130", "out of range"),
        ("blocks.*.mlp.hook_post", "3-1", "runs backwards"),
    ],
)
def test_bad_hooks_and_features_are_one_line_errors(toy_data, tmp_path, capsys, hooks, features, message):
    assert main(cli(toy_data, tmp_path / "o", "--hooks", hooks, "--features", features)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "o" / "store").exists()


def test_hook_errors_from_the_api(toy_data):
    with pytest.raises(HookError, match="matches no hook"):
        plan_job(SPEC, "stages.*", "0", DataSpec(str(toy_data)))
    with pytest.raises(HookError, match="out of range"):
        make_job(toy_data, features="128")


def test_unwritable_output_folder(toy_data, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        assert main(cli(toy_data, out, "--hooks", "blocks.0.mlp.hook_post", "--features", "0")) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and ("not writable" in err or "is a file" in err)


def test_unreachable_ray_address(toy_data, tmp_path, capsys):
    code = main(
        cli(
            toy_data,
            tmp_path / "o",
            "--hooks",
            "blocks.0.mlp.hook_post",
            "--features",
            "0",
            "--executor",
            "ray",
            "--address",
            "127.0.0.1:9",
        )
    )
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the Ray cluster at 127.0.0.1:9" in err
    assert (
        main(
            cli(
                toy_data,
                tmp_path / "o",
                "--hooks",
                "blocks.0.mlp.hook_post",
                "--features",
                "0",
                "--address",
                "127.0.0.1:9",
            )
        )
        == 2
    )
    assert "--address needs --executor ray" in capsys.readouterr().err
    with pytest.raises(VitvizError, match="host:port"):
        from vitviz_core.atlas.executors import check_address

        check_address("nonsense")


@pytest.mark.browser
def test_site_in_headless_chromium(reference, tmp_path):
    """Open the index, a layer grid and a neuron page in Chromium: every image decodes, the
    links lead to the neighbour pages, and no script error occurs (the site has no script)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make browser`)")
    sync_api = pytest.importorskip("playwright.sync_api")
    job, out, _, _ = reference
    pages = [
        out / "index.html",
        out / "layers" / "blocks.0.mlp.hook_post.html",
        out / "neurons" / "blocks.1.mlp.hook_post" / "f00002.html",
    ]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        errors: list[str] = []
        for path in pages:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda exc: errors.append(f"{exc}"))
            page.goto(path.as_uri(), wait_until="load")
            check = "() => Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
            try:  # grid thumbnails load lazily (after the load event); all fit in this viewport
                page.wait_for_function(f"() => ({check})().every(Boolean)", timeout=10_000)
            except sync_api.TimeoutError:
                pass
            images = page.evaluate(check)
            assert images and all(images), f"{path.name}: an image did not load"
            assert not errors
            page.screenshot(path=str(tmp_path / f"{path.stem}.png"))
            page.close()
        page = browser.new_page()
        page.goto(pages[2].as_uri())
        page.click("text=#3 →")
        assert page.url.endswith("blocks.1.mlp.hook_post/f00003.html")
        browser.close()


def test_chapter_figures_and_neuron_choice(reference):
    from vitviz_core.atlas.figures import describe_neuron, neuron_figure, overview_figure, pick_neuron

    job, out, report, _ = reference
    n = pick_neuron(report.neurons, "blocks.1.mlp.hook_post", 2)
    assert (n["hook"], n["feature"]) == ("blocks.1.mlp.hook_post", 2)
    with pytest.raises(VitvizError, match="not in this atlas"):
        pick_neuron(report.neurons, "blocks.1.mlp.hook_post", 99)
    text = describe_neuron(n)
    assert text.startswith("blocks.1.mlp.hook_post #2: exemplars ") and "ratio" in text
    assert len(neuron_figure(n, out).axes) == 2 * (job.k + 1)
    assert len([a for a in overview_figure(report.neurons, out).axes if a.images]) == 8


@pytest.mark.slow
def test_cli_job_killed_with_sigkill_resumes(reference, toy_data, tmp_path):
    """A real kill: the command is SIGKILLed as soon as its first task record exists; the
    rerun finishes the job, and the store equals the uninterrupted one."""
    import signal
    import subprocess
    import sys
    import time

    job, _, _, digest = reference
    out = tmp_path / "atlas"
    args = [
        sys.executable,
        "-m",
        "vitviz_core",
        *cli(toy_data, out, "--hooks", "blocks.*.mlp.hook_post", "--features", "0-3"),
    ]
    args[args.index("--steps") + 1] = "4"
    args += ["--n-augment", "2", "--k", "4", "--chunk", "2", "--shard-size", "10", "--batch-size", "8"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(out.glob("store/*/*/*/*.safetensors")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name for p in out.glob("store/*/**/*.safetensors") if p.parent.name != "merged"}
    assert 1 <= len(first) < 11, f"the kill did not land mid-job ({len(first)} records)"
    assert not (out / "index.html").exists()
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("store/*/**/*.safetensors")}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{len(first)} already done" in done.stdout
    for tmp in out.rglob("*.tmp"):
        tmp.unlink()
    assert store_digest(out) == digest
    assert all(
        p.stat().st_mtime_ns == mtimes[p.name]  # finished records were not redone
        for p in out.glob("store/*/**/*.safetensors")
        if p.name in mtimes
    )


def test_atlas_chapter_run_builds_the_site_and_every_glue_name(toy_data, tmp_path):
    import re

    from vitviz_core.chapters import atlas as chapter

    res = chapter.run(
        SPEC,
        "cpu",
        out=tmp_path / "site",
        hooks="blocks.*.mlp.hook_post",
        features="0-1",
        steps=2,
        n_images=10,
        data=str(toy_data),
        k=2,
        show=("blocks.1.mlp.hook_post", 1),
        device="cpu",
    )
    text = (Path(__file__).resolve().parents[1] / "book" / "atlas.md").read_text()
    used = set(re.findall(r"\{glue:text\}`(atlas_\w+)`", text)) | set(
        re.findall(r"```\{glue:figure\} (atlas_\w+)", text)
    )
    assert used and sorted(used - set(res.values) - set(res.figures)) == []
    assert res.values["atlas_neurons"] == 4 and "2 steps" in res.values["atlas_setting"]
    assert (tmp_path / "site" / "index.html").is_file()
    with pytest.raises(VitvizError, match="unknown setting"):
        chapter.run(SPEC, "cpu", out=tmp_path / "x", cpu_steps=3)
