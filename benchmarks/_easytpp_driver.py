"""Times EasyTPP's training step; run by ``benchmarks/tpp_vs_easytpp.py`` inside EasyTPP's own virtualenv.

    OMP_NUM_THREADS=1 benchmarks/_work/easytpp-venv/bin/python benchmarks/_easytpp_driver.py \
        --data DIR --model NHP --num-types 3 [--hidden 32 --time-emb 16 --layers 2 --heads 2 --samples 20
        --batch-size 256 --warmup 1 --batches 4 --seed 0]

Reads ``DIR/train.pkl`` (the Gatech pickle EasyTPP reads) through EasyTPP's own ``TPPDataLoader`` (its
tokenizer pads and builds the attention masks), builds the model from a ``ModelConfig`` with
``BaseModel.generate_model_from_config`` and repeats the step of ``easy_tpp/model_wrapper.py::run_batch``:
``loss, n = model.loglike_loss(**batch); opt.zero_grad(); (loss / n).backward(); opt.step()`` with Adam.
Batches are collated before the clock starts; the first ``warmup`` steps are not timed. Prints one JSON line.
With ``--profile`` the timed batches are then run once more under torch's profiler (``op_groups``, also used for
our side by ``tpp_vs_easytpp.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.metadata import version

import torch

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm")


def op_groups(step, batches: list) -> dict:
    """Self CPU milliseconds per step, by op group, of ``step`` over ``batches`` under torch's profiler: matrix
    products (forward and backward), fused attention kernels (SDPA, forward and backward), everything else.
    The profiler inflates small elementwise ops several times, so "other" and "total" are upper bounds; the
    matmul and attention kernels are few and long, so their times are close to the unprofiled ones."""
    from torch.profiler import profile

    with profile() as prof:
        for b in batches:
            step(b)
    out = dict.fromkeys(("matmul", "attention", "other"), 0.0)
    for e in prof.key_averages():
        group = "matmul" if e.key in MATMUL else "attention" if "scaled_dot_product" in e.key else "other"
        out[group] += e.self_cpu_time_total / 1e3 / len(batches)
    out["total"] = sum(out.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, choices=["NHP", "THP", "AttNHP"])
    ap.add_argument("--num-types", type=int, required=True)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--time-emb", type=int, default=16)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="then profile the timed steps once more (op_groups)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    from easy_tpp.config_factory import DataConfig, ModelConfig
    from easy_tpp.config_factory.data_config import DataSpecConfig
    from easy_tpp.model import BaseModel
    from easy_tpp.preprocess import TPPDataLoader

    K = args.num_types
    pkl = f"{args.data}/train.pkl"
    specs = DataSpecConfig(num_event_types=K, pad_token_id=K, padding_side="right", truncation_side="right")
    data_cfg = DataConfig(train_dir=pkl, valid_dir=pkl, test_dir=pkl, data_format="pkl", specs=specs)
    loader = TPPDataLoader(data_cfg, backend="torch", batch_size=args.batch_size).train_loader(shuffle=False)
    need = args.warmup + args.batches
    batches = []
    for b in loader:
        batches.append({k: v for k, v in b.items()})
        if len(batches) == need:
            break
    if len(batches) < need:
        raise SystemExit(f"only {len(batches)} batches of {args.batch_size} in {pkl}; need {need}")

    cfg = ModelConfig(model_id=args.model, hidden_size=args.hidden, time_emb_size=args.time_emb,
                      num_layers=args.layers, num_heads=args.heads, loss_integral_num_sample_per_step=args.samples,
                      use_mc_samples=True, dropout_rate=0.0, use_ln=False, thinning=None, gpu=-1,
                      num_event_types=K, num_event_types_pad=K + 1, event_pad_index=K)
    model = BaseModel.generate_model_from_config(cfg)
    model.train(True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch: dict) -> float:
        loss, n = model.loglike_loss(**batch)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
        return float(loss.detach()) / n

    for b in batches[:args.warmup]:
        step(b)
    timed = batches[args.warmup:]
    events = int(sum(int(b["seq_non_pad_mask"].sum()) for b in timed))
    t0, c0 = time.perf_counter(), time.process_time()
    losses = [step(b) for b in timed]
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    prof = op_groups(step, timed) if args.profile else None
    print(json.dumps({"profile_ms_per_step": prof, "side": "easytpp", "model": args.model, "events": events, "seconds": secs,
                      "events_per_s": events / secs, "cpu_seconds": cpu,
                      "events_per_cpu_s": events / cpu, "batches": len(timed), "first_loss": losses[0],
                      "last_loss": losses[-1], "params": sum(p.numel() for p in model.parameters()),
                      "easy_tpp": version("easy-tpp"), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
