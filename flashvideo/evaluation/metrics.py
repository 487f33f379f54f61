"""Frame and video quality metrics: PSNR, SSIM, LPIPS (AlexNet, v0.1) and FVD.

Conventions shared by every function here:

* frames are floating tensors in ``[0, 1]`` shaped ``[..., C, H, W]``; per-frame metrics return one
  value per frame, shaped ``[...]`` (the leading dimensions of the input);
* videos (for FVD) are floating tensors in ``[0, 1]`` shaped ``[N, T, C, H, W]``;
* pretrained backbones (AlexNet for LPIPS, I3D for FVD) are never downloaded: they are loaded from
  explicit local paths, and a missing file raises ``FileNotFoundError`` saying where it comes from.

Example:
    >>> import torch
    >>> from flashvideo.evaluation.metrics import psnr, ssim
    >>> a = torch.rand(2, 8, 3, 64, 64)  # 2 videos x 8 frames
    >>> b = (a + 0.05 * torch.randn_like(a)).clamp(0, 1)
    >>> psnr(a, b).shape, ssim(a, b).shape
    (torch.Size([2, 8]), torch.Size([2, 8]))
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import logging

from ..extras import import_extra
from ..validation import check_int, check_number


logger = logging.get_logger(__name__)

__all__ = [
    "PSNR_MAX_DB",
    "psnr",
    "ssim",
    "LPIPS",
    "lpips",
    "frechet_distance",
    "feature_statistics",
    "VideoFeatureExtractor",
    "I3DFeatureExtractor",
    "fvd",
]


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------


def _check_frames(name: str, x: Any, data_range: float = 1.0) -> None:
    """Raise ValueError unless ``x`` is a floating tensor ``[..., C, H, W]`` with values in range."""
    if not isinstance(x, Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor shaped [..., C, H, W], got {type(x).__name__}")
    if x.ndim < 3:
        raise ValueError(
            f"`{name}` must be shaped [..., C, H, W] (at least 3 dims),"
            f" got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"`{name}` must be a floating tensor with values in [0, {data_range}],"
            f" got {x.dtype}"
        )
    if x.numel() == 0:
        raise ValueError(f"`{name}` must not be empty, got shape {tuple(x.shape)}")
    # Written so that NaN fails too (every comparison with NaN is False).
    if not bool(((x >= 0) & (x <= data_range)).all()):
        raise ValueError(
            f"`{name}` values must lie in [0, {data_range}],"
            f" got min={x.min().item():.4g} max={x.max().item():.4g}"
        )


def _check_pair(a: Any, b: Any, data_range: float = 1.0) -> None:
    check_number("`data_range`", data_range, 0, exclusive_minimum=True)
    _check_frames("a", a, data_range)
    _check_frames("b", b, data_range)
    if a.shape != b.shape:
        raise ValueError(f"`a` and `b` must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _compute_dtype(x: Tensor) -> torch.dtype:
    # Half precision loses too much in squared differences and variances; compute those in float32.
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


# --------------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------------


# The one PSNR of the package (training logs, `flashvideo eval` and users call this function). Identical frames
# (MSE = 0) would give +inf, and one inf makes a set's mean inf; so every value is capped here, once, at 100 dB
# (an MSE of 1e-10 of the range squared, far below 8-bit quantisation's ~48 dB), and means stay finite.
PSNR_MAX_DB = 100.0


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, one value per frame, computed over C x H x W.

    ``PSNR = min(10 * log10(data_range**2 / MSE), PSNR_MAX_DB)``: identical frames (``MSE = 0``) give
    ``PSNR_MAX_DB`` = 100 dB, not ``+inf``, so that the mean over a set with exact copies stays finite.

    Args:
        a, b: floating tensors with values in ``[0, data_range]``, same shape ``[..., C, H, W]``.
        data_range: the span of valid pixel values (1.0 for images in ``[0, 1]``).

    Returns:
        Tensor shaped ``[...]`` (float32, or float64 for float64 inputs).

    Example:
        >>> x = torch.zeros(4, 3, 8, 8); y = torch.full_like(x, 0.1)
        >>> psnr(x, y)  # MSE = 0.01 -> 20 dB
        tensor([20., 20., 20., 20.])
    """
    _check_pair(a, b, data_range)
    dtype = _compute_dtype(a)
    mse = (a.to(dtype) - b.to(dtype)).square().mean(dim=(-3, -2, -1))
    # data_range**2 / 0 -> inf and log10(inf) -> inf without warnings; the clamp then turns it into the cap.
    return (10.0 * torch.log10(data_range**2 / mse)).clamp(max=PSNR_MAX_DB)


