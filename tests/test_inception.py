"""The FID Inception graph: layout of the standard weight file, TF1 resize, pooling quirks, loading and its errors."""

import hashlib
import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vitgan.metrics import inception
from vitgan.metrics.inception import InceptionE, InceptionError, InceptionV3, load_inception, tf1_resize_bilinear


def test_layout_matches_the_standard_weight_file():
    state = InceptionV3().state_dict()
    # tensors of pt_inception-2015-12-05-6726825d.pth (torchvision's Inception3 names, 1008 classes, no aux head)
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1), "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7), "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1), "fc.weight": (1008, 2048), "fc.bias": (1008,),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    # torchvision's Inception-v3 without the aux head has 23,834,568 parameters with 1000 classes; 8 more classes
    # add 8 * 2049
    assert sum(p.numel() for p in InceptionV3().parameters()) == 23_834_568 + 8 * 2049


def _tf1_kernel(image: np.ndarray, out: int) -> np.ndarray:
    """TF1's ResizeBilinear (align_corners=False), transcribed from resize_bilinear_op.cc in numpy float32:
    scale = in / out in float32, in = float(i) * scale, lower = floor(in), upper = min(ceil(in), in - 1),
    lerp = in - floor(in); compute_lerp interpolates the top and bottom rows along x, then along y."""
    image = image.astype(np.float32)

    def weights(n_in):
        scale = np.float32(n_in) / np.float32(out)
        pos = np.arange(out, dtype=np.float32) * scale
        lower = np.floor(pos)
        return lower.astype(int), np.minimum(np.ceil(pos).astype(int), n_in - 1), (pos - lower).astype(np.float32)

    ys, xs = weights(image.shape[0]), weights(image.shape[1])
    tl, tr = image[ys[0]][:, xs[0]], image[ys[0]][:, xs[1]]
    bl, br = image[ys[1]][:, xs[0]], image[ys[1]][:, xs[1]]
    top = tl + (tr - tl) * xs[2]
    bottom = bl + (br - bl) * xs[2]
    return top + (bottom - top) * ys[2][:, None]


def test_tf1_resize_is_bit_exact_with_the_tf1_kernel():
    x = torch.arange(2.0).reshape(1, 1, 1, 2).expand(1, 1, 2, 2).contiguous() * 10  # columns 0, 10
    # TF1 (align_corners=False) samples column j at j * 2/4 = 0, 0.5, 1, 1.5 -> clamp at the last column
    assert tf1_resize_bilinear(x, 4)[0, 0, 0].tolist() == [0.0, 5.0, 10.0, 10.0]
    rng = np.random.default_rng(0)
    for height, width, size in ((512, 512, 299), (8, 8, 299), (5, 7, 3), (5, 7, 11), (32, 32, 299)):
        image = rng.integers(0, 256, size=(height, width)).astype(np.float32)
        got = tf1_resize_bilinear(torch.from_numpy(image)[None, None], size)[0, 0].numpy()
        assert np.array_equal(got, _tf1_kernel(image, size)), (height, width, size)
    image = rng.integers(0, 256, size=(512, 512)).astype(np.float32)
    pos64 = np.arange(299) * (512 / 299)  # float64 positions: what the test must tell apart (issue 16: up to 6e-3)
    lower, frac = np.floor(pos64).astype(int), (pos64 - np.floor(pos64)).astype(np.float32)
    rows = image[lower] + (image[np.minimum(lower + 1, 511)] - image[lower]) * frac[:, None]
    as64 = rows[:, lower] + (rows[:, np.minimum(lower + 1, 511)] - rows[:, lower]) * frac
    assert np.abs(as64 - _tf1_kernel(image, 299)).max() > 1e-3
    same = torch.from_numpy(image[:5, :5])[None, None]
    assert torch.equal(tf1_resize_bilinear(same, 5), same)  # no change at the same size (no antialias, no offset)


