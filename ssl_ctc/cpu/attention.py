"""WavLM's attention for the CPU path: projections as modules, a contiguous position gate.

Hugging Face's ``WavLMAttention`` calls ``F.multi_head_attention_forward`` with
the projection weights, so the CPU path's kernels never see them, and computes
the gated relative position bias as a broadcasting 4-D product (under bf16
autocast a strided copy plus ``bmm``, 7x slower than fp32).
``FastWavLMAttention`` is the same computation with the projections called as
modules (they run the path's kernel) and the gate as a contiguous 2-D product;
``CpuInferencePath`` swaps its class in and out.

Usage::

    attention.__class__ = FastWavLMAttention  # eval-mode forward, same outputs
"""

import torch
import torch.nn.functional as F
from transformers.models.wavlm.modeling_wavlm import WavLMAttention


class FastWavLMAttention(WavLMAttention):
    """WavLM's attention with the projections called as modules and a contiguous position gate.

    The same computation as ``WavLMAttention.forward`` in eval mode (which
    calls ``F.multi_head_attention_forward`` with the projection weights):
    gated relative position bias, padded keys masked, scaled dot-product
    attention. In training or when attention weights are asked for, Hugging
    Face's forward runs.

    Example
    -------
    >>> attention = WavLMAttention(embed_dim=32, num_heads=4, num_buckets=16, max_distance=20)
    >>> attention = attention.eval()
    >>> hidden = torch.randn(2, 9, 32)
    >>> mask = torch.ones(2, 9, dtype=torch.long)
    >>> mask[1, 6:] = 0
    >>> expected, _, bias = attention(hidden, attention_mask=mask)
    >>> attention.__class__ = FastWavLMAttention
    >>> output, _, fast_bias = attention(hidden, attention_mask=mask)
    >>> torch.allclose(output, expected, atol=1e-5), torch.equal(bias, fast_bias)
    (True, True)
    """

    def forward(self, hidden_states, attention_mask=None, position_bias=None,
                output_attentions=False, index=0):
        if self.training or output_attentions:
            return super().forward(hidden_states, attention_mask, position_bias,
                                   output_attentions, index)
        batch, frames, _ = hidden_states.shape
        heads, head_dim = self.num_heads, self.head_dim
        if position_bias is None:
            position_bias = self.compute_bias(frames, frames)
            position_bias = position_bias.unsqueeze(0).repeat(batch, 1, 1, 1).view(
                batch * heads, frames, frames)
        per_head = hidden_states.reshape(batch * frames * heads, head_dim)
        projected = self.gru_rel_pos_linear(per_head).view(batch, frames, heads, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(projected).chunk(2, dim=-1)  # [B, T, H, 1] each
        constant = self.gru_rel_pos_const.view(1, 1, heads, 1)
        gate = (gate_a * (gate_b * constant - 1.0) + 2.0).transpose(1, 2)  # [B, H, T, 1]
        bias = gate * position_bias.view(batch, heads, frames, frames)
        if attention_mask is not None and not bool(attention_mask.all()):  # padded keys
            bias.masked_fill_(attention_mask.ne(1)[:, None, None, :], float("-inf"))

        def split_heads(projection):
            return projection(hidden_states).view(batch, frames, heads, head_dim).transpose(1, 2)

        query, key, value = split_heads(self.q_proj), split_heads(self.k_proj), split_heads(
            self.v_proj)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype))
        output = self.out_proj(context.transpose(1, 2).reshape(batch, frames, heads * head_dim))
        return output, None, position_bias
