"""Robustness table (issue 15): hostile-input cases tried / passed / failed per area, and
peak memory on huge images.

Run: HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python benchmarks/robustness.py
     [--png-side 30000] [--slide-side 100000] [--skip-images] [--skip-tests]

* Cases: the hostile-input test modules are run with pytest (each case is one test or one
  parametrised example; hypothesis properties count once each, whatever their number of
  examples); a JUnit report gives tried / passed / failed / skipped per area.
* Huge images, each in its own process so peak RSS is that process's own:
  a plain PNG of ``--png-side``^2 pixels (written row by row, never held in memory) opened
  with ``kbfm.io.open_slide`` and one patch read (refused before decoding when it would
  not fit in the memory available), and a tiled TIFF of ``--slide-side``^2 pixels read
  through OpenSlide at 256 random patch positions.

Writes benchmarks/results/robustness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
AREAS = {
    "test_hostile_inputs.py": "pp / pl input checks (NaN, backed, coordinates, names)",
    "test_properties.py": "property-based (hypothesis) pp / tl",
    "test_properties_embed.py": "property-based (hypothesis) embeddings, query, predictor",
    "test_http_hostile.py": "hostile HTTP peers, timeouts, secrets",
    "test_atomic_interrupts.py": "Ctrl-C / SIGKILL during writes",
    "test_cache.py": "embedding cache faults (corrupt, read-only, full, two writers)",
    "test_io_readers.py": "readers (Visium, legacy ST) on malformed files",
    "test_io_slide.py": "slides and patches (corrupt, truncated, huge)",
    "test_agent.py": "agent under hostile model output and injection",
    "test_llm_qwen.py": "Qwen tool-call parsing (broken JSON, unknown tools)",
    "test_cli.py": "CLI (plan files, outputs never overwrite the input)",
    "test_docs_examples.py": "docs and README examples run",
}


def run_cases(workdir: Path) -> list[dict]:
    """Run the hostile-input modules; tried / passed / failed / skipped per module."""
    report = workdir / "junit.xml"
    modules = [str(ROOT / "tests" / name) for name in AREAS if (ROOT / "tests" / name).exists()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml"]
    start = time.perf_counter()
    subprocess.call([*cmd, str(report), *modules], cwd=ROOT)
    seconds = time.perf_counter() - start
    rows: dict[str, dict] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").split(".")[-1] + ".py"
        row = rows.setdefault(
            module, {"passed": 0, "failed": 0, "skipped": 0, "xfailed": 0, "tried": 0}
        )
        row["tried"] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            row["failed"] += 1
        elif (skip := case.find("skipped")) is not None:
            kind = (
                "xfailed"
                if "xfail" in (skip.get("type", "") + skip.get("message", ""))
                else "skipped"
            )
            row[kind] += 1
        else:
            row["passed"] += 1
    out = []
    for module, row in sorted(rows.items()):
        out.append({"module": module, "area": AREAS.get(module, module), **row})
    print(f"cases: {sum(r['tried'] for r in out)} in {seconds:.0f} s", flush=True)
    return out


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_big_png(path: Path, side: int) -> None:
    """An RGB PNG of side x side pixels, written row by row (a gradient, compresses well)."""
    row_pixels = bytes((i * 7) % 256 for i in range(side * 3))
    compressor = zlib.compressobj(1)
    with path.open("wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)))
        pending = bytearray()
        for _ in range(side):
            pending += compressor.compress(b"\x00" + row_pixels)
            if len(pending) > 1 << 20:
                fh.write(_png_chunk(b"IDAT", bytes(pending)))
                pending.clear()
        pending += compressor.flush()
        fh.write(_png_chunk(b"IDAT", bytes(pending)))
        fh.write(_png_chunk(b"IEND", b""))


def write_big_tiff(path: Path, side: int, tile: int = 512) -> None:
    """A tiled RGB TIFF of side x side pixels from a generator of (identical) tiles."""
    import numpy as np
    import tifffile

    # Pink "tissue" bands 32 px high: compresses to a few KB per tile, so the file stays
    # small while OpenSlide still has to find, read and decompress each tile it needs.
    yy, _ = np.mgrid[0:tile, 0:tile]
    band = (yy // 32) % 2 == 0
    one = np.where(band[..., None], [230, 180, 200], [250, 245, 248]).astype(np.uint8)
    n_tiles = (-(-side // tile)) ** 2

    def tiles():
        for _ in range(n_tiles):
            yield one

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            tiles(),
            shape=(side, side, 3),
            dtype=np.uint8,
            tile=(tile, tile),
            photometric="rgb",
            compression="zlib",
            compressionargs={"level": 1},
            resolution=(2e4, 2e4),
            resolutionunit="CENTIMETER",
        )


_READ_PATCHES = """
import json, resource, sys, time
import numpy as np
from kbfm._errors import KbfmInputError
from kbfm.io.slide import open_slide
path, n = sys.argv[1], int(sys.argv[2])
start = time.perf_counter()
result = {}
try:
    slide = open_slide(path, mpp=0.5)
    w, h = slide.dimensions
    rng = np.random.default_rng(0)
    for x, y in zip(rng.integers(0, w - 224, n), rng.integers(0, h - 224, n)):
        patch = slide.read_region((int(x), int(y)), (224, 224))
    result.update(outcome=f"read {n} patches", backend=slide.backend)
except KbfmInputError as err:
    result.update(outcome="refused before decoding", message=str(err)[:300])
except MemoryError:
    result.update(outcome="MemoryError")
result["seconds"] = round(time.perf_counter() - start, 2)
result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(result))
"""


def measure_image(path: Path, n_patches: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _READ_PATCHES, str(path), str(n_patches)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"outcome": f"crashed (exit {out.returncode})", "stderr": out.stderr[-500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _image_row(path: Path, write, side: int, kind: str, n_patches: int) -> dict:
    """Write one huge image, measure reading it in a fresh process, delete it."""
    start = time.perf_counter()
    write(path, side)
    row = {
        "image": f"{kind} {side} x {side}",
        "file_mib": round(path.stat().st_size / 2**20, 1),
        "write_s": round(time.perf_counter() - start, 1),
        **measure_image(path, n_patches),
    }
    path.unlink()
    print(row, flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png-side", type=int, default=30_000)
    parser.add_argument("--slide-side", type=int, default=100_000)
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "robustness.json")
    args = parser.parse_args()
    result: dict = {"command": " ".join(["python", "benchmarks/robustness.py", *sys.argv[1:]])}
    result["cpus"] = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="kbfm-robust-") as tmp:
        work = Path(tmp)
        if not args.skip_tests:
            result["cases"] = run_cases(work)
        if not args.skip_images:
            plans = [
                (work / "huge.png", write_big_png, args.png_side, "plain PNG", 1),
                (work / "huge.tif", write_big_tiff, args.slide_side, "tiled TIFF", 256),
            ]
            images = [_image_row(*plan) for plan in plans]
            result["images"] = images
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
