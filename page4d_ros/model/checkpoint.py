"""Strict, safe checkpoint loading (released VGGT / PAGE-4D / π³ files, our safetensors) and saving.

Supported inputs:

- ``.pt`` / ``.pth`` files holding a bare state_dict (facebook/VGGT-1B ``model.pt``) or a dict wrapping it
  under ``'model'`` (PAGE-4D ``checkpoint_*.pt``; other entries such as ``optimizer`` are ignored and
  reported), with ``module.`` / ``_orig_mod.`` key prefixes stripped. Always read with
  ``torch.load(weights_only=True)`` (never unpickling code), memory-mapped when the file format allows it.
- ``.safetensors`` files; those written by :func:`save_checkpoint` carry the model config as JSON metadata.
  The released π³ ``yyfz233/Pi3`` ``model.safetensors`` (bare keys) is recognised by its keys (``pi3``).
- A Hugging Face repo id (``owner/name`` or ``owner/name/<file>``), resolved from the local HF cache only.

Every key must match the network exactly except the track head (``track_head.*``), which this package does not
implement: its keys are skipped and listed in the report. Any other missing or unexpected key, or a shape
mismatch, raises :class:`CheckpointError` naming the keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from page4d_ros.model import pi3, vggt_omega
from page4d_ros.model.config import resolve_config as resolve_vggt_config
from page4d_ros.model.vggt import TRACK_HEAD_PREFIX, build_model, resolve_device

CONFIG_METADATA_KEY = "page4d_ros.config"
"""safetensors metadata entry holding the JSON model config in files written by :func:`save_checkpoint`."""
INFERENCE_METADATA_KEY = "page4d_ros.inference"
"""safetensors metadata entry with the inference settings the model was trained for (``model_long_side``)."""

SKIPPED_PREFIXES = (TRACK_HEAD_PREFIX,)
_STRIPPED_PREFIXES = ("module.", "_orig_mod.")
_WRAPPER_KEYS = ("model", "state_dict")
_MASK_HEAD_PREFIX = "aggregator.spatial_mask_head."
_PI3_KEY = "point_decoder.projects.weight"  # only π³ has per-frame transformer decoders
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_ALLOWED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_MAX_LISTED_KEYS = 20
_KNOWN_REPO_TYPES = {"zhouk777/PAGE4D": "dataset"}


def resolve_config(config: str | Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a preset name or config dict of any family (π³ or VGGT-Omega when it names one, else VGGT /
    PAGE-4D)."""
    if pi3.is_pi3_config(config):
        return pi3.resolve_config(config)
    if vggt_omega.is_vggt_omega_config(config):
        return vggt_omega.resolve_config(config)
    return resolve_vggt_config(config)


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, read, verified or matched to the network."""


@dataclass
class CheckpointReport:
    """What :func:`load_checkpoint` did.

    Attributes:
        source: the path or repo id given.
        path: the file read.
        file_format: ``"pt"`` or ``"safetensors"``.
        config: the resolved model config used.
        config_source: ``"argument"``, ``"file metadata"`` or ``"inferred from keys (<preset>)"``.
        loaded_keys: number of tensors loaded into the network.
        skipped_keys: checkpoint keys deliberately not loaded (the track head).
        wrapper_key: the top-level entry holding the state_dict (``"model"``), or None for a bare state_dict.
        ignored_entries: other top-level entries (optimizer, epoch, ...) or non-tensor entries.
        stripped_prefixes: key prefixes removed (``"module."``, ...).
        file_dtypes: dtypes found in the file.
        dtype: parameter dtype of the returned model.
        device: device of the returned model.
        sha256: the verified digest when one was requested.
        notes: human-readable remarks (e.g. the chosen mask strength).
        inference: inference settings stored with the weights by :func:`save_checkpoint` (e.g.
            ``{"model_long_side": 112}`` for a model trained at 112 x 84); empty when the file has none.
    """

    source: str
    path: Path
    file_format: str
    config: dict[str, Any]
    config_source: str
    loaded_keys: int
    skipped_keys: list[str] = field(default_factory=list)
    wrapper_key: str | None = None
    ignored_entries: list[str] = field(default_factory=list)
    stripped_prefixes: list[str] = field(default_factory=list)
    file_dtypes: list[str] = field(default_factory=list)
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    sha256: str | None = None
    notes: list[str] = field(default_factory=list)
    inference: dict[str, Any] = field(default_factory=dict)


def _list_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return shown + (f", ... ({more} more)" if more > 0 else "")


def huggingface_cache_dir() -> Path:
    """The local Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg_cache).expanduser() if xdg_cache else Path.home() / ".cache"
    return base / "huggingface" / "hub"


