"""Tests for flashvideo.evaluation.metrics: PSNR, SSIM (vs scikit-image), LPIPS and FVD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from skimage.metrics import structural_similarity
from torch import nn

from flashvideo.evaluation.metrics import (
    LPIPS,
    I3DFeatureExtractor,
    VideoFeatureExtractor,
    feature_statistics,
    frechet_distance,
    fvd,
    lpips,
    PSNR_MAX_DB,
    psnr,
    ssim,
)

# torch >= 2.10 marks TorchScript deprecated; the I3D checkpoint the field uses is TorchScript.
pytestmark = pytest.mark.filterwarnings("ignore:`torch\\.jit:DeprecationWarning")


# ------------------------------------------------------------------------------------------------
# PSNR
# ------------------------------------------------------------------------------------------------


def test_psnr_known_value_and_shape():
    a = torch.zeros(2, 4, 3, 8, 8)
    b = torch.full_like(a, 0.1)
    out = psnr(a, b)
    assert out.shape == (2, 4)
    torch.testing.assert_close(out, torch.full((2, 4), 20.0))


def test_psnr_per_frame_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 3, 16, 12, generator=g, dtype=torch.float64)
    b = torch.rand(5, 3, 16, 12, generator=g, dtype=torch.float64)
    for i in range(5):
        mse = float(((a[i] - b[i]) ** 2).mean())
        assert psnr(a, b)[i].item() == pytest.approx(10 * math.log10(1.0 / mse), rel=1e-12)
    scaled = psnr(a * 255, b * 255, data_range=255)
    torch.testing.assert_close(scaled, psnr(a, b))


def test_psnr_identical_frames_give_the_cap_only_where_identical():
    # One behaviour everywhere (training logs, eval, users): capped at PSNR_MAX_DB, never +inf.
    a = torch.rand(3, 3, 8, 8)
    b = a.clone()
    b[1] = (b[1] + 0.05).clamp(0, 1)
    out = psnr(a, b)
    assert out[0].item() == out[2].item() == PSNR_MAX_DB == 100.0
    assert math.isfinite(out[1].item()) and out[1] < PSNR_MAX_DB
    assert math.isfinite(psnr(a, a).mean().item())


@pytest.mark.parametrize(
    "a, b, data_range, match",
    [
        (torch.rand(3, 8, 8), torch.rand(3, 8, 9), 1.0, "same shape"),
        (torch.rand(8, 8), torch.rand(8, 8), 1.0, r"\[\.\.\., C, H, W\]"),
        (torch.rand(3, 8, 8) * 2, torch.rand(3, 8, 8), 1.0, r"\[0, 1"),
        (torch.full((3, 8, 8), float("nan")), torch.rand(3, 8, 8), 1.0, r"\[0, 1"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 8, dtype=torch.uint8), 1.0, "floating"),
        (torch.rand(3, 8, 8), torch.rand(3, 8, 8), 0.0, "data_range"),
    ],
)
def test_psnr_rejects_bad_input(a, b, data_range, match):
    with pytest.raises(ValueError, match=match):
        psnr(a, b, data_range=data_range)


# ------------------------------------------------------------------------------------------------
# SSIM against scikit-image
# ------------------------------------------------------------------------------------------------


def _structured_pairs(h: int, w: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x, y) frame pairs shaped [H, W, 3] in [0, 1]: random, gradients, shifted shapes, noisy copies."""
    yy, xx = np.mgrid[0:h, 0:w]
    pairs = []
    pairs.append((rng.random((h, w, 3)), rng.random((h, w, 3))))
    grad = np.stack([xx / (w - 1), yy / (h - 1), (xx + yy) / (h + w - 2)], axis=-1)
    pairs.append((grad, grad[:, ::-1] * 0.8 + 0.1))

    def shapes(dx: int, dy: int) -> np.ndarray:
        img = np.full((h, w, 3), 0.2)
        img[h // 4 + dy : h // 2 + dy, w // 4 + dx : w // 2 + dx] = (0.9, 0.1, 0.5)
        circle = (yy - h * 0.65 - dy) ** 2 + (xx - w * 0.7 - dx) ** 2 < (min(h, w) * 0.15) ** 2
        img[circle] = (0.1, 0.8, 0.3)
        return img

    pairs.append((shapes(0, 0), shapes(3, 2)))
    base = shapes(1, 0) * 0.5 + grad * 0.5
    pairs.append((base, np.clip(base + 0.1 * rng.standard_normal(base.shape), 0, 1)))
    pairs.append((base, base))
    return pairs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("size", [(64, 64), (32, 48), (11, 23)])
def test_ssim_matches_skimage(dtype, size):
    h, w = size
    pairs = _structured_pairs(h, w, np.random.default_rng(h * 1000 + w))
    xs = np.stack([p[0] for p in pairs]).astype(dtype)
    ys = np.stack([p[1] for p in pairs]).astype(dtype)
    ours = ssim(torch.from_numpy(xs).permute(0, 3, 1, 2), torch.from_numpy(ys).permute(0, 3, 1, 2))
    assert ours.shape == (len(pairs),)
    assert ours.dtype == torch.from_numpy(xs).dtype
    for i, (x, y) in enumerate(zip(xs, ys)):
        ref = structural_similarity(
            x, y, channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert abs(ours[i].item() - ref) <= 1e-5, (i, ours[i].item(), ref)
    assert ours[-1].item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_data_range_and_leading_dims():
    rng = np.random.default_rng(7)
    x = rng.random((2, 3, 3, 24, 20))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    ours = ssim(torch.from_numpy(x * 255), torch.from_numpy(y * 255), data_range=255)
    assert ours.shape == (2, 3)
    for i in range(2):
        for t in range(3):
            ref = structural_similarity(
                np.moveaxis(x[i, t] * 255, 0, -1),
                np.moveaxis(y[i, t] * 255, 0, -1),
                channel_axis=-1,
                data_range=255,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            assert ours[i, t].item() == pytest.approx(ref, abs=1e-10)


def test_ssim_rejects_frames_smaller_than_window():
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.rand(3, 10, 32), torch.rand(3, 10, 32))


# ------------------------------------------------------------------------------------------------
# LPIPS
# ------------------------------------------------------------------------------------------------

_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
_HEAD_CHANNELS = (64, 192, 384, 256, 256)


def _random_weights(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A torchvision-format AlexNet state dict (with classifier keys) and lpips-format heads."""
    g = torch.Generator().manual_seed(seed)
    backbone = {}
    for idx, (out_c, in_c, k) in _CONVS.items():
        std = math.sqrt(2.0 / (in_c * k * k))
        backbone[f"features.{idx}.weight"] = torch.randn(out_c, in_c, k, k, generator=g) * std
        backbone[f"features.{idx}.bias"] = torch.randn(out_c, generator=g) * 0.01
    # Classifier keys exist in torchvision's file and must be ignored.
    backbone["classifier.6.weight"] = torch.randn(10, 16, generator=g)
    backbone["classifier.6.bias"] = torch.randn(10, generator=g)
    heads = {}
    for i, c in enumerate(_HEAD_CHANNELS):
        # The trained lpips heads are non-negative (clamped during training); keep that property.
        heads[f"lin{i}.model.1.weight"] = torch.rand(1, c, 1, 1, generator=g) * 0.1
    return backbone, heads


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    backbone, heads = _random_weights()
    d = tmp_path_factory.mktemp("lpips")
    torch.save(backbone, d / "alexnet-owt-7be5be79.pth")
    torch.save(heads, d / "alex.pth")
    save_file(backbone, str(d / "alexnet.safetensors"))
    save_file(heads, str(d / "alex.safetensors"))
    return d, backbone, heads


@pytest.fixture(scope="module")
def lpips_model(lpips_files):
    d, _, _ = lpips_files
    return LPIPS.from_local_weights(d / "alexnet-owt-7be5be79.pth", d / "alex.pth")


def _direct_lpips(a: torch.Tensor, b: torch.Tensor, backbone, heads) -> torch.Tensor:
    """LPIPS written out step by step from the raw weight dicts (float64)."""
    w = {k: v.double() for k, v in backbone.items()}
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def feats(x):
        x = ((x.double() * 2 - 1) - shift) / scale
        f1 = F.relu(F.conv2d(x, w["features.0.weight"], w["features.0.bias"], stride=4, padding=2))
        f2 = F.relu(F.conv2d(F.max_pool2d(f1, 3, 2), w["features.3.weight"], w["features.3.bias"], padding=2))
        f3 = F.relu(F.conv2d(F.max_pool2d(f2, 3, 2), w["features.6.weight"], w["features.6.bias"], padding=1))
        f4 = F.relu(F.conv2d(f3, w["features.8.weight"], w["features.8.bias"], padding=1))
        f5 = F.relu(F.conv2d(f4, w["features.10.weight"], w["features.10.bias"], padding=1))
        return [f1, f2, f3, f4, f5]

    total = torch.zeros(a.shape[0], dtype=torch.float64)
    for i, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        na = fa / (torch.sqrt((fa**2).sum(dim=1, keepdim=True)) + 1e-10)
        nb = fb / (torch.sqrt((fb**2).sum(dim=1, keepdim=True)) + 1e-10)
        weighted = ((na - nb) ** 2 * heads[f"lin{i}.model.1.weight"].double().view(1, -1, 1, 1)).sum(dim=1)
        total += weighted.mean(dim=(1, 2))
    return total


def test_lpips_loads_both_formats(lpips_files, lpips_model):
    d, backbone, heads = lpips_files
    from_st = LPIPS.from_local_weights(d / "alexnet.safetensors", d / "alex.safetensors")
    for model in (lpips_model, from_st):
        assert not model.training
        sd = model.state_dict()
        for idx in _CONVS:
            torch.testing.assert_close(sd[f"net.features.{idx}.weight"], backbone[f"features.{idx}.weight"])
            torch.testing.assert_close(sd[f"net.features.{idx}.bias"], backbone[f"features.{idx}.bias"])
        for key, value in heads.items():
            torch.testing.assert_close(sd[key], value)


def test_lpips_properties_and_direct_computation(lpips_model, lpips_files):
    _, backbone, heads = lpips_files
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 3, 64, 48, generator=g)
    b = torch.rand(2, 3, 3, 64, 48, generator=g)
    d_ab = lpips(a, b, lpips_model, batch_size=4)
    assert d_ab.shape == (2, 3)
    assert (d_ab > 0).all()
    torch.testing.assert_close(d_ab, lpips(b, a, lpips_model), rtol=1e-5, atol=1e-7)
    assert lpips(a, a, lpips_model).abs().max().item() < 1e-6
    expected = _direct_lpips(a.reshape(-1, 3, 64, 48), b.reshape(-1, 3, 64, 48), backbone, heads)
    torch.testing.assert_close(d_ab.reshape(-1).double(), expected, rtol=1e-4, atol=1e-7)
    # A small perturbation is closer than an unrelated image.
    near = (a + 0.02 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert (lpips(a, near, lpips_model) < d_ab).all()


def test_lpips_missing_files(lpips_files, tmp_path):
    d, _, _ = lpips_files
    missing_backbone = r"(?s)nope\.pth.*alexnet-owt-7be5be79\.pth.*Nothing is downloaded"
    with pytest.raises(FileNotFoundError, match=missing_backbone):
        LPIPS.from_local_weights(tmp_path / "nope.pth", d / "alex.pth")
    missing_heads = r"(?s)missing\.pth.*weights/v0\.1/alex\.pth.*Nothing is downloaded"
    with pytest.raises(FileNotFoundError, match=missing_heads):
        LPIPS.from_local_weights(d / "alexnet-owt-7be5be79.pth", tmp_path / "missing.pth")


def test_lpips_rejects_bad_weights_and_inputs(lpips_files, lpips_model, tmp_path):
    d, backbone, heads = lpips_files
    broken = dict(heads)
    del broken["lin3.model.1.weight"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="lin3.model.1.weight"):
        LPIPS.from_local_weights(d / "alexnet-owt-7be5be79.pth", tmp_path / "broken.pth")
    wrong = dict(backbone)
    wrong["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match=r"features\.3\.weight.*shape"):
        LPIPS.from_local_weights(tmp_path / "wrong.safetensors", d / "alex.pth")
    with pytest.raises(ValueError, match="31x31"):
        lpips(torch.rand(1, 3, 30, 64), torch.rand(1, 3, 30, 64), lpips_model)
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        lpips(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64), lpips_model)


# ------------------------------------------------------------------------------------------------
# Fréchet distance / FVD
# ------------------------------------------------------------------------------------------------


def _random_gaussian(rng: np.random.Generator, d: int) -> tuple[np.ndarray, np.ndarray]:
    a = rng.standard_normal((d, d))
    return rng.standard_normal(d), a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_direct_scipy():
    rng = np.random.default_rng(0)
    for d in (1, 5, 32):
        mu1, s1 = _random_gaussian(rng, d)
        mu2, s2 = _random_gaussian(rng, d)
        # Symmetric form: tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2).
        r1 = np.real(scipy.linalg.sqrtm(s1))
        cross = np.trace(np.real(scipy.linalg.sqrtm(r1 @ s2 @ r1)))
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), mu2, s2) == pytest.approx(
            expected, rel=1e-9, abs=1e-9
        )
        assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_diagonal_closed_form():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 0.0])
    expected = 5.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_singular_and_invalid_covariances():
    rng = np.random.default_rng(1)
    low_rank = rng.standard_normal((8, 2))
    sigma = low_rank @ low_rank.T  # rank 2 in 8 dims
    mu = rng.standard_normal(8)
    value = frechet_distance(mu, sigma, mu, sigma)
    assert math.isfinite(value) and abs(value) < 1e-4
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="mu1"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(3))


def test_frechet_distance_retries_with_eps_when_sqrtm_is_not_finite(monkeypatch):
    rng = np.random.default_rng(3)
    mu1, s1 = _random_gaussian(rng, 4)
    mu2, s2 = _random_gaussian(rng, 4)
    exact = frechet_distance(mu1, s1, mu2, s2)
    real_sqrtm = scipy.linalg.sqrtm
    calls = []

    def flaky_sqrtm(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.nan) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)  # imported on use by frechet_distance
    eps = 1e-3
    retried = frechet_distance(mu1, s1, mu2, s2, eps=eps)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s1 + eps * np.eye(4)) @ (s2 + eps * np.eye(4)))
    assert math.isfinite(retried) and retried == pytest.approx(exact, abs=4 * 4 * eps)


def test_feature_statistics_and_sampling_consistency():
    rng = np.random.default_rng(2)
    feats = rng.standard_normal((50, 4))
    mu, sigma = feature_statistics(torch.from_numpy(feats).float())
    np.testing.assert_allclose(mu, feats.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-5, atol=1e-6)
    # Two large samples of one distribution are close; a shifted one is far.
    mu_t, sig_t = _random_gaussian(rng, 4)
    x = rng.multivariate_normal(mu_t, sig_t, size=20000)
    y = rng.multivariate_normal(mu_t, sig_t, size=20000)
    same = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    shifted = frechet_distance(*feature_statistics(x), *feature_statistics(y + 1.0))
    assert 0 <= same < 0.01
    assert shifted == pytest.approx(4.0 + same, abs=0.05)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        feature_statistics(np.zeros((1, 4)))


class _TinyI3D(nn.Module):
    """A stand-in with the i3d_torchscript.pt calling convention."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=3, padding=1)
        self.head = nn.Linear(8, 6)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = True, return_features: bool = True
    ) -> torch.Tensor:
        if rescale:
            x = x * 2 - 1
        if resize:
            x = F.interpolate(x, size=[x.shape[2], 16, 16], mode="trilinear", align_corners=False)
        feats = self.head(torch.tanh(self.conv(x)).mean(dim=[2, 3, 4]))
        if return_features:
            return feats
        return torch.softmax(feats, dim=1)


@pytest.fixture(scope="module")
def i3d_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_TinyI3D()), str(path))
    return path


