"""Is a weights file whole? Checks that read a file's own framing (its first and last bytes), in milliseconds.

A file cut short (an interrupted copy, a full disk) or zeroed (a bad sector, a sparse file) fails its format's own
structure long before its data is read: safetensors' 8-byte header length, the JSON header and the exact data length
it implies; the zip central directory at the end of a `torch.save` file; the JSON of a small state file. Used by the
checkpoints (workbench/training/checkpoints.py) and the model cache (workbench/models.py), so a damaged file is one
line naming it instead of a deserialiser's traceback.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path


def file_problem(f: Path) -> str | None:
    """What is wrong with a weights or state file's own format (.safetensors, .pt, .json), read from its framing; None
    when it looks whole."""
    size = f.stat().st_size
    try:
        if f.suffix == ".safetensors":  # 8 bytes of header length, the JSON header, then exactly the tensors' bytes
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                if size < 8 or n <= 0 or 8 + n > size:
                    return "its safetensors header is cut off or zeroed"
                header = json.loads(fh.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + n + end != size:
                return f"its tensors need {8 + n + end} bytes, the file has {size}"
        elif f.suffix == ".pt":  # torch.save writes a zip archive: its central directory sits at the end
            with zipfile.ZipFile(f) as zf:
                zf.infolist()
        elif f.suffix == ".json":
            json.loads(f.read_text())
    except (ValueError, KeyError, TypeError, zipfile.BadZipFile, UnicodeDecodeError, OSError) as exc:
        return f"it cannot be read ({type(exc).__name__})"
    return None


def model_dir_problem(folder: Path) -> str | None:
    """What is wrong with a saved transformers model directory (config.json and safetensors weights), or None."""
    if not (folder / "config.json").is_file():
        return f"{folder / 'config.json'} is missing"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return f"{folder} holds no .safetensors weights"
    for f in [folder / "config.json", *weights]:
        if (problem := file_problem(f)) is not None:
            return f"{f} is damaged: {problem}"
    return None