# --------------------------------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------------------------------

_SSIM_SIGMA = 1.5
# scikit-image uses truncate=3.5 for the Gaussian: radius int(3.5 * 1.5 + 0.5) = 5, i.e. an 11x11 window.
_SSIM_RADIUS = int(3.5 * _SSIM_SIGMA + 0.5)
_SSIM_WIN = 2 * _SSIM_RADIUS + 1
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def _gaussian_kernel1d(sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The normalised 1-D kernel of ``scipy.ndimage.gaussian_filter1d`` (built in float64)."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 * (x / sigma) ** 2)
    return (phi / phi.sum()).to(dtype=dtype, device=device)


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity, one value per frame: computed per channel, then averaged over channels.

    Matches ``skimage.metrics.structural_similarity(x, y, channel_axis=-1, data_range=data_range,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` on each frame: an 11x11 Gaussian
    window with sigma 1.5, ``C1 = (0.01 * data_range)**2``, ``C2 = (0.03 * data_range)**2``, population
    covariances, and the mean of the SSIM map taken after cropping 5 pixels from every border.

    Args:
        a, b: floating tensors with values in ``[0, data_range]``, same shape ``[..., C, H, W]``,
            with ``H, W >= 11``.
        data_range: the span of valid pixel values.

    Returns:
        Tensor shaped ``[...]`` (float32, or float64 for float64 inputs).

    Example:
        >>> x = torch.rand(5, 3, 32, 48)
        >>> ssim(x, x)
        tensor([1., 1., 1., 1., 1.])
    """
    _check_pair(a, b, data_range)
    *lead, c, h, w = a.shape
    if h < _SSIM_WIN or w < _SSIM_WIN:
        raise ValueError(f"`a` and `b` frames must be at least {_SSIM_WIN}x{_SSIM_WIN} for SSIM, got {h}x{w}")
    dtype = _compute_dtype(a)
    x = a.reshape(-1, 1, h, w).to(dtype)
    y = b.reshape(-1, 1, h, w).to(dtype)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)

    # skimage filters with mode='reflect' and then crops `radius` pixels from each side before the mean,
    # so every pixel it keeps has a window lying fully inside the image: a 'valid' convolution gives
    # exactly those pixels and the padding mode never matters.
    k = _gaussian_kernel1d(_SSIM_SIGMA, _SSIM_RADIUS, dtype, a.device)
    maps = F.conv2d(maps, k.view(1, 1, -1, 1).expand(5, 1, -1, 1), groups=5)
    maps = F.conv2d(maps, k.view(1, 1, 1, -1).expand(5, 1, 1, -1), groups=5)
    ux, uy, uxx, uyy, uxy = maps.unbind(dim=1)

    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))

    # skimage accumulates the mean in float64 whatever the working precision.
    per_channel = s.to(torch.float64).mean(dim=(-2, -1))
    return per_channel.view(*lead, c).mean(dim=-1).to(dtype)


# --------------------------------------------------------------------------------------------------
# LPIPS (AlexNet, v0.1 linear heads)
# --------------------------------------------------------------------------------------------------

_ALEXNET_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"
_LPIPS_HEADS_FILE = "weights/v0.1/alex.pth"
_ALEXNET_CHANNELS = (64, 192, 384, 256, 256)
# The smallest side for which AlexNet's conv1/pool1/pool2 leave at least one pixel for conv3..conv5.
LPIPS_MIN_SIZE = 31


class AlexNetFeatures(nn.Module):
    """AlexNet's convolutional trunk returning the five ReLU outputs that LPIPS compares.

    ``self.features`` uses torchvision's layer indices, so a torchvision AlexNet state dict
    (``features.0.weight`` ... ``features.10.bias``) loads into this module unchanged.

    Example:
        >>> net = AlexNetFeatures()
        >>> [f.shape[1] for f in net(torch.zeros(1, 3, 64, 64))]
        [64, 192, 384, 256, 256]
    """

    # The layers ending each stage: relu1..relu5 in the lpips package's slicing of `features`.
    _STAGE_ENDS = (2, 5, 8, 10, 12)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            # torchvision's final max-pool (index 12) carries no weights and LPIPS never uses it.
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return ``[relu1, relu2, relu3, relu4, relu5]`` for a ``[B, 3, H, W]`` input."""
        outputs = []
        start = 0
        for end in self._STAGE_ENDS:
            for layer in self.features[start:end]:
                x = layer(x)
            outputs.append(x)
            start = end
        return outputs


class _LinearHead(nn.Module):
    """A 1x1 conv to one channel; index 0 held a Dropout in lpips, kept as Identity so keys line up."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def _load_state_dict_file(path: str | os.PathLike, what: str, origin: str) -> dict[str, Tensor]:
    """Load tensors from ``.safetensors`` or ``.pt/.pth`` (``weights_only``); never downloads."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{what} not found at '{path}'. This file is {origin}. Nothing is downloaded: obtain it "
            f"yourself and pass its local path."
        )
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{what} at '{path}' must hold a state dict (name -> tensor),"
            f" got {type(state).__name__}"
        )
    return dict(state)


def _take_keys(state: Mapping[str, Tensor], module: nn.Module, prefix: str, param: str) -> dict[str, Tensor]:
    """Select ``module``'s keys from ``state`` (dropping ``prefix``), checking presence and shapes."""
    expected = module.state_dict()
    picked: dict[str, Tensor] = {}
    for key, ref in expected.items():
        src_key = prefix + key
        if src_key not in state:
            raise ValueError(
                f"`{param}` is missing '{src_key}' (expected keys like "
                f"'{prefix}{next(iter(expected))}')"
            )
        tensor = state[src_key]
        if tuple(tensor.shape) != tuple(ref.shape):
            raise ValueError(
                f"`{param}`: '{src_key}' has shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}"
            )
        picked[key] = tensor
    return picked


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity, AlexNet variant with the "v0.1" linear heads.

    Reproduces ``lpips.LPIPS(net="alex", version="0.1")``: inputs are mapped to ``[-1, 1]``, passed
    through the ImageNet scaling layer, AlexNet's five ReLU outputs are unit-normalised along
    channels, squared differences are weighted by 1x1 linear heads, averaged spatially and summed
    over the five layers.

    Unlike the lpips package, ``forward`` takes images in ``[0, 1]`` (the library-wide convention).
    A freshly constructed instance is randomly initialised; load real weights with
    :meth:`from_local_weights`. ``forward`` is differentiable, so the module can serve as a loss;
    :func:`lpips` is the no-grad evaluation entry point.

    Example:
        >>> model = LPIPS.from_local_weights("alexnet-owt-7be5be79.pth", "alex.pth")  # doctest: +SKIP
        >>> x = torch.rand(4, 3, 64, 64)
        >>> model(x, x)  # doctest: +SKIP
        tensor([0., 0., 0., 0.])
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = AlexNetFeatures()
        self.lin0, self.lin1, self.lin2, self.lin3, self.lin4 = (_LinearHead(c) for c in _ALEXNET_CHANNELS)

    @property
    def heads(self) -> list[_LinearHead]:
        return [self.lin0, self.lin1, self.lin2, self.lin3, self.lin4]

    @classmethod
    def from_local_weights(
        cls, backbone_path: str | os.PathLike, heads_path: str | os.PathLike
    ) -> "LPIPS":
        """Build an LPIPS metric from local files, in eval mode with gradients off for its weights.

        Args:
            backbone_path: torchvision's AlexNet ImageNet weights (``alexnet-owt-7be5be79.pth``, keys
                ``features.0.weight`` ...; classifier keys are ignored), as ``.pth``/``.pt`` or
                ``.safetensors``.
            heads_path: the lpips package's ``weights/v0.1/alex.pth`` (keys ``lin0.model.1.weight`` ...
                ``lin4.model.1.weight``), as ``.pth``/``.pt`` or ``.safetensors``.

        Raises:
            FileNotFoundError: a file is missing (nothing is downloaded).
            ValueError: a file lacks a required key or holds a tensor of the wrong shape.

        Example:
            >>> model = LPIPS.from_local_weights("/models/alexnet-owt-7be5be79.pth",
            ...                                  "/models/alex.pth")  # doctest: +SKIP
        """
        model = cls()
        backbone = _load_state_dict_file(
            backbone_path,
            "AlexNet backbone weights",
            f"torchvision's AlexNet ImageNet weights ('{_ALEXNET_BACKBONE_FILE}', "
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)",
        )
        heads = _load_state_dict_file(
            heads_path,
            "LPIPS linear-head weights",
            f"the lpips package's '{_LPIPS_HEADS_FILE}' (pip package `lpips`, or "
            "github.com/richzhang/PerceptualSimilarity, lpips/weights/v0.1/alex.pth)",
        )
        model.net.load_state_dict(_take_keys(backbone, model.net, "", "backbone_path"))
        for i, head in enumerate(model.heads):
            head.load_state_dict(_take_keys(heads, head, f"lin{i}.", "heads_path"))
        model.eval().requires_grad_(False)
        logger.info(
            "Loaded LPIPS (alex, v0.1) from %s and %s", os.fspath(backbone_path), os.fspath(heads_path)
        )
        return model

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS distance between ``[B, 3, H, W]`` images in ``[0, 1]``; returns shape ``[B]``."""
        feats_a = self.net((2 * a - 1 - self.shift) / self.scale)
        feats_b = self.net((2 * b - 1 - self.shift) / self.scale)
        total = a.new_zeros(a.shape[0])
        for fa, fb, head in zip(feats_a, feats_b, self.heads):
            diff = (_unit_normalize(fa) - _unit_normalize(fb)).square()
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total


def _unit_normalize(x: Tensor, eps: float = 1e-10) -> Tensor:
    # Same eps placement as lpips.normalize_tensor, so zero feature vectors stay zero instead of NaN.
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


def lpips(a: Tensor, b: Tensor, model: LPIPS, batch_size: int = 64) -> Tensor:
    """LPIPS distance per frame between frames in ``[0, 1]`` (lower is more similar).

    Args:
        a, b: floating tensors in ``[0, 1]``, same shape ``[..., 3, H, W]`` with ``H, W >= 31``.
        model: an :class:`LPIPS` module, e.g. from :meth:`LPIPS.from_local_weights`.
        batch_size: frames per forward pass (bounds memory).

    Returns:
        float32 tensor shaped ``[...]``, on the device of ``a``.

    Example:
        >>> model = LPIPS.from_local_weights("alexnet-owt-7be5be79.pth", "alex.pth")  # doctest: +SKIP
        >>> lpips(torch.rand(2, 8, 3, 64, 64), torch.rand(2, 8, 3, 64, 64), model).shape  # doctest: +SKIP
        torch.Size([2, 8])
    """
    _check_pair(a, b)
    if not isinstance(model, LPIPS):
        raise ValueError(f"`model` must be an LPIPS module, got {type(model).__name__}")
    check_int("`batch_size`", batch_size, 1)
    *lead, c, h, w = a.shape
    if c != 3:
        raise ValueError(f"`a` and `b` must have 3 (RGB) channels for LPIPS, got shape {tuple(a.shape)}")
    if h < LPIPS_MIN_SIZE or w < LPIPS_MIN_SIZE:
        raise ValueError(
            f"`a` and `b` frames must be at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} for "
            f"LPIPS, got {h}x{w}"
        )
    param = next(model.parameters())
    flat_a = a.reshape(-1, c, h, w)
    flat_b = b.reshape(-1, c, h, w)
    out = []
    with torch.no_grad():
        for i in range(0, flat_a.shape[0], batch_size):
            xa = flat_a[i : i + batch_size].to(device=param.device, dtype=param.dtype)
            xb = flat_b[i : i + batch_size].to(device=param.device, dtype=param.dtype)
            out.append(model(xa, xb).float())
    return torch.cat(out).to(a.device).view(lead)


# --------------------------------------------------------------------------------------------------
# FVD
# --------------------------------------------------------------------------------------------------

_I3D_FILE = "i3d_torchscript.pt"
DEFAULT_I3D_CALL_KWARGS: Mapping[str, Any] = {"rescale": False, "resize": True, "return_features": True}


def _as_float64(name: str, x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().to(torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` must be a numeric array or tensor, got {type(x).__name__}") from err


def frechet_distance(
    mu1: np.ndarray | Tensor,
    sigma1: np.ndarray | Tensor,
    mu2: np.ndarray | Tensor,
    sigma2: np.ndarray | Tensor,
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``, in float64.

    ``d = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2))``, as in pytorch-fid and
    StyleGAN-V's FVD. As in pytorch-fid, when ``sigma1 @ sigma2`` is (near-)singular and ``sqrtm`` returns
    non-finite values, ``eps`` is added to both diagonals and the root recomputed; tiny imaginary parts
    from round-off are discarded, and large ones (diagonal above 1e-3) raise ``ValueError``.

    Args:
        mu1, mu2: mean vectors ``[D]``.
        sigma1, sigma2: covariance matrices ``[D, D]``.
        eps: diagonal offset used only when the first square root is not finite.

    Example:
        >>> import numpy as np
        >>> frechet_distance(np.zeros(3), np.eye(3), np.ones(3), np.eye(3))
        3.0
    """
    mu1, mu2 = _as_float64("mu1", mu1), _as_float64("mu2", mu2)
    sigma1, sigma2 = _as_float64("sigma1", sigma1), _as_float64("sigma2", sigma2)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(
            f"`mu1` and `mu2` must be vectors of the same length [D],"
            f" got {mu1.shape} and {mu2.shape}"
        )
    d = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (d, d):
            raise ValueError(f"`{name}` must be a [D, D] = [{d}, {d}] covariance matrix, got {sigma.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"`{name}` must be finite (no NaN/inf)")
    check_number("`eps`", eps, 0, exclusive_minimum=True)

    linalg = import_extra("scipy.linalg", "The Fréchet distance (FVD)")  # the eval extra; psnr/ssim need none
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # A (near-)singular product can make the Schur square root blow up; pytorch-fid
        # retries with a small ridge on both covariances, which moves the distance by O(eps * D).
        logger.warning("sqrtm(sigma1 @ sigma2) is not finite; adding %g to the covariance diagonals", eps)
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        max_imag = np.max(np.abs(np.diagonal(covmean).imag))
        if max_imag > 1e-3:
            raise ValueError(f"sqrtm(sigma1 @ sigma2) has a large imaginary component ({max_imag:.3g}); "
                             "`sigma1`/`sigma2` are probably not valid covariance matrices")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def feature_statistics(features: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and sample covariance ``[D, D]`` (float64) of features ``[N, D]``, ``N >= 2``.

    Example:
        >>> mu, sigma = feature_statistics(torch.randn(100, 8))
        >>> mu.shape, sigma.shape
        ((8,), (8, 8))
    """
    feats = _as_float64("features", features)
    if feats.ndim != 2 or feats.shape[0] < 2 or feats.shape[1] < 1:
        raise ValueError(f"`features` must be shaped [N, D] with N >= 2 and D >= 1, got {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError("`features` must be finite (no NaN/inf)")
    return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


@runtime_checkable
class VideoFeatureExtractor(Protocol):
    """Anything mapping videos ``[N, T, C, H, W]`` in ``[0, 1]`` to features ``[N, D]``.

    A plain function works too; :class:`I3DFeatureExtractor` is the standard choice for FVD.

    Example:
        >>> def mean_colour(videos): return videos.mean(dim=(1, 3, 4))  # [N, C]
        >>> isinstance(mean_colour, VideoFeatureExtractor)
        True
    """

    def __call__(self, videos: Tensor) -> Tensor: ...


class I3DFeatureExtractor:
    """Video features from a TorchScript I3D, the FVD backbone distributed with StyleGAN-V.

    The expected model is StyleGAN-V's ``i3d_torchscript.pt`` (a port of the Kinetics-400 I3D used by
    the original TensorFlow FVD). It is called as ``model(videos, **call_kwargs)`` with ``videos`` float
    in ``[-1, 1]`` shaped ``[N, C, T, H, W]`` and, by default,
    ``call_kwargs = {"rescale": False, "resize": True, "return_features": True}``: inputs are already in
    ``[-1, 1]`` (StyleGAN-V's own script instead feeds ``[0, 255]`` frames with ``rescale=True`` and lets
    the model rescale them), the model resizes frames to 224x224 itself, and it returns the
    400-d pre-softmax features. This wrapper takes the library's videos, ``[N, T, C, H, W]`` in
    ``[0, 1]``, and converts them to that convention; other checkpoints with other keywords work by
    passing ``call_kwargs``.

    Example:
        >>> extractor = I3DFeatureExtractor.from_torchscript("/models/i3d_torchscript.pt")  # doctest: +SKIP
        >>> extractor(torch.rand(4, 16, 3, 64, 64)).shape  # doctest: +SKIP
        torch.Size([4, 400])
    """

    def __init__(
        self,
        model: nn.Module,
        call_kwargs: Mapping[str, Any] | None = None,
        batch_size: int = 16,
    ) -> None:
        if not callable(model):
            raise ValueError(f"`model` must be a callable module, got {type(model).__name__}")
        check_int("`batch_size`", batch_size, 1)
        self.model = model.eval() if isinstance(model, nn.Module) else model
        self.call_kwargs = dict(DEFAULT_I3D_CALL_KWARGS if call_kwargs is None else call_kwargs)
        self.batch_size = batch_size

    @classmethod
    def from_torchscript(
        cls,
        path: str | os.PathLike,
        call_kwargs: Mapping[str, Any] | None = None,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
    ) -> "I3DFeatureExtractor":
        """Load a TorchScript I3D from a local file with ``torch.jit.load`` (nothing is downloaded).

        Args:
            path: local path of ``i3d_torchscript.pt`` (or any TorchScript video feature network).
            call_kwargs: keyword arguments for each call; defaults to ``DEFAULT_I3D_CALL_KWARGS``.
            batch_size: videos per forward pass.
            device: where the model runs; inputs are moved there.

        Raises:
            FileNotFoundError: ``path`` does not exist.

        Example:
            >>> I3DFeatureExtractor.from_torchscript("i3d_torchscript.pt", batch_size=8)  # doctest: +SKIP
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"I3D TorchScript model not found at '{path}'. This file is the '{_I3D_FILE}' distributed "
                "with StyleGAN-V (https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt). "
                "Nothing is downloaded: obtain it yourself and pass its local path."
            )
        model = torch.jit.load(path, map_location=device)
        logger.info("Loaded TorchScript I3D from %s", path)
        return cls(model, call_kwargs=call_kwargs, batch_size=batch_size)

    def _device(self) -> torch.device:
        if isinstance(self.model, nn.Module):
            for tensor in self.model.parameters():
                return tensor.device
        return torch.device("cpu")

    def __call__(self, videos: Tensor) -> Tensor:
        """Features ``[N, D]`` (float32, CPU) for videos ``[N, T, C, H, W]`` in ``[0, 1]``."""
        if not isinstance(videos, Tensor) or videos.ndim != 5:
            shape = tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__
            raise ValueError(f"`videos` must be a tensor shaped [N, T, C, H, W], got {shape}")
        _check_frames("videos", videos)
        device = self._device()
        out = []
        with torch.no_grad():
            for i in range(0, videos.shape[0], self.batch_size):
                chunk = videos[i : i + self.batch_size].to(device=device, dtype=torch.float32)
                chunk = chunk.permute(0, 2, 1, 3, 4) * 2 - 1
                out.append(self.model(chunk, **self.call_kwargs).float().cpu())
        return torch.cat(out)


def fvd(real_videos: Tensor, fake_videos: Tensor, extractor: VideoFeatureExtractor) -> float:
    """Fréchet Video Distance between two sets of videos (lower is better).

    Features of both sets are computed by ``extractor``, summarised by mean and covariance, and
    compared with :func:`frechet_distance`. FVD is biased by the number of videos; compare scores
    computed with the same set sizes (the literature commonly uses 2048 or more videos per set).

    Args:
        real_videos, fake_videos: video batches in whatever layout ``extractor`` takes; for
            :class:`I3DFeatureExtractor`, ``[N, T, C, H, W]`` in ``[0, 1]``. Each needs ``N >= 2``.
        extractor: callable mapping a video batch to features ``[N, D]``.

    Example:
        >>> extractor = I3DFeatureExtractor.from_torchscript("i3d_torchscript.pt")  # doctest: +SKIP
        >>> fvd(real, fake, extractor)  # doctest: +SKIP
        123.4
    """
    if not callable(extractor):
        raise ValueError(
            f"`extractor` must be callable (videos -> features [N, D]),"
            f" got {type(extractor).__name__}"
        )
    stats = []
    for name, videos in (("real_videos", real_videos), ("fake_videos", fake_videos)):
        n = len(videos)
        if n < 2:
            raise ValueError(f"`{name}` must hold at least 2 videos to estimate a covariance, got {n}")
        feats = extractor(videos)
        if not (hasattr(feats, "shape") and len(feats.shape) == 2 and feats.shape[0] == n):
            got = tuple(feats.shape) if hasattr(feats, "shape") else type(feats).__name__
            raise ValueError(
                f"`extractor` must return features shaped [N, D] = [{n}, D] for `{name}`,"
                f" got {got}"
            )
        stats.append(feature_statistics(feats))
    (mu1, sigma1), (mu2, sigma2) = stats
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"`extractor` returned {mu1.shape[0]}-d and {mu2.shape[0]}-d features for the two sets"
        )
    return frechet_distance(mu1, sigma1, mu2, sigma2)
