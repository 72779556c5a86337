#!/usr/bin/python3
"""Reference for tests/test_train.c: a tiny Llama-family model in plain
PyTorch (float64, no transformers), with fixed seeded weights and tokens.

Writes tests/fixtures/train/<variant>.bin for two variants:
  gqa   dim 16, ffn 32, 2 layers, 4 heads, 2 kv heads, head 4, vocab 40,
        rotary half-split (Hugging Face), q/k/v biases, untied head; the
        second row packs two segments (attention kept inside each,
        positions restarting at 0).
  tied  the same sizes with 4 kv heads, interleaved rotary (llama2.c),
        no biases, head tied to the embedding; one segment per row.

File layout (little-endian):
  b"RLHITRF1", int32 n_params, B, T, V, n_steps
  float32 params[n_params]      canonical order of rlhi_model_tensor_list
  int32 tokens[B*T], targets[B*T] (-1 = not scored), seg[B*T]
  float32 logits[B*T*V]
  float64 loss                  mean cross-entropy over scored tokens
  float32 grads[n_params]       d loss / d params
  float64 step_loss[n_steps]    loss before each AdamW step
  float32 final_params[n_params] after the n_steps steps
AdamW: lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight decay 0.1 on 2-D
tensors only, clip_grad_norm_ 0.5, HF warmup+cosine (3 warmup of 10).

Run: /usr/bin/python3 tests/ref/train_ref.py tests/fixtures/train
"""
import math
import os
import struct
import sys

import torch

torch.set_default_dtype(torch.float64)

DIM, FFN, LAYERS, HEADS, HS, VOCAB, B, T = 16, 32, 2, 4, 4, 40, 2, 8
EPS, THETA = 1e-5, 10000.0
LR, WD, CLIP, WARMUP, STEPS = 1e-2, 0.1, 0.5, 3, 10


def make_params(kvh, bias, tied, gen):
    """Named parameters in rlhi's canonical order."""
    def mat(r, c):
        return torch.randn(r, c, generator=gen) * 0.3

    def norm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=gen)

    p = [("embed", mat(VOCAB, DIM))]
    for l in range(LAYERS):
        p.append((f"{l}.attn_norm", norm(DIM)))
        p.append((f"{l}.wq", mat(HEADS * HS, DIM)))
        p.append((f"{l}.wk", mat(kvh * HS, DIM)))
        p.append((f"{l}.wv", mat(kvh * HS, DIM)))
        if bias:
            p.append((f"{l}.bq", 0.1 * torch.randn(HEADS * HS, generator=gen)))
            p.append((f"{l}.bk", 0.1 * torch.randn(kvh * HS, generator=gen)))
            p.append((f"{l}.bv", 0.1 * torch.randn(kvh * HS, generator=gen)))
        p.append((f"{l}.wo", mat(DIM, HEADS * HS)))
        p.append((f"{l}.ffn_norm", norm(DIM)))
        p.append((f"{l}.w_gate", mat(FFN, DIM)))
        p.append((f"{l}.w_up", mat(FFN, DIM)))
        p.append((f"{l}.w_down", mat(DIM, FFN)))
    p.append(("final_norm", norm(DIM)))
    if not tied:
        p.append(("lm_head", mat(VOCAB, DIM)))
    return [(n, t.clone().requires_grad_(True)) for n, t in p]


def rmsnorm(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def rope(x, pos, interleaved):
    """x (B, H, T, HS), pos (B, T)."""
    half = HS // 2
    freq = 1.0 / THETA ** (torch.arange(half, dtype=torch.float64) * 2 / HS)
    ang = pos[:, None, :, None].double() * freq       # (B, 1, T, half)
    c, s = torch.cos(ang), torch.sin(ang)
    if interleaved:
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), -1).flatten(-2)
    x0, x1 = x[..., :half], x[..., half:]
    return torch.cat((x0 * c - x1 * s, x0 * s + x1 * c), -1)


