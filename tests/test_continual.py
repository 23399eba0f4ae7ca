"""The continual-learning protocol (train.continual) and ``behaviorseq continual``."""

import json

import numpy as np
import pytest
import torch

from behaviorseq import models
from behaviorseq.cli import main
from behaviorseq.config import TrainConfig
from behaviorseq.tasks.tpp import TPPTaskConfig
from behaviorseq.train.continual import run_continual, summarize, synthetic_stream

CFG = TrainConfig(epochs=2, batch_size=16, lr=3e-3, early_stop_metric="loglik", patience=2, device="cpu", seed=0)
TASK = TPPTaskConfig(predict_roles=[])


@pytest.fixture(scope="module")
def stream():
    return synthetic_stream(num_types=2, schedule=(0, 1, 0), n_seqs=40, max_events=12, seed=0)


def test_summarize_by_hand():
    R = np.array([[-1.0, -3.0, -2.0],
                  [-2.0, -1.5, -2.5],
                  [-1.5, -2.5, -1.2]])
    s = summarize(R)
    assert s["current"] == pytest.approx((-1.0 - 1.5 - 1.2) / 3)
    assert s["final"] == pytest.approx((-1.5 - 2.5 - 1.2) / 3)
    assert s["final_earlier"] == pytest.approx((-1.5 - 2.5) / 2)
    assert s["forgetting"] == pytest.approx(((-1.0 + 1.5) + (-1.5 + 2.5)) / 2)
    assert s["next"] == pytest.approx((-3.0 - 2.5) / 2)  # R[0][1], R[1][2]: each window before training on it


def test_stream_regimes_follow_the_schedule(stream):
    regimes, windows = stream
    assert len(regimes) == 2 and len(windows) == 3
    for w in windows:
        assert set(w) == {"train", "valid", "test"} and len(w["train"]) == 32 and len(w["test"]) == 4
    # windows of the same regime are fresh draws, not copies
    assert not np.array_equal(windows[0]["train"].sequence(0)[0], windows[2]["train"].sequence(0)[0])


def test_methods_fill_R_as_the_protocol_says(stream, tmp_path):
    _, windows = stream
    build = lambda: models.build("attnhp", 2, {"hidden_size": 8, "time_emb_size": 4})  # noqa: E731
    seen = []  # the weights before training on each window and before scoring each window after it
    ft = run_continual(build, windows, "finetune", CFG, TASK, tmp_path,
                       window_hook=lambda model, w: seen.append({k: v.clone() for k, v in model.state_dict().items()}))
    for w in (1, 2):  # fine-tuning starts each window from the last window's best weights (brief bug 8: warm start)
        best = torch.load(tmp_path / f"finetune_w{w - 1}" / "checkpoints" / "best.pt", weights_only=True)
        assert all(torch.equal(seen[4 * w][k], best[k]) for k in best)
    assert not all(torch.equal(seen[0][k], seen[4][k]) for k in seen[0])  # window 0 did train
    R = np.array(ft["R"]["loglik"])
    assert R.shape == (3, 3) and np.isfinite(R).all()
    assert ft["summary"]["loglik"] == summarize(R)
    assert ft["protocol"]["replay_buffer"] is False and ft["protocol"]["task_id_at_test"] is False
    # one thinning cut-off, known at the start (window 0's training gaps): each window took its own before, so
    # the "next" column, scored before training on a window, read a number from that window's training data
    assert ft["protocol"]["dtime_max"] == pytest.approx(float(windows[0]["train"].dtime().max()))
    assert float(windows[1]["train"].dtime().max()) != ft["protocol"]["dtime_max"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune_w0", "finetune_w1", "finetune_w2"]
    joint = run_continual(build, windows, "joint", CFG, TASK, tmp_path)
    J = np.array(joint["R"]["loglik"])
    assert (J == J[0]).all()  # one model, trained once: every row is the same
    again = run_continual(build, windows, "finetune", CFG, TASK, tmp_path, run_name="again")
    assert again["R"] == ft["R"]  # seeded: the same numbers twice
    # retrain: window 0's row does not depend on the later windows, and matches finetune's first row
    re = run_continual(build, windows, "retrain", CFG, TASK, tmp_path)
    assert re["R"]["loglik"][0] == ft["R"]["loglik"][0]


def test_each_window_trains_from_the_weights_it_is_handed(stream, tmp_path):
    """Brief bug 8 (a warm start that loads nothing): the weights entering window 1 are moved by the hook; at a
    learning rate of 1e-12 window 1's best weights must be those, not the initial ones or window 0's."""
    _, windows = stream
    calls, handed = [], {}

    def hook(model, w):  # call 3 comes before training on window 1 (0: window 0, 1-2: scoring after it)
        calls.append(w)
        if len(calls) == 4:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.5)
            handed.update({k: v.clone() for k, v in model.state_dict().items()})

    cfg = CFG.model_copy(update={"lr": 1e-12, "epochs": 1})
    build = lambda: models.build("attnhp", 2, {"hidden_size": 8, "time_emb_size": 4})  # noqa: E731
    run_continual(build, windows[:2], "finetune", cfg, TASK, tmp_path, window_hook=hook)
    assert calls[3] == 1
    best = torch.load(tmp_path / "finetune_w1" / "checkpoints" / "best.pt", weights_only=True)
    assert all(torch.allclose(best[k].float(), handed[k].float(), atol=1e-6) for k in best)