def _videos(n: int, seed: int, brightness: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 4, 3, 20, 24, generator=g) * 0.7 + brightness).clamp(0, 1)


def test_fvd_with_torchscript_standin(i3d_path):
    extractor = I3DFeatureExtractor.from_torchscript(i3d_path, batch_size=5)
    assert isinstance(extractor, VideoFeatureExtractor)
    real, fake = _videos(24, 0), _videos(24, 1, brightness=0.3)
    feats = extractor(real)
    assert feats.shape == (24, 6)
    self_distance = fvd(real, real, extractor)
    assert abs(self_distance) < 1e-6
    distance = fvd(real, fake, extractor)
    assert math.isfinite(distance) and distance > 1e-3
    expected = frechet_distance(*feature_statistics(extractor(real)), *feature_statistics(extractor(fake)))
    assert distance == pytest.approx(expected, rel=1e-9)


def test_i3d_call_convention_and_kwargs(i3d_path):
    seen = {}

    class Recorder(nn.Module):
        def forward(self, x, **kwargs):
            seen.update(shape=tuple(x.shape), lo=x.min().item(), hi=x.max().item(), kwargs=kwargs)
            return x.mean(dim=(2, 3, 4))

    videos = torch.zeros(2, 5, 3, 8, 8)
    videos[:, :, :, :4] = 1.0
    I3DFeatureExtractor(Recorder())(videos)
    assert seen == {
        "shape": (2, 3, 5, 8, 8),
        "lo": -1.0,
        "hi": 1.0,
        "kwargs": {"rescale": False, "resize": True, "return_features": True},
    }
    probabilities = I3DFeatureExtractor.from_torchscript(i3d_path, call_kwargs={"return_features": False})
    probs = probabilities(_videos(3, 2))
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_fvd_errors(tmp_path, i3d_path):
    missing_i3d = r"(?s)absent\.pt.*i3d_torchscript\.pt.*Nothing is downloaded"
    with pytest.raises(FileNotFoundError, match=missing_i3d):
        I3DFeatureExtractor.from_torchscript(tmp_path / "absent.pt")
    extractor = I3DFeatureExtractor.from_torchscript(i3d_path)
    with pytest.raises(ValueError, match="at least 2"):
        fvd(_videos(1, 0), _videos(4, 1), extractor)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        fvd(_videos(3, 0), _videos(3, 1), lambda v: v.mean(dim=(1, 2, 3, 4)))
    with pytest.raises(ValueError, match=r"\[N, T, C, H, W\]"):
        extractor(torch.rand(2, 3, 8, 8))
