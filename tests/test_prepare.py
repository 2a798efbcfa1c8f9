"""`vitgan prepare` and the dataset readers, on small files in each real on-disk format written here."""

import io
import json
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitgan.cli import main
from vitgan.data import DataError, load, open_source
from vitgan.data import prepare as prepare_module
from vitgan.data.prepare import prepare

RNG = np.random.default_rng(0)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def pixels(height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def read_zip(path: Path) -> tuple[list[np.ndarray], object]:
    """The images (in member order) and the dataset.json labels of a prepared zip, read with zipfile and PIL."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        images = [np.asarray(Image.open(io.BytesIO(archive.read(n)))) for n in names]
        labels = json.loads(archive.read("dataset.json"))["labels"]
    assert names == [f"00000/img{i:08d}.png" for i in range(len(names))]
    return images, labels


def quiet(line: str) -> None:
    pass


def run(src, dest, **options):
    return prepare(src, dest, progress=False, log=quiet, **options)


def test_folder_round_trip_is_pixel_exact_across_modes(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    rgb, gray, rgba, pal = pixels(8, 8), pixels(8, 8, 1), pixels(8, 8, 4), pixels(8, 8, 1) % 16
    rgba[..., 3] = 255
    rgba[0, 0] = (200, 100, 50, 128)  # one half-transparent pixel, composited over black
    wide = gray.astype(np.uint16) * 257  # 16-bit grayscale
    Image.fromarray(rgb).save(src / "a.png")
    Image.fromarray(gray).save(src / "b.bmp")
    Image.fromarray(rgba, "RGBA").save(src / "sub" / "c.png")
    palette = Image.fromarray(pal, "P")
    palette.putpalette(list(range(0, 256, 16)) * 3 * 16)
    palette.save(src / "sub" / "d.png")
    Image.fromarray(wide).save(src / "sub" / "e.png")
    Image.fromarray(rgb).save(src / "sub" / "f.webp", lossless=True)
    (src / "notes.txt").write_text("not an image, ignored by its suffix")
    result = run(src, tmp_path / "out.zip")
    assert (result.count, result.size, result.labelled) == (6, (8, 8), False)
    images, labels = read_zip(tmp_path / "out.zip")
    expected_rgba = rgba[..., :3].copy()
    expected_rgba[0, 0] = (100, 50, 25)  # round(colour * 128 / 255)
    expected_pal = np.asarray(palette.convert("RGB"))
    expected = [rgb, np.repeat(gray[..., None], 3, 2), expected_rgba, expected_pal, np.repeat(gray[..., None], 3, 2),
                rgb]  # sorted by path: a.png, b.bmp, sub/c.png, sub/d.png, sub/e.png, sub/f.webp
    for got, want in zip(images, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert labels is None
    data = load(str(tmp_path / "out.zip"), resolution=8, channels=3)  # the loader reads it back to the same pixels
    np.testing.assert_array_equal(data.images[0].permute(1, 2, 0).numpy(), rgb)
    assert data.labels.tolist() == [-1] * 6 and data.name == "out"


def test_grayscale_output_labels_from_dataset_json_and_max_images(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    grays = [pixels(4, 4, 1) for _ in range(3)]
    for i, g in enumerate(grays):
        Image.fromarray(g).save(src / f"{i}.png")
    (src / "dataset.json").write_text(json.dumps({"labels": [["0.png", 7], ["1.png", 3], ["2.png", 5]]}))
    run(src, tmp_path / "out.zip", channels=1, max_images=2)
    images, labels = read_zip(tmp_path / "out.zip")
    assert len(images) == 2 and images[1].shape == (4, 4)
    np.testing.assert_array_equal(images[1], grays[1])
    assert labels == [["00000/img00000000.png", 7], ["00000/img00000001.png", 3]]
    assert load(str(src), resolution=4, channels=1).labels.tolist() == [7, 3, 5]


def test_dataset_json_class_names_round_trip_through_prepare_and_are_checked(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(pixels(4, 4)).save(src / f"{i}.png")
    meta = src / "dataset.json"
    meta.write_text(json.dumps({"labels": [["0.png", 1], ["1.png", 0], ["2.png", 1]], "classes": ["cat", "dog"]}))
    data = load(str(src), resolution=4, channels=3)
    assert data.labels.tolist() == [1, 0, 1] and data.classes == ["cat", "dog"] and data.num_classes == 2
    run(src, tmp_path / "out.zip")
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        written = json.loads(archive.read("dataset.json"))
    assert written["classes"] == ["cat", "dog"] and [label for _, label in written["labels"]] == [1, 0, 1]
    assert load(str(tmp_path / "out.zip"), resolution=4, channels=3).classes == ["cat", "dog"]  # the zip's own
    meta.write_text(json.dumps({"labels": [["0.png", 1], ["1.png", 2]], "classes": ["cat", "dog"]}))
    with pytest.raises(DataError, match=r"dataset.json: label 2 is not below 2, the number of class names$"):
        load(str(src), resolution=4, channels=3)
    meta.write_text(json.dumps({"labels": [["0.png", 0]], "classes": "cat dog"}))
    with pytest.raises(DataError, match=r"dataset.json: \"classes\" must be a list of class names \(strings\)"):
        open_source(src)
    meta.write_text(json.dumps({"labels": [["0.png", 0]]}))  # StyleGAN2-ADA's, without names
    assert open_source(src).classes is None
    run(src, tmp_path / "out.zip", max_images=1)
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        assert json.loads(archive.read("dataset.json")) == {"labels": [["00000/img00000000.png", 0]]}


def test_labels_from_class_folders(tmp_path, capsys):
    """`vitgan prepare train/ out.zip --labels folders` on an ImageNet-style tree: the sorted sub-folder names are the
    classes, each image labelled by its first-level sub-folder."""
    src = tmp_path / "train"
    for rel in ("dog/b.png", "dog/deeper/a.png", "cat/z.png", "cat/y.png"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels(4, 4)).save(src / rel)
    (src / "empty").mkdir()  # holds no image: no class
    (src / "dataset.json").write_text(json.dumps({"labels": [["cat/y.png", 5]]}))  # set aside by --labels folders
    dest = tmp_path / "out.zip"
    assert main(["prepare", str(src), str(dest), "--labels", "folders"]) == 0
    assert "labelled in 2 classes" in capsys.readouterr().err
    with zipfile.ZipFile(dest) as archive:
        meta = json.loads(archive.read("dataset.json"))
    assert meta["classes"] == ["cat", "dog"]
    assert [label for _, label in meta["labels"]] == [0, 0, 1, 1]  # cat/y, cat/z, dog/b, dog/deeper/a
    data = load(str(dest), resolution=4, channels=3)
    assert data.classes == ["cat", "dog"] and data.num_classes == 2
    np.testing.assert_array_equal(data.images[2].permute(1, 2, 0).numpy(), np.asarray(Image.open(src / "dog/b.png")))
    Image.fromarray(pixels(4, 4)).save(src / "stray.png")
    with pytest.raises(DataError, match=r"train/stray.png: is not in a class sub-folder"):
        run(src, dest, labels="folders")
    assert main(["prepare", str(src), str(dest), "--labels", "folders"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "stray.png" in err
    with pytest.raises(DataError, match=r"out.zip: labels from class folders need a folder of images, not a zip "
                       "source"):
        run(dest, tmp_path / "again.zip", labels="folders")
    with pytest.raises(DataError, match=r"^labels: 'classes' is not one of source, folders$"):
        run(src, tmp_path / "again.zip", labels="classes")


def test_zip_source_and_byte_identical_repeats(tmp_path):
    src = tmp_path / "images.zip"
    arrays = [pixels(6, 6) for _ in range(3)]
    with zipfile.ZipFile(src, "w") as archive:
        for i, a in enumerate(arrays):
            archive.writestr(f"x/{2 - i}.png", encode(a, "png"))  # member order differs from name order
        archive.writestr("x/readme.txt", "ignored")
    run(src, tmp_path / "one.zip")
    run(src, tmp_path / "two.zip")
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    images, _ = read_zip(tmp_path / "one.zip")
    for got, want in zip(images, arrays[::-1], strict=True):  # sorted by member name: 0.png first
        np.testing.assert_array_equal(got, want)
    with zipfile.ZipFile(tmp_path / "one.zip") as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}


def cifar_batch(images: np.ndarray, labels: list[int], key: bytes = b"labels") -> bytes:
    """A batch as CIFAR publishes it: b'data' (N, 3072) uint8 rows holding the R, G, B planes row-major."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {b"batch_label": b"training batch", key: labels, b"data": rows,
             b"filenames": [f"img_{i}.png".encode() for i in range(len(images))]}
    return pickle.dumps(batch, protocol=2)


