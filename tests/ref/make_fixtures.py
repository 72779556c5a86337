"""Writes rlhi's small model fixtures, deterministically.

Usage: /usr/bin/python3 tests/ref/make_fixtures.py OUTDIR   (make fixtures)

OUTDIR/tiny-llama/    config.json + model.safetensors (F32), Llama layout:
                      dim 64, 2 layers, 4 heads, 2 kv heads, ffn 160,
                      vocab 300, untied head, theta 1e4, half-split rotary
OUTDIR/tiny-qwen/     same sizes, Qwen2: q/k/v biases, tied embeddings,
                      BF16 safetensors, theta 1e6, eps 1e-6
OUTDIR/tiny-llama2c/  model.bin: tiny-llama's weights as a llama2.c legacy
                      checkpoint (negative vocab: unshared classifier), q/k
                      rows un-permuted to the interleaved rotary convention
Each folder has logits.json (prompts, shapes) and logits.bin: the (T, V)
logits of every prompt, computed by llama_ref.py in float64 from the
weights exactly as stored (BF16 rounding included), then stored as
little-endian float32, concatenated, row-major.
tiny-llama2c's logits must equal tiny-llama's: both conventions describe
the same function once the rows are permuted (checked here to 1e-9).

The safetensors writer below is written from the format's spec, not with
the safetensors package, so the C reader is tested against an
independent writer.
"""
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402

SEED = 20260312


