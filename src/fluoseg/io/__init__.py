"""Reading and writing microscopy images: TIFF/OME-TIFF, PNG, NPY, Zarr/OME-Zarr, HDF5.

Every reader returns channel-first arrays (``CYX`` / ``CZYX``) with the channel names
and pixel size (µm) the file carries; every writer writes atomically (:func:`atomic_path`
and the ``write_*_atomically`` family are the package's only way to write files). Formats are
chosen by suffix through a registry (:func:`register_format`). User mistakes (missing
or damaged files, wrong axes, unknown channels) and failures of the machine (full disk,
permissions, an output path of the wrong kind) raise :class:`fluoseg.errors.FluosegError`;
:class:`OutputLock` keeps two processes from writing one output.
Multiscale OME-Zarr images with label images (for viewers of whole slides) are written by
:mod:`fluoseg.io.ngff`.

This package imports no torch and nothing else of fluoseg but :mod:`fluoseg.errors`;
tifffile, zarr, h5py and Pillow are imported when a file of their format is used.
"""

from __future__ import annotations

from fluoseg.io._atomic import (
    atomic_path,
    write_bytes_atomically,
    write_csv_atomically,
    write_json_atomically,
    write_text_atomically,
)
from fluoseg.io._lazy import LazyView, StackedChannels
from fluoseg.io._oserrors import (
    check_output_file,
    describe_os_error,
    is_torch_write_failure,
    os_errors_as_user_errors,
    prepare_output_dir,
)
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
from fluoseg.io.lock import OutputLock
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
    "OutputLock",
    "RawImage",
    "ReadRequest",
    "StackedChannels",
    "WriteMeta",
    "atomic_path",
    "check_finite",
    "check_output_file",
    "create_output",
    "describe_os_error",
    "is_torch_write_failure",
    "format_for",
    "os_errors_as_user_errors",
    "prepare_output_dir",
    "read_image",
    "read_labels",
    "read_mask",
    "register_format",
    "supported_suffixes",
    "writable_suffixes",
    "write_bytes_atomically",
    "write_csv_atomically",
    "write_hdf5_sample",
    "write_image",
    "write_json_atomically",
    "write_ngff_image",
    "write_ngff_labels",
    "write_ngff_masks",
    "write_text_atomically",
]