@pytest.fixture
def cifar10(tmp_path) -> tuple[Path, np.ndarray, list[int]]:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    images = RNG.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = [int(x) for x in RNG.integers(0, 10, 10)]
    for b in range(5):
        (root / f"data_batch_{b + 1}").write_bytes(cifar_batch(images[2 * b:2 * b + 2], labels[2 * b:2 * b + 2]))
    (root / "test_batch").write_bytes(cifar_batch(images[:1] // 2, labels[:1]))  # the test split is not read
    meta = {b"num_cases_per_batch": 10000, b"label_names": [name.encode() for name in CIFAR10_NAMES], b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))  # as published: bytes keys and names
    return root, images, labels


def test_cifar10_folder_and_tar_gz(tmp_path, cifar10):
    root, images, labels = cifar10
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    assert open_source(archive).kind == "cifar10" and open_source(archive).classes == CIFAR10_NAMES
    run(root, tmp_path / "a.zip")
    run(archive, tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    got, got_labels = read_zip(tmp_path / "a.zip")
    np.testing.assert_array_equal(np.stack(got), images)
    assert [label for _, label in got_labels] == labels
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert json.loads(z.read("dataset.json"))["classes"] == CIFAR10_NAMES
    prepared = load(str(tmp_path / "a.zip"), resolution=32, channels=3)  # dataset.json
    assert prepared.labels.tolist() == labels and prepared.classes == CIFAR10_NAMES
    data = load(str(archive), resolution=32, channels=3)  # straight from the archive, no prepare
    np.testing.assert_array_equal(data.images.permute(0, 2, 3, 1).numpy(), images)
    assert data.labels.tolist() == labels and data.name == "cifar-10-python"
    assert data.classes == CIFAR10_NAMES and data.num_classes == 10


def test_cifar100_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    images = RNG.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    batch = pickle.loads(cifar_batch(images, [41, 7, 99], key=b"fine_labels"))
    batch[b"coarse_labels"] = [1, 2, 3]
    (root / "train").write_bytes(pickle.dumps(batch, protocol=2))
    fine = [f"fine{i}".encode() for i in range(100)]
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20},
                                             protocol=2))
    data = load(str(root), resolution=16, channels=3)
    assert data.labels.tolist() == [41, 7, 99] and data.images.shape == (3, 3, 16, 16)
    assert data.classes == [f"fine{i}" for i in range(100)] and data.num_classes == 100