def _pool_branch(block: InceptionE, x: torch.Tensor) -> torch.Tensor:
    """The pooling branch's output with its 1x1 convolution made the identity on input channel 0."""
    with torch.no_grad():
        block.branch_pool.conv.weight.zero_()
        block.branch_pool.conv.weight[:, 0] = 1.0
    block.eval()
    return block(x)[:, -192:]


@pytest.mark.parametrize("max_pool", [False, True])
def test_last_blocks_pool_like_the_tf_graph(max_pool):
    x = torch.rand(1, 1280, 8, 8) + 0.1
    block = InceptionE(1280, max_pool=max_pool)
    scale = 1 / (1 + 1e-3) ** 0.5  # batch norm with unit statistics and eps 1e-3
    got = _pool_branch(block, x)[0, 0]
    channel = x[0, 0]
    if max_pool:  # Mixed_7c: 3x3 max pool
        expected = F.max_pool2d(channel[None, None], 3, 1, 1)[0, 0]
    else:  # Mixed_7b: 3x3 average pool that does not count padding: a corner averages 4 values
        expected = F.avg_pool2d(channel[None, None], 3, 1, 1, count_include_pad=False)[0, 0]
        assert torch.isclose(expected[0, 0], channel[:2, :2].mean())
    torch.testing.assert_close(got, expected * scale)


def test_shapes_and_grayscale(inception_weights):
    net = load_inception(inception_weights)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    pool, logits = net(images)
    assert pool.shape == (3, inception.FEATURES) and logits.shape == (3, inception.CLASSES)
    assert torch.isfinite(pool).all() and pool.std() > 0
    # IS logits carry no bias: pool @ W^T
    torch.testing.assert_close(logits, pool @ net.fc.weight.T)
    gray = images[:, :1]
    torch.testing.assert_close(net(gray)[0], net(gray.expand(-1, 3, -1, -1))[0])


def test_weights_load_from_torch_and_safetensors_files(inception_weights, tmp_path):
    state = torch.load(inception_weights, weights_only=True)
    st = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    a, b = load_inception(inception_weights), load_inception(st)
    torch.testing.assert_close(a.fc.weight, b.fc.weight)
    del state["Mixed_5b.branch1x1.bn.num_batches_tracked"]  # files from older torch versions lack these
    old = tmp_path / "old.pth"
    torch.save(state, old)
    load_inception(old)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(InceptionError, match="--inception PATH") as info:
        inception.weights_path(tmp_path / "nope.pth")
    assert "nope.pth" in str(info.value) and inception.WEIGHTS_URL in str(info.value)
    assert "\n" not in str(info.value)

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(InceptionError, match="download failed .*no network.*VITGAN_INCEPTION"):
        inception.weights_path()
    with pytest.raises(InceptionError, match="not found"):
        inception.weights_path(download=False)


def test_download_goes_to_the_hub_cache_with_a_checksum(tmp_path, monkeypatch, inception_weights):
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        with open(dst, "wb") as f:
            f.write(inception_weights.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = inception.weights_path()
    assert path == tmp_path / "hub" / "checkpoints" / inception.WEIGHTS_NAME and path.is_file()
    assert calls == [(inception.WEIGHTS_URL, "6726825d")]
    assert inception.weights_path() == path and len(calls) == 1  # cached: no second download
    assert inception.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_environment_variable_names_the_file(inception_weights, monkeypatch):
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(inception_weights))
    assert inception.weights_path() == inception_weights


class _Exploit:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",))


def test_bad_weight_files_give_one_line_errors_and_never_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"fc.weight": _Exploit()}))
    with pytest.raises(InceptionError, match="evil.pth: not a readable Inception weights file"):
        load_inception(evil)
    assert not (tmp_path / "PWNED").exists()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(InceptionError, match="junk.pth: not a readable"):
        load_inception(junk)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, wrong)
    with pytest.raises(InceptionError, match=r"wrong.pth: does not match .* missing"):
        load_inception(wrong)
    shape = tmp_path / "shape.pth"
    state = InceptionV3().state_dict()
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, shape)
    with pytest.raises(InceptionError, match="shape.pth: tensor shapes differ"):
        load_inception(shape)
