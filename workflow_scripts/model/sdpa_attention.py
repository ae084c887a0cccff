"""Core attention of the local (CPU) layer spec on torch's fused scaled_dot_product_attention.

megatron-core's local DotProductAttention materialises the [b, heads, s, s] scores, masks and softmaxes them in
separate kernels and repeats the key/value heads for GQA; on a CPU that is most of a small model's step. SDPA does the
same arithmetic in one fused kernel (flash attention on CPU, causal blocks skipped). Same interface and numerics (fp32).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention


class SdpaDotProductAttention(DotProductAttention):
    """query [sq, b, np, hn], key/value [sk, b, ng, hn] -> context [sq, b, np * hn].

    `attention_mask` is megatron's boolean mask (True = masked) or None. None means causal: with sq == sk the usual
    lower triangle; with sq < sk (generation with a KV cache) the queries are the last sq positions, so query i sees
    keys 0 .. sk - sq + i.
    """

    def forward(self, query, key, value, attention_mask: Optional[torch.Tensor], attn_mask_type=None,
                attention_bias=None, packed_seq_params=None):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SdpaDotProductAttention: packed sequences and attention bias need the TE spec")
        sq, sk = query.shape[0], key.shape[0]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, hn]
        allowed = None
        causal = False
        if attention_mask is not None:
            allowed = ~attention_mask
        elif sq == sk:
            causal = True
        elif sq > 1:
            allowed = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(diagonal=sk - sq)
        dropout = self.attention_dropout.p if self.training else 0.0
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, is_causal=causal,
                                                 scale=self.softmax_scale, enable_gqa=k.shape[1] != q.shape[1])
        b, heads, _, hn = context.shape
        return context.permute(2, 0, 1, 3).reshape(sq, b, heads * hn)
