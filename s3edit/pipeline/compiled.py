"""``--compile``: the network's eps call through ``torch.compile``, eager when that fails.

    compile_eps(model, device)                    # model(x_t, t, z_face) now runs compiled
    compile_eps(model, device, backend="eager")   # dynamo only (the tests' CPU twin)
    uncompile_eps(model)                          # eager again

The DDIM loops call the network itself, ``model(x_t, t, z_face) -> eps`` (DVA's
``forward`` is its UNet's; ``z_id``, ``fuse`` and the other encoder methods stay eager).
``compile_eps`` sets an instance ``forward`` that calls the compiled UNet forward, so
every caller of ``model(...)`` gets it and nothing else changes (weights, state dict,
the eps contract).

Compilation happens at the first call of each input shape (a batch, then a smaller last
batch: ``dynamic=False`` gives each its own static graph), so a missing C compiler or an
operation the compiler cannot handle only shows there. ``EagerFallback`` catches it:
when a compiled call raises and the same call in eager mode succeeds, it notes the
compiler's error once and runs eager from then on; when eager raises too, the error is
the call's own and eager's exception is raised.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from s3edit import console

# inductor's modes: CUDA autotunes its kernels but keeps out of CUDA graphs (the DDIM
# loops keep eps across calls, which graph-owned output buffers would overwrite)
CUDA_MODE = "max-autotune-no-cudagraphs"
CPU_MODE = "default"


class EagerFallback:
    """``forward(*args)``: ``compiled(*args)`` until one call fails where ``eager(*args)``
    succeeds; from then on ``eager`` only, with one note saying why."""

    def __init__(self, compiled: Callable, eager: Callable, what: str = "the UNet"):
        self.compiled = compiled
        self.eager = eager
        self.what = what
        self.failed: BaseException | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is not None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # compiler errors surface here, wrapped in many types
            out = self.eager(*args, **kwargs)  # raises when the call itself is wrong
            self.failed = exc
            console.note(f"compile: torch.compile of {self.what} failed ({reason(exc)}); running eager instead.")
            return out


def reason(exc: BaseException) -> str:
    """``Type: first line`` of the error at the root of ``exc`` (dynamo wraps a backend's
    error in ``BackendCompilerFailed``), at most 200 characters."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "inner_exception", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]


def compile_eps(model: torch.nn.Module, device: torch.device, *, backend: str | Callable = "inductor",
                mode: str | None = None) -> EagerFallback:
    """``model(...)`` through ``torch.compile(backend, mode)`` of its class's ``forward``
    (mode None: ``CUDA_MODE`` on CUDA, ``CPU_MODE`` elsewhere; the mode is inductor's
    only), falling back to eager (``EagerFallback``). Compiling a model twice keeps the
    first."""
    current = model.__dict__.get("forward")
    if isinstance(current, EagerFallback):
        return current
    eager = type(model).forward.__get__(model, type(model))
    kwargs = {}
    if backend == "inductor":
        kwargs["mode"] = mode or (CUDA_MODE if device.type == "cuda" else CPU_MODE)
    try:
        compiled = torch.compile(eager, backend=backend, dynamic=False, **kwargs)
    except Exception as exc:  # e.g. torch built without dynamo, or an unknown backend
        compiled = _raiser(exc)
    wrapped = EagerFallback(compiled, eager)
    model.forward = wrapped  # an instance attribute: nn.Module.__call__ finds it first
    return wrapped


def uncompile_eps(model: torch.nn.Module) -> None:
    """``model(...)`` eager again (nothing to do when it was never compiled)."""
    if isinstance(model.__dict__.get("forward"), EagerFallback):
        del model.forward


def _raiser(exc: Exception) -> Callable:
    def call(*args, **kwargs):
        raise exc
    return call
