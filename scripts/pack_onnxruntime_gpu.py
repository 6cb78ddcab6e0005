"""Pack onnxruntime-gpu for a GPU machine that can receive at most ~60 MB per transfer (a developer's tool).

The lent GPU machines have torch with CUDA 13 but onnxruntime for the CPU only, and they cannot download; the
onnxruntime-gpu wheel is 255 MB, almost all of it CUDA kernels for six GPU generations. This keeps the kernels of
one generation (``--sm 90``: H100/H200), blanks the others in place (the CUDA runtime only reads the entry for the
GPU it runs on, so blanked entries are never read), drops the TensorRT provider (no TensorRT there), and writes
the package as an .xz tar cut into parts that each fit one transfer:

    python scripts/pack_onnxruntime_gpu.py --out .dev      # .dev/ort.part00, ort.part01, ...

On the GPU machine: ``cat ort.part* | xz -d | tar xf - -C /tmp/site`` and ``export PYTHONPATH=/tmp/site``
(onnxruntime-gpu 1.31.1 there: CUDAExecutionProvider started and ran scripts/gpu_check.sh's int8 check).
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50


def blank_other_architectures(library: Path, keep: int) -> tuple[int, int]:
    """Zero the payload of every fatbin entry not built for sm_``keep``; (bytes kept, bytes blanked)."""
    elf = subprocess.run(["readelf", "-S", "-W", str(library)], capture_output=True, text=True, check=True).stdout
    row = next(line for line in elf.splitlines() if ".nv_fatbin" in line).split()
    offset, size = int(row[row.index(".nv_fatbin") + 3], 16), int(row[row.index(".nv_fatbin") + 4], 16)
    data = bytearray(library.read_bytes())
    kept = blanked = 0
    position, end_of_section = offset, offset + size
    while position < end_of_section - 16:
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", data, position)
        if magic != FATBIN_MAGIC:
            position += 8
            continue
        entry, end = position + header_size, position + header_size + fat_size
        while entry < end:
            _kind, _flags, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            architecture = struct.unpack_from("<I", data, entry + 28)[0]
            if architecture == keep:
                kept += payload
            else:
                data[entry + entry_header:entry + entry_header + payload] = bytes(payload)
                blanked += payload
            entry += entry_header + payload
        position = end
    library.write_bytes(data)
    return kept, blanked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="1.31.1", help="onnxruntime-gpu version (1.31.1 is built for CUDA 13)")
    parser.add_argument("--sm", type=int, default=90, help="the GPU generation to keep (90: H100/H200)")
    parser.add_argument("--part-mb", type=int, default=56)
    parser.add_argument("--out", type=Path, default=Path(".dev"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                        "-d", str(work), f"onnxruntime-gpu=={args.version}"], check=True)
        package = work / "package"
        zipfile.ZipFile(next(work.glob("onnxruntime_gpu-*.whl"))).extractall(package)
        (package / "onnxruntime/capi/libonnxruntime_providers_tensorrt.so").unlink(missing_ok=True)
        kept, blanked = blank_other_architectures(package / "onnxruntime/capi/libonnxruntime_providers_cuda.so", args.sm)
        print(f"CUDA kernels: {kept / 1e6:.0f} MB for sm_{args.sm} kept, {blanked / 1e6:.0f} MB of others blanked")
        archive = work / "ort.tar.xz"
        subprocess.run(f"tar cf - -C {package} . | xz -9 -T0 > {archive}", shell=True, check=True)
        for old in args.out.glob("ort.part*"):
            old.unlink()
        subprocess.run(["split", "-b", str(args.part_mb * 1_000_000), "-d", str(archive), str(args.out / "ort.part")],
                       check=True)
    print("\n".join(f"{p}  {p.stat().st_size / 1e6:.1f} MB" for p in sorted(args.out.glob("ort.part*"))))


if __name__ == "__main__":
    main()