def forward(P, tokens, seg, kvh, bias, tied, interleaved):
    d = dict(P)
    pos = torch.zeros_like(tokens)
    for b in range(B):
        start = 0
        for t in range(T):
            if t > 0 and seg[b, t] != seg[b, t - 1]:
                start = t
            pos[b, t] = t - start
    idx = torch.arange(T)
    mask = (idx[None, :, None] >= idx[None, None, :]) & \
        (seg[:, :, None] == seg[:, None, :])           # (B, Tq, Tk)
    x = d["embed"][tokens]
    for l in range(LAYERS):
        h = rmsnorm(x, d[f"{l}.attn_norm"])
        q = h @ d[f"{l}.wq"].T
        k = h @ d[f"{l}.wk"].T
        v = h @ d[f"{l}.wv"].T
        if bias:
            q, k, v = q + d[f"{l}.bq"], k + d[f"{l}.bk"], v + d[f"{l}.bv"]
        q = q.view(B, T, HEADS, HS).transpose(1, 2)
        k = k.view(B, T, kvh, HS).transpose(1, 2)
        v = v.view(B, T, kvh, HS).transpose(1, 2)
        q, k = rope(q, pos, interleaved), rope(k, pos, interleaved)
        k = k.repeat_interleave(HEADS // kvh, dim=1)
        v = v.repeat_interleave(HEADS // kvh, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(HS)
        att = att.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, HEADS * HS)
        x = x + y @ d[f"{l}.wo"].T
        h = rmsnorm(x, d[f"{l}.ffn_norm"])
        g = h @ d[f"{l}.w_gate"].T
        u = h @ d[f"{l}.w_up"].T
        x = x + (torch.nn.functional.silu(g) * u) @ d[f"{l}.w_down"].T
    x = rmsnorm(x, d["final_norm"])
    return x @ (d["embed"] if tied else d["lm_head"]).T


def variant(name, kvh, bias, tied, interleaved, packed, seed, outdir):
    gen = torch.Generator().manual_seed(seed)
    P = make_params(kvh, bias, tied, gen)
    tokens = torch.randint(0, VOCAB, (B, T), generator=gen)
    targets = torch.roll(tokens, -1, 1).clone()
    targets[:, -1] = -1
    targets[0, :2] = -1          # a prompt that is not scored
    seg = torch.zeros(B, T, dtype=torch.long)
    if packed:
        seg[1, 3:] = 1
        targets[1, 2] = -1       # no target across the segment boundary
    init = [t.detach().clone() for _, t in P]

    def loss_of(logits):
        return torch.nn.functional.cross_entropy(
            logits.view(-1, VOCAB), targets.view(-1), ignore_index=-1)

    logits = forward(P, tokens, seg, kvh, bias, tied, interleaved)
    loss = loss_of(logits)
    loss.backward()
    grads = [t.grad.detach().clone() for _, t in P]

    # 10 AdamW steps from the same start, on the same batch.
    for (_, t), i in zip(P, init):
        t.data.copy_(i)
        t.grad = None
    params = [t for _, t in P]
    decay = [t for t in params if t.dim() == 2]
    nodecay = [t for t in params if t.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.999), eps=1e-8)

    def lam(step):
        if step < WARMUP:
            return step / max(1, WARMUP)
        prog = (step - WARMUP) / max(1, STEPS - WARMUP)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 2.0 * 0.5 * prog)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    step_loss = []
    for _ in range(STEPS):
        opt.zero_grad()
        lo = loss_of(forward(P, tokens, seg, kvh, bias, tied, interleaved))
        lo.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        sched.step()
        step_loss.append(lo.item())

    def f32(ts):
        return b"".join(t.detach().reshape(-1).float().numpy().tobytes()
                        for t in ts)

    def i32(t):
        return t.reshape(-1).int().numpy().tobytes()

    n_params = sum(t.numel() for t in init)
    with open(os.path.join(outdir, name + ".bin"), "wb") as f:
        f.write(b"RLHITRF1")
        f.write(struct.pack("<5i", n_params, B, T, VOCAB, STEPS))
        f.write(f32(init))
        f.write(i32(tokens) + i32(targets) + i32(seg))
        f.write(f32([logits]))
        f.write(struct.pack("<d", loss.item()))
        f.write(f32(grads))
        f.write(struct.pack("<%dd" % STEPS, *step_loss))
        f.write(f32(params))
    print(name, "params", n_params, "loss", loss.item(),
          "after", STEPS, "steps", step_loss[-1])


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/train"
    os.makedirs(outdir, exist_ok=True)
    variant("gqa", 2, True, False, False, True, 1234, outdir)
    variant("tied", 4, False, True, True, False, 5678, outdir)


if __name__ == "__main__":
    main()
