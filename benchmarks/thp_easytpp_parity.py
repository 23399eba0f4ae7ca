"""Is our THP with ``blocks="easytpp"`` EasyTPP's THP encoder? Load EasyTPP 0.3.0's own layers (``baselayer.py``,
pure torch, read from the virtualenv of ``tpp_vs_easytpp.py``), give them our weights, and compare the per-type
head outputs w_k^T h(t_j) + b_k at every real position of a padded batch (issue 6).

    python benchmarks/thp_easytpp_parity.py [--hidden 32] [--layers 2] [--heads 2] [--types 3] [--seed 0]

EasyTPP's THP builds ``EncoderLayer(MultiHeadAttention(heads, d, d, output_linear=False), use_residual=False,
feed_forward=<one shared FFN>)`` per layer and adds ``TimePositionalEncoding(time)`` before each; its attention
mask is True where a key is hidden. Prints the largest absolute difference; exits 1 above ``--tol``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

from behaviorseq import models
from behaviorseq.nn.transformer import attention_mask

ROOT = Path(__file__).resolve().parents[1]
BASELAYER = ROOT / "benchmarks/_work/easytpp-venv/lib/python3.11/site-packages/easy_tpp/model/baselayer.py"


def easytpp_layers(path: Path):
    if not path.exists():
        raise SystemExit(f"EasyTPP's baselayer.py is not at {path}; install easy-tpp as tpp_vs_easytpp.py's docstring says")
    spec = importlib.util.spec_from_file_location("easytpp_baselayer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--types", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--baselayer", type=Path, default=BASELAYER)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    d, K = a.hidden, a.types
    ours = models.build("thp", K, {"blocks": "easytpp", "hidden_size": d, "num_layers": a.layers,
                                   "num_heads": a.heads, "inner_size": 2 * d, "dropout": 0.0}).eval()
    E = easytpp_layers(a.baselayer)
    ffn = torch.nn.Sequential(torch.nn.Linear(d, 2 * d), torch.nn.ReLU(), torch.nn.Linear(2 * d, d))
    layers = [E.EncoderLayer(d, E.MultiHeadAttention(a.heads, d, d, 0.0, output_linear=False), feed_forward=ffn,
                             use_residual=False, dropout=0.0) for _ in range(a.layers)]
    head = torch.nn.Linear(d, K)
    with torch.no_grad():  # our weights into EasyTPP's modules
        ffn.load_state_dict(ours.shared_ffn.state_dict())
        head.load_state_dict(ours.head.state_dict())
        for lay, attn in zip(layers, ours.attns):
            for lin, w, b in zip(lay.self_attn.linears, attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)):
                lin.weight.copy_(w), lin.bias.copy_(b)
    for lay in layers:
        lay.eval()

    B, L = 6, 20  # a padded batch: sequence b has L - 2b real events
    lengths = torch.tensor([L - 2 * b for b in range(B)])
    mask = torch.arange(L)[None] < lengths[:, None]
    dt = torch.rand(B, L) * mask
    dt[:, 0] = 0
    batch = {"time": dt.cumsum(1) * mask, "dtime": dt, "type": torch.where(mask, torch.randint(0, K, (B, L)), K),
             "mask": mask}
    with torch.no_grad():
        mine = ours.encode(batch)["base"]
        tem = E.TimePositionalEncoding(d)(batch["time"])
        x = ours.type_emb(batch["type"])
        hidden = ~attention_mask(mask, causal=True)[:, 0]  # [B, L, L], True = hidden (EasyTPP's convention)
        for lay in layers:
            x = lay(x + tem, mask=hidden)
        theirs = head(x)
    diff = (mine - theirs)[mask].abs().max().item()
    print(f"THP blocks=easytpp vs EasyTPP's layers, {int(mask.sum())} real positions: max |difference| {diff:.2e}")
    sys.exit(0 if diff <= a.tol else 1)


if __name__ == "__main__":
    main()