_REPO_ID = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*)/([\w.-]+)(?:/(.+))?$")


def _download_hint(repo: str, filename: str | None) -> str:
    command = f"huggingface-cli download {repo} {filename or 'model.pt'}"
    repo_type = _KNOWN_REPO_TYPES.get(repo)
    if repo_type:
        example = f"`{command} --repo-type {repo_type}`"
    else:
        example = f"`{command}` (with `--repo-type dataset` for a dataset repo)"
    return f"download it first (this loader works offline), e.g. {example}, or pass a downloaded file's path"


def _snapshot_dirs(repo_dir: Path) -> list[Path]:
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text().strip()
        if (repo_dir / "snapshots" / commit).is_dir():
            return [repo_dir / "snapshots" / commit]
    snapshots = [path for path in (repo_dir / "snapshots").glob("*") if path.is_dir()]
    return sorted(snapshots, key=lambda path: path.stat().st_mtime, reverse=True)


def _pick_weight_file(snapshot: Path, repo: str) -> Path | None:
    candidates = sorted(
        path for path in snapshot.rglob("*") if path.name.endswith(_WEIGHT_SUFFIXES) and path.is_file()
    )
    for preferred in ("model.safetensors", "model.pt"):
        if (snapshot / preferred).is_file():
            return snapshot / preferred
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = [str(path.relative_to(snapshot)) for path in candidates]
        raise CheckpointError(
            f"the cached Hugging Face repo {repo} holds several weight files {names}; "
            f"name one as '{repo}/<file>'"
        )
    return None


def resolve_checkpoint_path(path_or_id: str | os.PathLike[str]) -> Path:
    """Resolve a local file path, or a Hugging Face repo id from the local HF cache (never the network).

    Repo ids are ``owner/name`` (the repo's only weight file, or ``model.safetensors`` / ``model.pt``) or
    ``owner/name/<file>``; model and dataset repos are both searched, at the revision ``refs/main`` names.

    Raises:
        CheckpointError: nothing found; the message says how to download the file.
    """
    text = os.fspath(path_or_id)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise CheckpointError(f"checkpoint path {text!r} is not a regular file")
    match = _REPO_ID.match(text)
    if match is None or text.startswith((".", "/", "~")):
        raise CheckpointError(f"checkpoint file {text!r} does not exist")
    owner, name, filename = match.groups()
    repo = f"{owner}/{name}"
    cache = huggingface_cache_dir()
    for kind in ("models", "datasets"):
        repo_dir = cache / f"{kind}--{owner}--{name}"
        for snapshot in _snapshot_dirs(repo_dir) if repo_dir.is_dir() else []:
            if filename is not None:
                candidate = snapshot / filename
                if candidate.is_file():
                    return candidate
                continue
            picked = _pick_weight_file(snapshot, repo)
            if picked is not None:
                return picked
    what = f"file {filename!r} of " if filename else ""
    raise CheckpointError(
        f"{text!r} is neither a local file nor {what}a Hugging Face repo in the local cache {cache}; "
        + _download_hint(repo, filename)
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - not a dict
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read safetensors file {path}: {error}") from error
    return tensors, metadata


def _read_pickle(path: Path) -> Any:
    last_error: Exception | None = None
    for use_mmap in (True, False):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"cannot read {path} safely: it is not a valid checkpoint, or it holds objects other than "
                "tensors and plain containers, which are never unpickled (torch.load weights_only=True); "
                f"re-save the state_dict alone. Details: {error}"
            ) from error
        except (RuntimeError, OSError, EOFError, ValueError) as error:
            # Legacy (non-zip) files cannot be memory-mapped; retry once without mmap.
            last_error = error
    raise CheckpointError(f"cannot read checkpoint {path}: {last_error}") from last_error


def _unwrap(content: Any, report: CheckpointReport) -> dict[str, torch.Tensor]:
    if not isinstance(content, Mapping):
        raise CheckpointError(
            f"{report.path} does not hold a state_dict (got {type(content).__name__}); expected a dict of "
            "tensors or {'model': state_dict, ...}"
        )
    state: Mapping[str, Any] = content
    for wrapper in _WRAPPER_KEYS:
        if isinstance(content.get(wrapper), Mapping):
            state = content[wrapper]
            report.wrapper_key = wrapper
            report.ignored_entries.extend(sorted(str(key) for key in content if key != wrapper))
            break
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[str(key)] = value
        else:
            report.ignored_entries.append(str(key))
    if not tensors:
        raise CheckpointError(f"{report.path} contains no tensors")
    return tensors


