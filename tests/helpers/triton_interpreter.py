"""Running the project's Triton kernels on CPU under the interpreter (conftest.py sets TRITON_INTERPRET=1)."""
from __future__ import annotations


def patch_scalar_index(monkeypatch) -> None:
    """Triton 3.6's interpreter holds scalars as 1-element arrays, and NumPy 2.4 refuses int() of those, so a loop
    over loaded bounds (the decode kernel's range(lo, hi)) fails there only; on the GPU those bounds are scalars."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    monkeypatch.setattr(interpreter, "_patch_lang_tensor", patched)