def test_cifar_class_names_must_be_there_and_cover_the_labels(cifar10):
    root, _, _ = cifar10
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"] * 3}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_\d \(class names: batches.meta\): label \d is not below 3, the "
                       "number of class names$"):
        open_source(root)
    (root / "batches.meta").write_bytes(pickle.dumps({b"num_vis": 3072}, protocol=2))
    with pytest.raises(DataError, match=r"batches.meta: expected the class names as a list under b'label_names'$"):
        open_source(root)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path, cifar10, monkeypatch):
    root, _, _ = cifar10
    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR python batch \(refusing to load"):
        load(str(root), resolution=32, channels=3)
    assert not (tmp_path / "pwned").exists()
    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_3: b'data' is uint8 \(2, 10\)"):
        load(str(root), resolution=32, channels=3)


def framed(width: int = 178, height: int = 218, side: int = 108) -> tuple[np.ndarray, np.ndarray]:
    """A red image whose centred side x side square (CelebA's crop) holds random pixels; (image, the square)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = 255
    inner = pixels(side, side)
    top, left = (height - side) // 2, (width - side) // 2
    image[top:top + side, left:left + side] = inner
    return image, inner


def test_celeba_folder_and_zip_get_the_108_crop(tmp_path):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    image, inner = framed()
    Image.fromarray(image).save(folder / "000001.png")  # PNG content under CelebA's .jpg name: decoded by content
    (folder / "000001.png").rename(folder / "000001.jpg")
    result = run(folder, tmp_path / "native.zip", resolution=108)
    assert result.size == (108, 108)
    np.testing.assert_array_equal(read_zip(tmp_path / "native.zip")[0][0], inner)  # exactly the centred square
    uniform = np.zeros_like(image)
    uniform[55:163, 35:143] = 90  # CelebA's crop box: left (178 - 108) // 2 = 35, top (218 - 108) // 2 = 55
    archive = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("img_align_celeba/000001.jpg", encode(uniform, "jpeg", quality=100))
    assert open_source(archive).kind == "celeba"
    data = load(str(archive), resolution=64, channels=3)
    assert data.images.shape == (1, 3, 64, 64)
    assert (data.images.int() - 90).abs().max() <= 2  # nothing from outside the box leaks in


def test_lsun_lmdb_with_jpeg_and_webp_values(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    wide, inner = framed(width=10, height=6, side=6)  # landscape: the centre crop keeps columns 2..7
    tall, inner_tall = framed(width=6, height=9, side=6)  # portrait: rows 1..6
    root = tmp_path / "bedroom_train_lmdb"
    env = lmdb.open(str(root), map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"b0001", encode(wide, "webp", lossless=True))
        txn.put(b"a0002", encode(tall, "webp", lossless=True))
        txn.put(b"c0003", encode(pixels(20, 30), "jpeg", quality=90))
    env.close()
    assert open_source(root).kind == "lsun"
    result = run(root, tmp_path / "out.zip", resolution=6)
    images, labels = read_zip(tmp_path / "out.zip")
    assert result.count == 3 and labels is None
    np.testing.assert_array_equal(images[0], inner_tall)  # key order: a0002, b0001, c0003
    np.testing.assert_array_equal(images[1], inner)
    assert images[2].shape == (6, 6, 3)
    assert load(str(root / "data.mdb"), resolution=4, channels=1).images.shape == (3, 1, 4, 4)


def bad_folder(tmp_path: Path) -> Path:
    """Two good images and four bad ones: zero bytes, a truncated PNG, a truncated JPEG, text named .png."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("good1.png", "good2.png"):
        Image.fromarray(pixels(8, 8)).save(src / name)
    (src / "empty.png").write_bytes(b"")
    (src / "half.png").write_bytes(encode(pixels(8, 8), "png")[:60])
    (src / "half.jpg").write_bytes(encode(pixels(64, 64), "jpeg")[:400])
    (src / "notes.png").write_text("these are notes, not pixels")
    return src


def test_bad_files_are_all_named_and_nothing_is_written(tmp_path, capsys):
    src = bad_folder(tmp_path)
    dest = tmp_path / "out" / "data.zip"
    with pytest.raises(DataError) as error:
        prepare(src, dest, progress=False)
    message = str(error.value)
    assert "\n" not in message and "4 bad image file(s)" in message and "empty.png: empty file (0 bytes)" in message
    report = capsys.readouterr().err
    for name in ("empty.png", "half.png", "half.jpg", "notes.png"):
        assert f"{src / name}: " in report, name
    assert "notes.png: not an image (no known image format)" in report
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no DEST, no temporary file
    assert main(["prepare", str(src), str(dest)]) == 2
    assert "vitgan: error: " in capsys.readouterr().err
    result = run(src, dest, skip_bad=True)
    assert (result.count, result.skipped) == (2, 4) and dest.is_file()
    with pytest.raises(DataError, match="half.jpg"):
        load(str(src), resolution=8, channels=3)
    assert len(load(str(src), resolution=8, channels=3, skip_bad=True, progress=False)) == 2
    assert "skipped 4 bad image file(s)" in capsys.readouterr().err


def test_mixed_sizes_and_non_square_images(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(pixels(8, 8)).save(src / "a.png")
    Image.fromarray(pixels(6, 6)).save(src / "b.png")
    Image.fromarray(pixels(8, 12)).save(src / "c.png")
    with pytest.raises(DataError, match=r"b.png: is 6x6, the first image is 8x8 \(use --resolution\)"):
        run(src, tmp_path / "a.zip")  # without --resolution every image must keep the first one's size
    with pytest.raises(DataError, match=r"1 bad image file\(s\): .*c.png: is 12x8, not square"):
        run(src, tmp_path / "a.zip", resolution=8, crop="none")
    assert run(src, tmp_path / "a.zip", resolution=4).count == 3  # centre crop + resize: all usable


def test_no_partial_dest_after_an_interruption(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        Image.fromarray(pixels(4, 4)).save(src / f"{i}.png")
    dest = tmp_path / "out.zip"
    dest.write_bytes(b"the previous, complete dataset")
    calls = []
    real = prepare_module.encode_png

    def interrupted(array):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(array)

    monkeypatch.setattr(prepare_module, "encode_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(src, dest)
    assert dest.read_bytes() == b"the previous, complete dataset"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip", "src"]


def test_sources_that_are_not_datasets(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        open_source(tmp_path / "missing")
    (tmp_path / "data.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="data.tar.gz: not a readable tar archive"):
        open_source(tmp_path / "data.tar.gz")
    with pytest.raises(DataError, match="must be a .zip"):
        run(tmp_path, tmp_path / "out.tar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        run(tmp_path / "empty", tmp_path / "out.zip")


def test_mirror_flips_the_chosen_images_and_the_trainer_chooses_about_half():
    from vitgan import presets
    from vitgan.data import ImageData
    from vitgan.training.trainer import Trainer

    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4).repeat(32, 1, 1, 1)
    data = ImageData(images, torch.zeros(64, dtype=torch.int64), "x")
    plain = data.batch(torch.arange(64))
    flip = torch.arange(64) % 3 == 0
    mirrored = data.batch(torch.arange(64), flip=flip)
    assert torch.equal(mirrored[flip], plain[flip].flip(3)) and torch.equal(mirrored[~flip], plain[~flip])
    cfg = presets.get("mnist", resolution=4, channels=3, g_patch=2, d_patch=2, batch=64, g_dim=8, g_heads=1,
                      g_mlp_dim=8, d_dim=8, d_heads=1, d_mlp_dim=8, g_depth=1, d_depth=1)
    trainer = Trainer(cfg, data, torch.device("cpu"), None, mirror=True)
    reals = trainer.next_reals()[0]
    originals = data.batch(trainer.order)
    flipped = (reals == originals.flip(3)).flatten(1).all(1)
    assert ((reals == originals).flatten(1).all(1) | flipped).all()  # each image is itself or its mirror
    assert 16 < flipped.sum() < 48
