"""bioimage.io model packages: export a run, read fluoseg's packages back, run foreign ones.

- :mod:`~fluoseg.bioimage.export`: ``export_package(run, "model.zip")`` (needs the
  ``bioimageio`` extra);
- :mod:`~fluoseg.bioimage.package`: ``is_package``, ``load_checkpoints`` (no extra needed;
  :meth:`fluoseg.infer.Segmenter.load` uses it, so ``fluoseg predict model.zip`` works);
- :mod:`~fluoseg.bioimage.foreign`: packages made elsewhere, run through bioimageio.core;
- :mod:`~fluoseg.bioimage.sources`: model names (the zoo) through a lookup hook.

Nothing is imported here, so importing a submodule stays cheap.
"""