def _strip_prefixes(state: dict[str, torch.Tensor], report: CheckpointReport) -> dict[str, torch.Tensor]:
    stripped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = key
        changed = True
        while changed:
            changed = False
            for prefix in _STRIPPED_PREFIXES:
                if new_key.startswith(prefix):
                    new_key = new_key[len(prefix) :]
                    changed = True
                    if prefix not in report.stripped_prefixes:
                        report.stripped_prefixes.append(prefix)
        if new_key in stripped:
            raise CheckpointError(f"key {new_key!r} appears more than once after removing prefixes")
        stripped[new_key] = value
    return stripped


def _expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    meta_model = build_model(config, device="meta")
    return {key: tuple(value.shape) for key, value in meta_model.state_dict().items()}


def _infer_config(
    state: dict[str, torch.Tensor], metadata: dict[str, str], report: CheckpointReport
) -> dict[str, Any]:
    if CONFIG_METADATA_KEY in metadata:
        try:
            config = resolve_config(json.loads(metadata[CONFIG_METADATA_KEY]))
        except (json.JSONDecodeError, ValueError) as error:
            raise CheckpointError(
                f"invalid model config in the metadata of {report.path}: {error}"
            ) from error
        report.config_source = "file metadata"
        return config
    has_mask_head = any(key.startswith(_MASK_HEAD_PREFIX) for key in state)
    preset = "page4d-nomask" if has_mask_head else "vggt-1b"
    if _PI3_KEY in state:
        preset = "pi3"
    preset = vggt_omega.preset_for_keys(state) or preset
    if has_mask_head:
        report.notes.append(
            "PAGE-4D checkpoints do not store the mask strength: using the nomask variant (mask_alpha 0, "
            "plain VGGT attention; dynamics_map is still produced). Pass config='page4d-mask' for "
            "checkpoint_mask.pt."
        )
    expected = _expected_shapes(resolve_config(preset))
    mismatched = [
        key for key, value in state.items() if key in expected and tuple(value.shape) != expected[key]
    ]
    if mismatched:
        raise CheckpointError(
            f"{report.path} has no stored config and its shapes do not match the {preset!r} preset "
            f"(e.g. {_list_keys(mismatched)}); pass config= (a preset name or dict) describing the network"
        )
    report.config_source = f"inferred from keys ({preset})"
    return resolve_config(preset)


def _match_keys(
    state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], report: CheckpointReport
) -> dict[str, torch.Tensor]:
    report.skipped_keys = sorted(key for key in state if key.startswith(SKIPPED_PREFIXES))
    kept = {key: value for key, value in state.items() if not key.startswith(SKIPPED_PREFIXES)}
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_list_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_list_keys(unexpected)}")
        hint = ""
        if missing and unexpected:
            hint = " (a renamed key shows up as one missing and one unexpected key)"
        elif unexpected and any(key.startswith(_MASK_HEAD_PREFIX) for key in unexpected):
            hint = " (the file has a PAGE-4D mask head: use config 'page4d-nomask' or 'page4d-mask')"
        raise CheckpointError(
            f"{report.path} does not match the network: " + "; ".join(parts) + hint + "; nothing was loaded"
        )
    wrong_shapes = [
        f"{key} {tuple(value.shape)} != {expected[key]}"
        for key, value in kept.items()
        if tuple(value.shape) != expected[key]
    ]
    if wrong_shapes:
        raise CheckpointError(
            f"{report.path} has tensors of the wrong shape for this config: {_list_keys(wrong_shapes)}"
        )
    return kept


