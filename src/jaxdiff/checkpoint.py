"""Checkpoint files: atomic writes, verified reads.

A checkpoint is one file:

    jaxdiff-checkpoint-v2
    {"meta": {...}, "payload": {"bytes": N, "sha256": "..."}}
    <N bytes: the tree's leaves, Equinox serialisation>

**Atomic.** The bytes go to a temporary file beside the target (`.NAME.tmp-PID`), are
flushed to disk (`fsync`) and only then replace the target (`os.replace`, atomic on POSIX
and Windows): an exception, a full disk (`OSError`) or a killed process leaves the previous
file untouched. A process killed mid-write leaves its temporary file behind; the next save to
the same path deletes temporaries whose process is gone.

**Verified.** Reading checks the header and the payload's length and SHA-256 before
deserialising: a cut file raises `CheckpointError` saying "truncated", a changed byte one
saying "corrupted", each naming the file. Files of the first format (`v1`, no checksum) are
still read, unverified.

**Which run.** `train` writes its state with a fingerprint of the run (`run_fingerprint`) and
resumes only from a file with the same one (`resume_state`); see `jaxdiff.train`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re

import equinox as eqx
import numpy as np
from jaxtyping import PyTree

_MAGIC = b"jaxdiff-checkpoint-v2\n"
_MAGIC_V1 = b"jaxdiff-checkpoint-v1\n"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
TRAIN_STATE = "jaxdiff.train-state"  # the `kind` of a checkpoint written by `train`


class CheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: truncated, corrupted, or not a checkpoint."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but is not ours, or cannot tell: keep its file
        return True
    return True


def _clean_stale_temporaries(path: pathlib.Path) -> None:
    """Delete `.NAME.tmp-PID` files beside `path` left by processes that no longer run."""
    prefix = f".{path.name}.tmp-"
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for p in entries:
        pid = p.name[len(prefix) :]
        if (
            p.name.startswith(prefix)
            and pid.isdigit()
            and int(pid) != os.getpid()
            and not _pid_alive(int(pid))
        ):
            p.unlink(missing_ok=True)


def save_checkpoint(path: str | os.PathLike, tree: PyTree, *, meta: dict | None = None) -> pathlib.Path:
    """Write `tree`'s leaves (Equinox serialisation) and a JSON `meta` header to `path`, atomically.

    The header also records the payload's length and SHA-256, checked by `load_checkpoint`.
    A failed write (an exception, a full disk: `OSError`) leaves the previous file at `path`
    untouched and no temporary file behind.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint path `{path}` is a directory: give a file name")
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, tree)
    payload = buf.getvalue()
    header = {
        "meta": meta or {},
        "payload": {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(_MAGIC)
            f.write(json.dumps(header).encode() + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _read(path: str | os.PathLike, *, payload: bool) -> tuple[dict, bytes | None]:
    """`(meta, payload bytes)` after checking the header, the length and the checksum."""
    with open(path, "rb") as f:
        magic = f.readline()
        if magic not in (_MAGIC, _MAGIC_V1):
            if magic and (_MAGIC.startswith(magic) or _MAGIC_V1.startswith(magic)):
                raise CheckpointError(f"checkpoint `{path}` is truncated (it ends inside its header)")
            raise CheckpointError(
                f"`{path}` is not a jaxdiff checkpoint (its first line is not a jaxdiff header)"
            )
        line = f.readline()
        if not line.endswith(b"\n"):
            raise CheckpointError(f"checkpoint `{path}` is truncated (it ends inside its header)")
        try:
            header = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(
                f"checkpoint `{path}` is corrupted: its header is not valid JSON ({e})"
            ) from None
        if not isinstance(header, dict):
            raise CheckpointError(f"checkpoint `{path}` is corrupted: its header is not a JSON object")
        if magic == _MAGIC_V1:  # first format: the header is the meta, no checksum
            return header, (f.read() if payload else None)
        info = header.get("payload")
        if not isinstance(header.get("meta"), dict) or not isinstance(info, dict):
            raise CheckpointError(f"checkpoint `{path}` is corrupted: its header lacks `meta` or `payload`")
        if not payload:
            return header["meta"], None
        data = f.read()
    if len(data) < info.get("bytes", -1):
        raise CheckpointError(
            f"checkpoint `{path}` is truncated: {len(data)} of {info['bytes']} payload bytes "
            "(an interrupted copy or a full disk?)"
        )
    if len(data) != info.get("bytes") or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise CheckpointError(
            f"checkpoint `{path}` is corrupted: its payload does not match the checksum in its header"
        )
    return header["meta"], data


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The JSON `meta` written by `save_checkpoint` (the header is checked, not the payload)."""
    return _read(path, payload=False)[0]


def load_checkpoint(path: str | os.PathLike, like: PyTree) -> PyTree:
    """Read a checkpoint written by `save_checkpoint` into the structure of `like`
    (same tree structure, shapes and dtypes); the values are bit-for-bit those saved.

    Raises `CheckpointError` (a `ValueError`) if the file is truncated or corrupted, and a
    `ValueError` if it holds a tree of another structure.
    """
    _, data = _read(path, payload=True)
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(data), like)
    except Exception as e:  # shapes or structure differ from the saved tree
        raise ValueError(f"checkpoint `{path}` does not match the given structure: {e}") from e


# ---------------------------------------------------------------------------------------
# Which run a checkpoint belongs to
# ---------------------------------------------------------------------------------------


def tree_digest(tree: PyTree, *, values: bool = True) -> str:
    """A short SHA-256 of a pytree: its structure, the dtype and shape of each array leaf,
    the bytes of each array (with `values=True`), the value of Python scalars and the type of
    other leaves (memory addresses, which change from process to process, are left out)."""
    import jax

    leaves, treedef = jax.tree.flatten(tree)
    h = hashlib.sha256(_ADDRESS.sub("", str(treedef)).encode())
    for leaf in leaves:
        if eqx.is_array(leaf):
            a = np.asarray(leaf)
            h.update(f"{a.dtype}{a.shape}".encode())
            if values:
                h.update(np.ascontiguousarray(a).tobytes())
        elif isinstance(leaf, (bool, int, float, complex, str)):
            h.update(repr(leaf).encode())
        else:
            h.update(type(leaf).__qualname__.encode())
    return h.hexdigest()[:16]


def fingerprint_mismatch(saved: dict, current: dict) -> list[str]:
    """The fields of two run fingerprints that differ, as readable phrases."""
    return [
        f"{k} ({saved.get(k, 'not recorded')!s} in the file, {current[k]!s} now)"
        for k in current
        if saved.get(k) != current[k]
    ]


def check_checkpoint_path(path) -> pathlib.Path:
    """Refuse, before any training, a path that cannot be written as a file."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise ValueError(f"`checkpoint` {path} is a directory: give a file name inside it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"`checkpoint` {path} lies inside {parent}, which is a file, not a folder")
            break
    return path


def run_fingerprint(score, data, process, loss, opt_state, batch_size, ema) -> dict:
    """What a checkpoint of `train` must share with the run that resumes from it."""
    from .distributions import AbstractLaw

    if isinstance(data, AbstractLaw):
        data_id = f"{type(data).__name__} {tree_digest(data)}"
    else:
        data_id = f"shape {tuple(data.shape)} {data.dtype} sha256 {tree_digest(data)}"
    return {
        "data": data_id,
        "loss": f"{type(loss).__name__} {tree_digest(loss)}",
        "optimizer": f"state {tree_digest(opt_state, values=False)}",
        "batch_size": batch_size,
        "ema": float(ema),
        "process": f"{type(process).__name__} {tree_digest(process)}",
        "network": f"{type(score).__name__} {tree_digest(score, values=False)}",
    }


def resume_state(checkpoint, like, fingerprint: dict, steps: int, resume: str):
    """The `(state, losses)` saved at `checkpoint` by `train`, in the structure of `like`
    (the losses of any length), after checking that it belongs to this run."""
    meta = read_checkpoint_meta(checkpoint)
    if meta.get("kind") != TRAIN_STATE and "step" not in meta:
        raise CheckpointError(
            f"`checkpoint` {checkpoint} holds a plain tree written by save_checkpoint, not a training "
            "state written by train: read it with load_checkpoint, or give train another path"
        )
    saved_step = int(meta["step"])
    if resume != "force":
        diff = fingerprint_mismatch(meta.get("fingerprint", {}), fingerprint)
        if diff:
            raise ValueError(
                f"`checkpoint` {checkpoint} belongs to another run: " + "; ".join(diff) + " differ. "
                "Give another checkpoint path, or pass resume='force' to continue from it anyway"
            )
    if saved_step > steps:
        raise ValueError(
            f"`checkpoint` {checkpoint} is at step {saved_step}, past `steps`={steps}: pass "
            f"steps >= {saved_step} to continue it, or give another checkpoint path"
        )
    state, losses = like
    return load_checkpoint(checkpoint, (state, np.zeros((saved_step,), losses.dtype)))
