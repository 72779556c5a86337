"""An independent, plain-PyTorch Llama-family forward pass (no transformers).

Used to make reference logits for rlhi's tests. Everything is written out
from the architecture's definition, in float64 by default:

  h = embed[tokens]
  per layer:
    x = rmsnorm(h) * attn_norm           rmsnorm(x) = x * rsqrt(mean(x^2)+eps)
    q, k, v = x Wq^T (+bq), x Wk^T (+bk), x Wv^T (+bv)
    q, k = rotary(q), rotary(k)          per head, theta^(-2i/HS)
    a = softmax(q k^T / sqrt(HS) + causal mask) v   (query head h reads
                                          kv head h // (NH/KVH))
    h = h + a Wo^T
    x = rmsnorm(h) * ffn_norm
    h = h + (silu(x Wgate^T) * (x Wup^T)) Wdown^T
  logits = (rmsnorm(h) * final_norm) Whead^T   (Whead = embed when tied)

Rotary conventions: "half" (Hugging Face) rotates (x[i], x[i+HS/2]);
"interleaved" (llama2.c, GGUF) rotates (x[2i], x[2i+1]).
Weights are a dict keyed by Hugging Face names
(model.layers.N.self_attn.q_proj.weight, ...).
"""
import math

import torch


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rotary(x, pos, theta, style):
    """x: (T, H, HS); pos: (T,) positions."""
    hs = x.shape[-1]
    inv = theta ** (-torch.arange(0, hs, 2, dtype=x.dtype) / hs)  # (HS/2)
    ang = pos.to(x.dtype)[:, None] * inv[None, :]                  # (T, HS/2)
    cos = torch.cos(ang)[:, None, :]
    sin = torch.sin(ang)[:, None, :]
    if style == "half":
        a, b = x[..., : hs // 2], x[..., hs // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    if style == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        out = torch.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out
    raise ValueError("unknown rotary style %r" % style)


def forward(cfg, w, tokens, dtype=torch.float64):
    """cfg: dict with dim, hidden_dim, n_layers, n_heads, n_kv_heads,
    head_dim, vocab_size, norm_eps, rope_theta, rope ('half' or
    'interleaved'), tied, qkv_bias. w: name -> tensor. tokens: list of ids.
    Returns (T, V) logits in `dtype`."""
    W = {k: v.to(dtype) for k, v in w.items()}
    nh, kvh, hs = cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    eps, theta = cfg["norm_eps"], cfg["rope_theta"]
    toks = torch.tensor(tokens, dtype=torch.long)
    T = len(tokens)
    pos = torch.arange(T)
    h = W["model.embed_tokens.weight"][toks]                       # (T, C)
    mask = torch.full((T, T), float("-inf"), dtype=dtype).triu(1)  # causal
    for l in range(cfg["n_layers"]):
        p = "model.layers.%d." % l
        x = rmsnorm(h, W[p + "input_layernorm.weight"], eps)
        q = x @ W[p + "self_attn.q_proj.weight"].T
        k = x @ W[p + "self_attn.k_proj.weight"].T
        v = x @ W[p + "self_attn.v_proj.weight"].T
        if cfg["qkv_bias"]:
            q = q + W[p + "self_attn.q_proj.bias"]
            k = k + W[p + "self_attn.k_proj.bias"]
            v = v + W[p + "self_attn.v_proj.bias"]
        q = rotary(q.view(T, nh, hs), pos, theta, cfg["rope"])
        k = rotary(k.view(T, kvh, hs), pos, theta, cfg["rope"])
        v = v.view(T, kvh, hs)
        out = torch.empty(T, nh, hs, dtype=dtype)
        for hh in range(nh):
            kv = hh // (nh // kvh)
            s = q[:, hh, :] @ k[:, kv, :].T / math.sqrt(hs) + mask  # (T, T)
            out[:, hh, :] = torch.softmax(s, dim=-1) @ v[:, kv, :]
        h = h + out.reshape(T, nh * hs) @ W[p + "self_attn.o_proj.weight"].T
        x = rmsnorm(h, W[p + "post_attention_layernorm.weight"], eps)
        g = x @ W[p + "mlp.gate_proj.weight"].T
        u = x @ W[p + "mlp.up_proj.weight"].T
        h = h + (g * torch.sigmoid(g) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rmsnorm(h, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight" if cfg["tied"] else "lm_head.weight"]
    return x @ head.T
