"""Input handling shared by the metrics: numpy arrays and torch tensors on CPU or CUDA.

CPU tensors become zero-copy numpy views; CUDA tensors stay on their device (the kernels
have a torch path for them). torch is never imported here: a tensor can only exist if the
caller already imported it.
"""

from __future__ import annotations

import sys

import numpy as np

from segcheck import SegcheckError


def check_whole(value, name: str, minimum: int) -> None:
    """Raise unless ``value`` is an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        wanted = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise SegcheckError(f"{name} must be {wanted}, got {value!r}")


def torch_tensor_type():
    """``torch.Tensor`` if torch has been imported by someone, else None."""
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None)


def is_device_tensor(x) -> bool:
    """True for a torch tensor that lives off the CPU (CUDA, MPS, ...)."""
    tensor = torch_tensor_type()
    return tensor is not None and isinstance(x, tensor) and x.device.type != "cpu"


def host_or_device(x):
    """A numpy array, or the tensor itself when it lives on an accelerator (a CPU bfloat16
    tensor, which numpy cannot hold, becomes float32 first)."""
    tensor = torch_tensor_type()
    if tensor is not None and isinstance(x, tensor):
        if x.device.type != "cpu":
            return x.detach()
        torch = sys.modules["torch"]
        return (x.detach().float() if x.dtype == torch.bfloat16 else x.detach()).numpy()
    return np.asarray(x)


def labels(x, what: str):
    """``x`` as an integer label array (numpy, or a device tensor); booleans become uint8.

    Floating-point input raises: class maps are integers (e.g. ``logits.argmax(1)``), and a
    float array here is almost always scores passed where class ids were expected.
    """
    x = host_or_device(x)
    dtype = x.dtype
    if isinstance(x, np.ndarray):
        if dtype == np.bool_:
            return x.view(np.uint8)
        if np.issubdtype(dtype, np.integer):
            return x
    else:
        if dtype == sys.modules["torch"].bool:
            return x.to(sys.modules["torch"].uint8)
        if not dtype.is_floating_point and not dtype.is_complex:
            return x
    raise SegcheckError(
        f"{what} has dtype {dtype}; expected integer class ids (e.g. logits.argmax(1), or masks as int), "
        "not scores or probabilities"
    )


def scores(x, what: str = "scores"):
    """``x`` as a real-valued score array (numpy, or a device tensor); integers become float64."""
    x = host_or_device(x)
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise SegcheckError(f"{what} has dtype {x.dtype}; expected real-valued scores")
        if np.issubdtype(x.dtype, np.integer):
            return x.astype(np.float64)
        if x.dtype == np.float16:
            return x.astype(np.float32)
        return x
    torch = sys.modules["torch"]
    if x.dtype == torch.bool or x.dtype.is_complex:
        raise SegcheckError(f"{what} has dtype {x.dtype}; expected real-valued scores")
    if x.dtype in (torch.float32, torch.float64):
        return x
    return x.to(torch.float32 if x.dtype.is_floating_point else torch.float64)


def flags(x, what: str):
    """``x`` as a boolean mask (numpy, or a device tensor); integers must be 0 or 1."""
    x = host_or_device(x)
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_:
            return x
        if np.issubdtype(x.dtype, np.integer):
            if x.size and (x.min() < 0 or x.max() > 1):
                bad = np.unique(x[(x != 0) & (x != 1)])[:10].tolist()
                raise SegcheckError(f"{what} must be boolean or 0/1, found values {bad}")
            return x.astype(np.bool_)
        raise SegcheckError(f"{what} has dtype {x.dtype}; expected a boolean mask")
    torch = sys.modules["torch"]
    if x.dtype == torch.bool:
        return x
    if not x.dtype.is_floating_point and not x.dtype.is_complex:
        bad = x[(x != 0) & (x != 1)]
        if bad.numel():
            raise SegcheckError(f"{what} must be boolean or 0/1, found values {torch.unique(bad)[:10].tolist()}")
        return x.to(torch.bool)
    raise SegcheckError(f"{what} has dtype {x.dtype}; expected a boolean mask")


def same_shape(a, b, what_a: str, what_b: str) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise SegcheckError(f"{what_a} shape {tuple(a.shape)} != {what_b} shape {tuple(b.shape)}")


def same_place(*arrays) -> None:
    """All numpy, or all tensors on one device: segcheck never moves data between devices silently."""
    places = {str(a.device) if is_device_tensor(a) else "cpu" for a in arrays}
    if len(places) > 1:
        raise SegcheckError(f"inputs live on different devices {sorted(places)}; move them to one device first")


def ood_inputs(values, is_ood, valid=None):
    """``(values, is_ood, valid)`` checked: float scores, boolean flags of the same shape, all in
    one place; ``valid`` stays None when not given."""
    x = scores(values)
    y = flags(is_ood, "is_ood")
    same_shape(x, y, "scores", "is_ood")
    keep = None
    if valid is not None:
        keep = flags(valid, "valid")
        same_shape(x, keep, "scores", "valid")
    same_place(*(a for a in (x, y, keep) if a is not None))
    return x, y, keep
