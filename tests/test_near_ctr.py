"""The SDIM brief's synthetic CTR data (``data.synthetic.near_ctr``): labels from the max cosine."""

import numpy as np
import pytest

from behaviorseq.data.ctr import TEST, TRAIN, VALID
from behaviorseq.data.synthetic.near_ctr import NearCTRConfig, generate_near_ctr

SMALL = dict(n_users=60, n_topics=40, items_per_topic=3, n_categories=8, latent_dim=8, length=50,
             samples_per_user=7, seed=3)


def test_near_is_the_max_cosine_over_the_history_events():
    data, truth = generate_near_ctr(NearCTRConfig(**SMALL))
    v = truth.item_vector
    for s in range(len(data.user)):  # brute force over the events, sample by sample (small data)
        hist = data.events["item"][data.offsets[data.user[s]]:data.hist_end[s]]
        best = (v[hist] @ v[data.target[s]]).max()
        assert truth.max_cos[s] == pytest.approx(best, abs=1e-12)
        assert truth.near[s] == (best > 0.8)
    assert np.array_equal(truth.click_prob, np.where(truth.near, 0.9, 0.1))


def test_structure_topics_categories_and_histories():
    c = NearCTRConfig(**SMALL)
    data, truth = generate_near_ctr(c)
    assert data.n_items == c.n_items == 120
    assert np.allclose(np.linalg.norm(truth.item_vector[1:], axis=1), 1.0) and not truth.item_vector[0].any()
    # topic t owns items (t-1)*3+1 .. t*3; a category is a block of n_topics / n_categories = 5 topics
    assert np.array_equal(truth.item_topic[1:], np.repeat(np.arange(1, 41), 3))
    assert np.array_equal(data.item_fields["category"][1:], (truth.item_topic[1:] - 1) // 5 + 1)
    assert np.array_equal(data.events["category"], data.item_fields["category"][data.events["item"]])
    # every history has length L and uses only the user's present topics, 20 of 40
    assert np.all(np.diff(data.offsets) == c.length)
    assert np.all(truth.present.sum(1) == 20) and not truth.present[:, 0].any()
    user_of_event = np.repeat(np.arange(c.n_users), c.length)
    assert truth.present[user_of_event, truth.item_topic[data.events["item"]]].all()
    assert np.array_equal(data.hist_end, data.offsets[data.user + 1])
    assert set(np.unique(data.role)) <= {TRAIN, VALID, TEST}


def test_close_topics_decide_the_label_and_noise_sets_the_bayes_ceiling():
    data, truth = generate_near_ctr(NearCTRConfig(**{**SMALL, "n_users": 400, "topic_spread": 0.2}))
    topics = truth.item_topic[data.events["item"]].reshape(len(data.offsets) - 1, -1)  # [U, L]
    seen = (topics[data.user] == truth.item_topic[data.target][:, None]).any(1)  # the target's topic occurs
    assert truth.near[seen].mean() > 0.99  # same-topic items are about cos 0.96 apart
    assert truth.near[~seen].mean() < 0.2  # a few cross-topic pairs pass 0.8 in 8 dimensions
    assert 0.35 < data.label.mean() < 0.65
    assert abs(data.label[truth.near].mean() - 0.9) < 0.03 and abs(data.label[~truth.near].mean() - 0.1) < 0.03


def test_reproducible_from_the_seed():
    a, ta = generate_near_ctr(NearCTRConfig(**SMALL))
    b, tb = generate_near_ctr(NearCTRConfig(**SMALL))
    c, _ = generate_near_ctr(NearCTRConfig(**{**SMALL, "seed": 4}))
    assert np.array_equal(a.events["item"], b.events["item"]) and np.array_equal(a.label, b.label)
    assert np.array_equal(ta.max_cos, tb.max_cos)
    assert not np.array_equal(a.events["item"], c.events["item"])


@pytest.mark.parametrize("bad", [dict(n_categories=7), dict(present_fraction=1.0), dict(threshold=1.0),
                                 dict(label_noise=0.5), dict(topic_spread=-0.1), dict(length=0),
                                 dict(n_users=2.0), dict(valid_fraction=0.6, test_fraction=0.4)])
def test_bad_configs_are_rejected(bad):
    with pytest.raises(ValueError, match="NearCTRConfig"):
        NearCTRConfig(**{**SMALL, **bad})