def test_frozen_trains_only_the_pools_after_window_one(stream, tmp_path):
    _, windows = stream
    snapshots = []

    def hook(model, w):  # called before training on window w and before scoring each window after that
        snapshots.append({k: v.detach().clone() for k, v in model.named_parameters()})

    def build():
        return models.build("prompttpp", 2, {"hidden_size": 8, "time_emb_size": 4, "pool_size": 4, "top_n": 2,
                                             "prompt_length": 2})

    res = run_continual(build, windows, "frozen", CFG, TASK, tmp_path, window_hook=hook)
    assert res["protocol"]["trainable_after_window_1"] == ["prompts", "prompt_keys"]
    assert len(snapshots) == 3 * (1 + 3)  # per window: its training, then scoring all three
    before, after = snapshots[1], snapshots[-1]  # after training on window 0, after the last window
    for name in before:
        moved = not torch.equal(before[name], after[name])
        assert moved == (name in ("prompts", "prompt_keys")), name
    with pytest.raises(ValueError, match="none of"):
        run_continual(lambda: models.build("attnhp", 2, {"hidden_size": 8, "time_emb_size": 4}), windows,
                      "frozen", CFG, TASK, tmp_path)


def test_bad_arguments_are_named(stream, tmp_path):
    _, windows = stream
    build = lambda: models.build("attnhp", 2, {})  # noqa: E731
    with pytest.raises(ValueError, match="unknown continual method"):
        run_continual(build, windows, "replay", CFG, TASK, tmp_path)
    with pytest.raises(ValueError, match="window 1 has no"):
        run_continual(build, [windows[0], {"train": windows[1]["train"]}], "finetune", CFG, TASK, tmp_path)


def _write_window(folder, win):
    folder.mkdir(parents=True)
    for role, stem in (("train", "train"), ("valid", "dev"), ("test", "test")):
        seqs = win[role]
        with open(folder / f"{stem}.jsonl", "w") as fh:
            for n in range(len(seqs)):
                t, k = seqs.sequence(n)
                fh.write(json.dumps({"time_since_start": (t - t[0]).tolist(),
                                     "time_since_last_event": np.r_[0.0, np.diff(t)].tolist(),
                                     "type_event": k.tolist(), "dim_process": seqs.num_types}) + "\n")


def test_cli_reads_one_folder_per_window(stream, tmp_path, capsys):
    _, windows = stream
    for w, win in enumerate(windows[:2]):
        _write_window(tmp_path / "stream" / f"w{w}", win)
    out = tmp_path / "out"
    rc = main(["continual", "--model", "attnhp", "--data", str(tmp_path / "stream"), "--out", str(out),
               "train.epochs=1", "model.hidden_size=8", "model.time_emb_size=4", "data.tpp.task.predict_roles=[]"])
    assert rc == 0
    res = json.loads((out / "continual.json").read_text())
    assert np.array(res["R"]["loglik"]).shape == (2, 2) and res["protocol"]["data"] == str(tmp_path / "stream")
    p = res["protocol"]  # what made the numbers: evaluation settings, training settings, code
    assert p["evaluation"]["eval_integral"] == "mc" and p["train"]["epochs"] == 1 and p["code_version"]
    assert "final earlier" in capsys.readouterr().out
    assert main(["continual", "--model", "attnhp", "--data", str(tmp_path / "stream" / "w0" / "train.jsonl")]) == 2
    assert "one sub-folder per window" in capsys.readouterr().err  # a user's mistake: a message, no traceback
    args = ["continual", "--model", "attnhp", "--data", str(tmp_path / "stream"), "--out", str(out), "train.epochs=1",
            "model.hidden_size=8", "model.time_emb_size=4", "data.tpp.task.predict_roles=[]"]
    before = (out / "continual.json").read_bytes()
    assert main(args) == 2 and "already holds a continual run" in capsys.readouterr().err  # it overwrote
    assert (out / "continual.json").read_bytes() == before
    (out / "finetune_w0" / "notes.txt").write_text("mine")  # a folder with a file no run wrote: never deleted
    assert main(args + ["--overwrite"]) == 2 and "files a continual run did not write" in capsys.readouterr().err
    assert (out / "finetune_w0" / "notes.txt").read_text() == "mine"