def write_safetensors(path, tensors, bf16):
    """tensors: dict name -> float tensor. Header keys sorted by name (not
    the canonical order, on purpose), padded with spaces to 8 bytes."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, off = [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        if bf16:
            b = t.to(torch.bfloat16).view(torch.int16).numpy()
            b = b.astype("<i2").tobytes()
        else:
            b = t.to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "BF16" if bf16 else "F32",
                        "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_weights(cfg, gen):
    C, F, V = cfg["dim"], cfg["hidden_dim"], cfg["vocab_size"]
    Q = cfg["n_heads"] * cfg["head_dim"]
    KV = cfg["n_kv_heads"] * cfg["head_dim"]

    def normal(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    def norm_w(n):  # around 1, as trained RMSNorm gains are
        return 1.0 + normal(n, std=0.1)

    w = {"model.embed_tokens.weight": normal(V, C, std=0.5)}
    for l in range(cfg["n_layers"]):
        p = "model.layers.%d." % l
        w[p + "input_layernorm.weight"] = norm_w(C)
        w[p + "self_attn.q_proj.weight"] = normal(Q, C, std=0.08)
        w[p + "self_attn.k_proj.weight"] = normal(KV, C, std=0.08)
        w[p + "self_attn.v_proj.weight"] = normal(KV, C, std=0.08)
        if cfg["qkv_bias"]:
            w[p + "self_attn.q_proj.bias"] = normal(Q, std=0.1)
            w[p + "self_attn.k_proj.bias"] = normal(KV, std=0.1)
            w[p + "self_attn.v_proj.bias"] = normal(KV, std=0.1)
        w[p + "self_attn.o_proj.weight"] = normal(C, Q, std=0.08)
        w[p + "post_attention_layernorm.weight"] = norm_w(C)
        w[p + "mlp.gate_proj.weight"] = normal(F, C, std=0.08)
        w[p + "mlp.up_proj.weight"] = normal(F, C, std=0.08)
        w[p + "mlp.down_proj.weight"] = normal(C, F, std=0.08)
    w["model.norm.weight"] = norm_w(C)
    if not cfg["tied"]:
        w["lm_head.weight"] = normal(V, C, std=0.08)
    return w


def make_prompts(cfg, gen):
    out = []
    for n in (1, 7, 33):
        rest = torch.randint(3, cfg["vocab_size"], (n - 1,), generator=gen)
        out.append([1] + rest.tolist())
    return out


def write_logits(d, name, cfg, prompts, logits):
    desc = {
        "model": name,
        "about": "reference logits from tests/ref/llama_ref.py, float64 "
                 "forward, stored as float32",
        "file": "logits.bin",
        "dtype": "float32",
        "vocab_size": cfg["vocab_size"],
        "rope": cfg["rope"],
        "prompts": [],
    }
    off = 0
    with open(os.path.join(d, "logits.bin"), "wb") as f:
        for toks, lg in zip(prompts, logits):
            f.write(lg.to(torch.float32).numpy().astype("<f4").tobytes())
            desc["prompts"].append({"tokens": toks, "offset": off,
                                    "shape": list(lg.shape)})
            off += lg.numel()
    with open(os.path.join(d, "logits.json"), "w") as f:
        json.dump(desc, f, indent=1)
        f.write("\n")


def hf_config(cfg, arch, model_type, extra):
    c = {
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": cfg["dim"],
        "intermediate_size": cfg["hidden_dim"],
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": cfg["n_kv_heads"],
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg["max_seq_len"],
        "rms_norm_eps": cfg["norm_eps"],
        "rope_theta": cfg["rope_theta"],
        "tie_word_embeddings": cfg["tied"],
        "hidden_act": "silu",
        "rope_scaling": None,
    }
    c.update(extra)
    return c


def to_interleaved(w, n_heads, hs):
    """Inverse of transformers' convert_llama_weights_to_hf.py permute:
    rows (i, i+HS/2) of each head go back to (2i, 2i+1)."""
    rows, cols = w.shape
    return w.view(n_heads, 2, hs // 2, cols).transpose(1, 2).reshape(rows, cols)


def write_llama2c(path, cfg, w):
    L, hs = cfg["n_layers"], cfg["head_dim"]

    def f32(t):
        return t.to(torch.float32).contiguous().numpy().astype("<f4").tobytes()

    def layers(suffix, fn=lambda t: t):
        return b"".join(f32(fn(w["model.layers.%d.%s" % (l, suffix)]))
                        for l in range(L))

    # llama2.c model.py precompute_freqs_cis(head_dim, max_seq_len)
    freqs = 1.0 / (10000.0 ** (torch.arange(0, hs, 2)[: hs // 2].double() / hs))
    ang = torch.outer(torch.arange(cfg["max_seq_len"]).double(), freqs)
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", cfg["dim"], cfg["hidden_dim"], L,
                            cfg["n_heads"], cfg["n_kv_heads"],
                            -cfg["vocab_size"], cfg["max_seq_len"]))
        f.write(f32(w["model.embed_tokens.weight"]))
        f.write(layers("input_layernorm.weight"))
        f.write(layers("self_attn.q_proj.weight",
                       lambda t: to_interleaved(t, cfg["n_heads"], hs)))
        f.write(layers("self_attn.k_proj.weight",
                       lambda t: to_interleaved(t, cfg["n_kv_heads"], hs)))
        f.write(layers("self_attn.v_proj.weight"))
        f.write(layers("self_attn.o_proj.weight"))
        f.write(layers("post_attention_layernorm.weight"))
        f.write(layers("mlp.gate_proj.weight"))   # w1
        f.write(layers("mlp.down_proj.weight"))   # w2
        f.write(layers("mlp.up_proj.weight"))     # w3
        f.write(f32(w["model.norm.weight"]))
        f.write(f32(torch.cos(ang)))
        f.write(f32(torch.sin(ang)))
        f.write(f32(w["lm_head.weight"]))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_fixtures.py OUTDIR")
    out = sys.argv[1]
    gen = torch.Generator().manual_seed(SEED)
    base = dict(dim=64, hidden_dim=160, n_layers=2, n_heads=4, n_kv_heads=2,
                head_dim=16, vocab_size=300, max_seq_len=128)

    # tiny-llama: F32, untied, half-split rotary.
    cfg = dict(base, norm_eps=1e-5, rope_theta=10000.0, rope="half",
               tied=False, qkv_bias=False)
    w = make_weights(cfg, gen)
    w = {k: v.to(torch.float32).double() for k, v in w.items()}  # as stored
    prompts = make_prompts(cfg, gen)
    d = os.path.join(out, "tiny-llama")
    os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(d, "model.safetensors"), w, bf16=False)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(cfg, "LlamaForCausalLM", "llama", {
            "bos_token_id": 1, "eos_token_id": 2, "attention_bias": False,
            "mlp_bias": False, "torch_dtype": "float32"}), f, indent=2)
        f.write("\n")
    llama_logits = [llama_ref.forward(cfg, w, p) for p in prompts]
    write_logits(d, "tiny-llama", cfg, prompts, llama_logits)

    # tiny-llama2c: the same function in llama2.c's file and convention.
    cfg2 = dict(cfg, rope="interleaved")
    w2 = dict(w)
    for l in range(cfg["n_layers"]):
        p = "model.layers.%d.self_attn." % l
        w2[p + "q_proj.weight"] = to_interleaved(w[p + "q_proj.weight"], 4, 16)
        w2[p + "k_proj.weight"] = to_interleaved(w[p + "k_proj.weight"], 2, 16)
    d = os.path.join(out, "tiny-llama2c")
    os.makedirs(d, exist_ok=True)
    write_llama2c(os.path.join(d, "model.bin"), cfg, w)
    l2 = [llama_ref.forward(cfg2, w2, p) for p in prompts]
    for a, b in zip(l2, llama_logits):
        assert (a - b).abs().max().item() < 1e-9, "rotary permutation broken"
    write_logits(d, "tiny-llama2c", cfg2, prompts, l2)

    # tiny-qwen: BF16, tied, q/k/v biases, theta 1e6.
    cfg = dict(base, norm_eps=1e-6, rope_theta=1000000.0, rope="half",
               tied=True, qkv_bias=True)
    w = make_weights(cfg, gen)
    w = {k: v.to(torch.bfloat16).double() for k, v in w.items()}  # as stored
    prompts = make_prompts(cfg, gen)
    d = os.path.join(out, "tiny-qwen")
    os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(d, "model.safetensors"), w, bf16=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(cfg, "Qwen2ForCausalLM", "qwen2", {
            "bos_token_id": 1, "eos_token_id": [2, 3],
            "use_sliding_window": False, "sliding_window": 128,
            "max_window_layers": 2, "torch_dtype": "bfloat16"}), f, indent=2)
        f.write("\n")
    write_logits(d, "tiny-qwen", cfg,
                 prompts, [llama_ref.forward(cfg, w, p) for p in prompts])


if __name__ == "__main__":
    main()