def load_checkpoint(
    path_or_id: str | os.PathLike[str],
    config: str | Mapping[str, Any] | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    sha256: str | None = None,
) -> tuple[nn.Module, CheckpointReport]:
    """Load a checkpoint strictly into a new network in eval mode.

    Args:
        path_or_id: ``.pt``/``.pth``/``.safetensors`` file, or a Hugging Face repo id in the local cache.
        config: preset name or config dict; None uses the config stored by :func:`save_checkpoint`, else
            infers ``"vggt-1b"`` or, when mask-head keys are present, ``"page4d-nomask"`` (the mask strength
            is not stored in the released files; see the report's notes), ``"pi3"`` for π³ keys, or
            ``"vggt-omega"`` / ``"vggt-omega-text"`` from VGGT-Omega keys.
        device: device of the returned model.
        dtype: parameter dtype (float32 when None; bfloat16/float16 halve the memory).
        sha256: expected hex digest of the file; verified before reading.

    Returns:
        ``(model, report)``.

    Raises:
        CheckpointError: any failure (file not found, digest mismatch, unreadable file, key/shape mismatch).
        ValueError: invalid ``config``, ``dtype`` or ``device``.
    """
    target_dtype = torch.float32 if dtype is None else dtype
    if target_dtype not in _ALLOWED_DTYPES:
        raise ValueError(f"dtype must be one of {[str(d) for d in _ALLOWED_DTYPES]}, got {dtype}")
    target_device = resolve_device(device)
    path = resolve_checkpoint_path(path_or_id)
    file_format = "safetensors" if path.suffix == ".safetensors" else "pt"
    report = CheckpointReport(
        source=os.fspath(path_or_id),
        path=path,
        file_format=file_format,
        config={},
        config_source="argument",
        loaded_keys=0,
        dtype=target_dtype,
        device=str(target_device),
    )
    if sha256 is not None:
        expected_digest = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", expected_digest):
            raise ValueError(f"sha256 must be 64 hexadecimal characters, got {sha256!r}")
        actual = file_sha256(path)
        if actual != expected_digest:
            raise CheckpointError(
                f"sha256 mismatch for {path}: expected {expected_digest}, got {actual}; the file is corrupt "
                "or a different version: download it again"
            )
        report.sha256 = actual

    metadata: dict[str, str] = {}
    if file_format == "safetensors":
        raw, metadata = _read_safetensors(path)
    else:
        raw = _read_pickle(path)
    state = _strip_prefixes(_unwrap(raw, report), report)
    report.file_dtypes = sorted({str(value.dtype) for value in state.values()})

    if config is not None:
        resolved = resolve_config(config)
    else:
        resolved = _infer_config(state, metadata, report)
    report.config = resolved
    report.inference = _inference_settings(metadata, path)
    kept = _match_keys(state, _expected_shapes(resolved), report)

    model = build_model(resolved, device="meta")
    casted = {
        key: value.to(target_dtype) if value.is_floating_point() else value for key, value in kept.items()
    }
    model.load_state_dict(casted, strict=True, assign=True)
    report.loaded_keys = len(casted)
    return model.to(target_device).eval(), report


def _inference_settings(metadata: Mapping[str, str], path: Path) -> dict[str, Any]:
    """The inference settings stored in a file's metadata (a JSON object), or ``{}``."""
    text = metadata.get(INFERENCE_METADATA_KEY)
    if text is None:
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(
            f"{path}: metadata '{INFERENCE_METADATA_KEY}' is not valid JSON: {error}"
        ) from error
    if not isinstance(settings, dict):
        raise CheckpointError(f"{path}: metadata '{INFERENCE_METADATA_KEY}' must be a JSON object")
    return settings


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike[str],
    config: str | Mapping[str, Any] | None = None,
    inference: Mapping[str, Any] | None = None,
) -> Path:
    """Write the model's state_dict as safetensors with the model config as JSON metadata.

    Args:
        model: the network.
        path: destination ending in ``.safetensors`` (parent folders are created).
        config: the config describing ``model`` (default: ``model.config``); it must match its keys/shapes.
        inference: JSON-serialisable inference settings to store beside the config (read back as
            ``CheckpointReport.inference``), e.g. ``{"model_long_side": 112}``.

    Returns:
        The written path.

    Raises:
        ValueError: wrong suffix, or a config that does not describe ``model``.
    """
    destination = Path(path)
    if destination.suffix != ".safetensors":
        raise ValueError(f"save_checkpoint writes safetensors files; use a '.safetensors' path, got {path}")
    resolved = resolve_config(config if config is not None else model.config)
    state = model.state_dict()
    expected = _expected_shapes(resolved)
    actual = {key: tuple(value.shape) for key, value in state.items()}
    if actual != expected:
        differing = sorted(set(actual) ^ set(expected)) or sorted(
            k for k in actual if actual[k] != expected[k]
        )
        raise ValueError(f"config does not describe this model (differs at {_list_keys(differing)})")
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state.items()}
    destination.parent.mkdir(parents=True, exist_ok=True)
    metadata = {CONFIG_METADATA_KEY: json.dumps(resolved), "format": "pt"}
    if inference:
        metadata[INFERENCE_METADATA_KEY] = json.dumps(dict(inference))
    save_file(tensors, str(destination), metadata=metadata)
    return destination
