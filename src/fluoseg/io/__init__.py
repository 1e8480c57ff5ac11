"""Reading and writing microscopy images: TIFF/OME-TIFF, PNG, NPY, Zarr/OME-Zarr, HDF5.

Every reader returns channel-first arrays (``CYX`` / ``CZYX``) with the channel names
and pixel size (µm) the file carries; every writer writes atomically. Formats are
chosen by suffix through a registry (:func:`register_format`). User mistakes (missing
or damaged files, wrong axes, unknown channels) raise :class:`fluoseg.errors.FluosegError`.
Multiscale OME-Zarr images with label images (for viewers of whole slides) are written by
:mod:`fluoseg.io.ngff`.

This package imports no torch and nothing else of fluoseg but :mod:`fluoseg.errors`;
tifffile, zarr, h5py and Pillow are imported when a file of their format is used.
"""

from __future__ import annotations

from fluoseg.io._atomic import write_csv_atomically, write_text_atomically
from fluoseg.io._lazy import LazyView, StackedChannels
from fluoseg.io._read import ImageData, check_finite, read_image, read_labels, read_mask
from fluoseg.io._registry import (
    ImageFormat,
    RawImage,
    ReadRequest,
    WriteMeta,
    format_for,
    register_format,
    supported_suffixes,
    writable_suffixes,
)
from fluoseg.io._write import OutputArray, create_output, write_image
from fluoseg.io.hdf5 import HDF5_FORMAT, write_hdf5_sample
from fluoseg.io.ngff import write_ngff_image, write_ngff_labels, write_ngff_masks
from fluoseg.io.simple import NPY_FORMAT, PNG_FORMAT
from fluoseg.io.tiff import TIFF_FORMAT
from fluoseg.io.zarrstore import ZARR_FORMAT

for _fmt in (TIFF_FORMAT, PNG_FORMAT, NPY_FORMAT, ZARR_FORMAT, HDF5_FORMAT):
    register_format(_fmt)
del _fmt

__all__ = [
    "ImageData",
    "ImageFormat",
    "LazyView",
    "OutputArray",
    "RawImage",
    "ReadRequest",
    "StackedChannels",
    "WriteMeta",
    "check_finite",
    "create_output",
    "format_for",
    "read_image",
    "read_labels",
    "read_mask",
    "register_format",
    "supported_suffixes",
    "writable_suffixes",
    "write_hdf5_sample",
    "write_csv_atomically",
    "write_image",
    "write_ngff_image",
    "write_ngff_labels",
    "write_ngff_masks",
    "write_text_atomically",
]
