"""Times EasyTPP's training step; run by ``benchmarks/tpp_vs_easytpp.py`` inside EasyTPP's own virtualenv.

    OMP_NUM_THREADS=1 benchmarks/_work/easytpp-venv/bin/python benchmarks/_easytpp_driver.py \
        --data DIR --model NHP --num-types 3 [--hidden 32 --time-emb 16 --layers 2 --heads 2 --samples 20
        --batch-size 256 --warmup 1 --batches 4 --seed 0]

Reads ``DIR/train.pkl`` (the Gatech pickle EasyTPP reads) through EasyTPP's own ``TPPDataLoader`` (its
tokenizer pads and builds the attention masks), builds the model from a ``ModelConfig`` with
``BaseModel.generate_model_from_config`` and repeats the step of ``easy_tpp/model_wrapper.py::run_batch``:
``loss, n = model.loglike_loss(**batch); opt.zero_grad(); (loss / n).backward(); opt.step()`` with Adam.
Batches are collated before the clock starts; the first ``warmup`` steps are not timed. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib.metadata import version

import torch


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
    print(json.dumps({"side": "easytpp", "model": args.model, "events": events, "seconds": secs,
                      "events_per_s": events / secs, "cpu_seconds": cpu,
                      "events_per_cpu_s": events / cpu, "batches": len(timed), "first_loss": losses[0],
                      "last_loss": losses[-1], "params": sum(p.numel() for p in model.parameters()),
                      "easy_tpp": version("easy-tpp"), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
