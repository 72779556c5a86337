#!/usr/bin/python3
"""Reference for tests/test_dpo.c: DPO loss, TRL's metrics and every
parameter gradient for tests/fixtures/tiny-llama, in plain PyTorch float64
(the model code of llama_ref.py; no transformers, no TRL).

Three pairs of token ids shaped like multi-turn conversations (prompt,
chosen, rejected). The policy is tiny-llama as stored; the reference is
the policy with every tensor perturbed by N(0, 0.01^2) noise (seeded), so
policy and reference differ. Each side is run as its own sequence
[prompt | answer] (the prompt twice, as TRL), and log pi(answer|prompt) is
the sum of log-softmax over the answer's tokens.

Loss (TRL DPOTrainer, loss_type=["sigmoid", "sft"], loss_weights=[1, 0.5],
beta 0.5, label_smoothing 0.1):
    h = (pc - rc) - (pr - rr)
    sigmoid = mean_i[-logsig(b h)(1-ls) - logsig(-b h) ls]
    sft     = -sum_i pc_i / sum_i nc_i        (mean NLL over chosen tokens)
and, for the same logps, the value of every other loss type alone.

Writes tests/fixtures/dpo/:
  dpo.json           pairs, beta, label smoothing, policy and reference
                     log-probs, the loss, the metrics, the other losses
  grads.safetensors  d loss / d param for every tensor (F32, HF names)

Run: /usr/bin/python3 tests/ref/dpo_ref.py tests/fixtures/dpo
"""
import json
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_ref  # noqa: E402
from make_fixtures import write_safetensors  # noqa: E402

torch.set_default_dtype(torch.float64)
HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "fixtures", "tiny-llama")
BETA, LS = 0.5, 0.1
SEED = 20261203


def read_safetensors(path):
    """name -> float64 tensor (F32 files only)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for name, t in hdr.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", name
        a, b = t["data_offsets"]
        buf = bytearray(raw[8 + n + a:8 + n + b])
        out[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(
            t["shape"]).to(torch.float64)
    return out


def load_cfg():
    with open(os.path.join(TINY, "config.json")) as f:
        c = json.load(f)
    return {
        "dim": c["hidden_size"], "hidden_dim": c["intermediate_size"],
        "n_layers": c["num_hidden_layers"],
        "n_heads": c["num_attention_heads"],
        "n_kv_heads": c["num_key_value_heads"],
        "head_dim": c["hidden_size"] // c["num_attention_heads"],
        "vocab_size": c["vocab_size"], "norm_eps": c["rms_norm_eps"],
        "rope_theta": c["rope_theta"], "rope": "half",
        "tied": c["tie_word_embeddings"], "qkv_bias": False,
    }


def make_pairs(gen, V):
    """Prompts that look like system/user/assistant/user turns: marker ids
    1..4 between runs of ordinary ids; answers end with id 2 (eos)."""
    def ids(n):
        return [int(x) for x in torch.randint(5, V, (n,), generator=gen)]

    pairs = []
    for turns, (la, lb) in ((2, (6, 9)), (3, (4, 3)), (1, (11, 7))):
        prompt = [1]
        for t in range(turns):
            prompt += [3] + ids(3 + 2 * t) + [4]
        prompt += [3]
        pairs.append({"prompt": prompt, "chosen": ids(la - 1) + [2],
                      "rejected": ids(lb - 1) + [2]})
    return pairs


def answer_logp(cfg, w, prompt, answer):
    logits = llama_ref.forward(cfg, w, prompt + answer)
    lp = torch.log_softmax(logits, dim=-1)
    n = len(prompt)
    return sum(lp[n - 1 + j, answer[j]] for j in range(len(answer)))


def logsig(x):
    return torch.nn.functional.logsigmoid(x)


def losses(pc, pr, rc, rr, nc, nr):
    h = (pc - rc) - (pr - rr)
    hn = (pc - rc) / nc - (pr - rr) / nr
    b, ls = BETA, LS
    out = {
        "sigmoid": (-logsig(b * h) * (1 - ls) - logsig(-b * h) * ls).mean(),
        "robust": (((1 - ls) * -logsig(b * h) + ls * logsig(-b * h))
                   / (1 - 2 * ls)).mean(),
        "hinge": torch.relu(1 - b * h).mean(),
        "ipo": ((hn - 1 / (2 * b)) ** 2).mean(),
        "sigmoid_norm": (-logsig(b * hn) * (1 - ls)
                         - logsig(-b * hn) * ls).mean(),
        "sft": -pc.sum() / nc.sum(),
    }
    return out


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/dpo"
    os.makedirs(outdir, exist_ok=True)
    cfg = load_cfg()
    w = read_safetensors(os.path.join(TINY, "model.safetensors"))
    gen = torch.Generator().manual_seed(SEED)
    ref = {k: v + 0.01 * torch.randn(v.shape, generator=gen)
           for k, v in sorted(w.items())}
    pairs = make_pairs(gen, cfg["vocab_size"])
    params = {k: v.clone().requires_grad_(True) for k, v in w.items()}

    pc = torch.stack([answer_logp(cfg, params, p["prompt"], p["chosen"])
                      for p in pairs])
    pr = torch.stack([answer_logp(cfg, params, p["prompt"], p["rejected"])
                      for p in pairs])
    with torch.no_grad():
        rc = torch.stack([answer_logp(cfg, ref, p["prompt"], p["chosen"])
                          for p in pairs])
        rr = torch.stack([answer_logp(cfg, ref, p["prompt"], p["rejected"])
                          for p in pairs])
    nc = torch.tensor([float(len(p["chosen"])) for p in pairs])
    nr = torch.tensor([float(len(p["rejected"])) for p in pairs])
    ls_all = losses(pc, pr, rc, rr, nc, nr)
    loss = ls_all["sigmoid"] + 0.5 * ls_all["sft"]
    loss.backward()

    chosen_r = BETA * (pc - rc).detach()
    rejected_r = BETA * (pr - rr).detach()
    doc = {
        "beta": BETA, "label_smoothing": LS,
        "loss_type": "sigmoid,sft", "loss_weights": "1,0.5",
        "pairs": pairs,
        "policy_chosen": pc.tolist(), "policy_rejected": pr.tolist(),
        "ref_chosen": rc.tolist(), "ref_rejected": rr.tolist(),
        "loss": loss.item(),
        "metrics": {
            "rewards/chosen": chosen_r.mean().item(),
            "rewards/rejected": rejected_r.mean().item(),
            "rewards/margins": (chosen_r - rejected_r).mean().item(),
            "rewards/accuracies":
                (chosen_r > rejected_r).double().mean().item(),
            "logps/chosen": pc.mean().item(),
            "logps/rejected": pr.mean().item(),
        },
        "losses": {k: v.item() for k, v in ls_all.items()},
    }
    with open(os.path.join(outdir, "dpo.json"), "w") as f:
        json.dump(doc, f, indent=1)
    grads = {k: v.grad.to(torch.float32) for k, v in params.items()}
    write_safetensors(os.path.join(outdir, "grads.safetensors"), grads,
                      bf16=False)
    print("loss %.9f, %d tensors" % (loss.item(), len(grads)))


if __name__ == "__main__":
    main()
