"""The Hawkes simulator and its exact log-likelihood: hand-worked cases, time rescaling, stationary rates."""

import math

import numpy as np
import pytest

from behaviorseq.data.eventseq import EventSequences, concat
from behaviorseq.data.synthetic.hawkes import (
    HawkesParams,
    hawkes_loglik,
    hawkes_terms,
    intensity_at,
    ks_exp1,
    random_hawkes_params,
    simulate_hawkes,
    simulate_hawkes_stream,
    time_rescaled,
)

E2, E4 = math.exp(-2), math.exp(-4)


def one(times, types, k):
    return EventSequences.from_lists([times], [types], k)


def test_univariate_intensity_and_compensator_by_hand():
    # mu 0.5, kernel a*b*exp(-b t) = exp(-2t); events at 1 and 2, observed on [0, 3].
    p = HawkesParams([0.5], [[0.5]], 2.0)
    seqs = one([1.0, 2.0], [0, 0], 1)
    terms = hawkes_terms(p, seqs, t_end=3.0)
    np.testing.assert_allclose(terms.intensity[:, 0], [0.5, 0.5 + E2])
    np.testing.assert_allclose(terms.compensator[:, 0], [0.5, 0.5 + 0.5 * (1 - E2)])
    np.testing.assert_allclose(terms.tail[0, 0], 0.5 + 0.5 * (1 - E4))  # (E2 - E4) + (1 - E2), times a
    ll = math.log(0.5) + math.log(0.5 + E2) - (0.5 + 0.5 + 0.5 * (1 - E2) + 0.5 + 0.5 * (1 - E4))
    np.testing.assert_allclose(hawkes_loglik(p, seqs, 3.0), [ll])
    np.testing.assert_allclose(ll, -3.569924, atol=1e-6)  # the number worked on paper


def test_adjacency_row_is_the_excited_type():
    # adjacency[0, 1] = 0.5: a type-1 event excites type 0 only.
    p = HawkesParams([0.1, 0.2], [[0.0, 0.5], [0.0, 0.0]], 1.0)
    seqs = one([1.0, 2.0], [1, 0], 2)
    terms = hawkes_terms(p, seqs)
    np.testing.assert_allclose(terms.intensity, [[0.1, 0.2], [0.1 + 0.5 * math.exp(-1), 0.2]])
    np.testing.assert_allclose(terms.compensator, [[0.1, 0.2], [0.1 + 0.5 * (1 - math.exp(-1)), 0.2]])
    ll = math.log(0.2) + math.log(0.1 + 0.5 * math.exp(-1)) - (0.3 + 0.1 + 0.5 * (1 - math.exp(-1)) + 0.2)
    np.testing.assert_allclose(hawkes_loglik(p, seqs), [ll])
    # conditioning on the first event drops its log-intensity and the compensator before it
    np.testing.assert_allclose(hawkes_loglik(p, seqs, condition_on_first=True), [ll - math.log(0.2) + 0.3])


def test_recursions_match_the_definition_and_numerical_integration():
    p = random_hawkes_params(3, 0.7, seed=3)
    s = simulate_hawkes(p, 1, max_events=40, seed=1)
    t, k = s.seqs.sequence(0)
    terms = hawkes_terms(p, s.seqs)
    eps = 1e-9  # intensity just before each event: the event itself does not count
    np.testing.assert_allclose(terms.intensity, intensity_at(p, t, k, t - eps), rtol=1e-6)
    grid = np.linspace(0, t[-1], 400_001)
    lam = intensity_at(p, t, k, grid)
    cum = np.concatenate([[0], np.cumsum((lam[1:] + lam[:-1]) / 2 * np.diff(grid)[:, None], 0).sum(1)])
    # trapezoid over a grid: exact up to O(h^2) away from the jumps at events, O(h) at them
    np.testing.assert_allclose(np.interp(t, grid, cum), np.cumsum(terms.compensator.sum(1)), rtol=2e-4)


def test_time_rescaled_increments_are_exp1():
    p = random_hawkes_params(3, 0.7, seed=0)
    s = simulate_hawkes(p, 400, max_events=100, seed=2)  # stopped by count: no censored gap
    x = time_rescaled(p, s.seqs)
    d, pval = ks_exp1(x)
    assert pval > 0.01, (d, pval)
    assert abs(x.mean() - 1) < 4 / math.sqrt(len(x))
    scipy_stats = pytest.importorskip("scipy.stats")
    ref = scipy_stats.kstest(x, "expon")
    np.testing.assert_allclose(d, ref.statistic)
    np.testing.assert_allclose(pval, ref.pvalue, atol=2e-3)


def test_wrong_parameters_fail_the_ks_test_and_score_lower():
    p = random_hawkes_params(2, 0.7, seed=0)
    wrong = HawkesParams(p.mu, p.adjacency * 0.3, p.decay)
    s = simulate_hawkes(p, 300, max_events=100, seed=4)
    assert ks_exp1(time_rescaled(wrong, s.seqs))[1] < 1e-6
    assert hawkes_loglik(p, s.seqs).sum() > hawkes_loglik(wrong, s.seqs).sum()


def test_stationary_rate_is_inverse_of_i_minus_a_times_mu():
    p = HawkesParams([0.2, 0.3, 0.1], [[0.3, 0.1, 0.0], [0.2, 0.2, 0.1], [0.0, 0.3, 0.4]], 1.5)
    np.testing.assert_allclose(p.stationary_rate(), np.linalg.solve(np.eye(3) - p.adjacency, p.mu))
    T, burn = 300.0, 30.0
    s = simulate_hawkes(p, 400, t_end=T, seed=0)
    keep = s.seqs.time >= burn  # past the start-up transient (the history starts empty)
    rate = np.bincount(s.seqs.type[keep], minlength=3) / (len(s.seqs) * (T - burn))
    np.testing.assert_allclose(rate, p.stationary_rate(), rtol=0.03)
    assert np.all(s.seqs.time <= T)
    np.testing.assert_allclose(s.loglik, hawkes_loglik(p, s.seqs, T))


def test_simulation_is_reproducible_and_stops_at_max_events():
    p = random_hawkes_params(2, 0.5, seed=0)
    a, b = simulate_hawkes(p, 20, max_events=30, seed=7), simulate_hawkes(p, 20, max_events=30, seed=7)
    np.testing.assert_array_equal(a.seqs.time, b.seqs.time)
    np.testing.assert_array_equal(a.seqs.type, b.seqs.type)
    assert np.all(a.seqs.lengths == 30)
    np.testing.assert_allclose(a.t_end, a.seqs.time[a.seqs.offsets[1:] - 1])
    c = simulate_hawkes(p, 20, t_end=5.0, max_events=30, seed=7)
    assert np.all(c.seqs.lengths <= 30) and np.all(c.seqs.time <= 5.0)


def test_stream_windows_follow_the_schedule():
    regimes = [random_hawkes_params(2, 0.5, seed=r) for r in range(3)]
    stream = simulate_hawkes_stream(regimes, [0, 1, 2, 0, 1, 2], n_seqs=30, max_events=20, seed=0)
    assert [w.meta["regime"] for w in stream] == [0, 1, 2, 0, 1, 2]
    assert [w.seqs.meta["window"] for w in stream] == list(range(6))
    for w in stream:
        np.testing.assert_allclose(w.loglik, hawkes_loglik(regimes[w.meta["regime"]], w.seqs))
    assert not np.array_equal(stream[0].seqs.time, stream[3].seqs.time)  # same regime, fresh draws
    assert len(concat([w.seqs for w in stream])) == 180
    with pytest.raises(ValueError, match="schedule names regimes"):
        simulate_hawkes_stream(regimes, [0, 3], n_seqs=2, max_events=5)


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="mu > 0"):
        HawkesParams([0.0], [[0.1]], 1.0)
    with pytest.raises(ValueError, match=r"adjacency must be \[2, 2\]"):
        HawkesParams([0.1, 0.1], [0.1, 0.2, 0.3], 1.0)
    with pytest.raises(ValueError, match="needs max_events"):
        simulate_hawkes(HawkesParams([0.1], [[1.2]], 1.0), 2, t_end=10.0)
    with pytest.raises(ValueError, match="not stationary"):
        HawkesParams([0.1], [[1.2]], 1.0).stationary_rate()


def test_event_sequences_windows_split_and_checks():
    seqs = EventSequences.from_lists([[0.5, 1.5, 2.5, 3.5], [0.2, 2.2, 2.4]], [[0, 1, 0, 1], [1, 1, 0]], 2)
    np.testing.assert_allclose(seqs.dtime(), [0, 1, 1, 1, 0, 2, 0.2])
    w = seqs.time_windows([0.0, 2.0, 4.0], min_len=2)
    assert len(w[0]) == 1 and w[0].sequence(0)[0].tolist() == [0.5, 1.5]  # seq 2 has one event there
    np.testing.assert_allclose(w[1].time, [0.5, 1.5, 0.2, 0.4])  # rebased to the window start
    tr, va, te = seqs.split((0.5, 0.5, 0.0), seed=0)
    assert len(tr) + len(va) + len(te) == 2
    with pytest.raises(ValueError, match="before the previous"):
        EventSequences.from_lists([[1.0, 0.5]], [[0, 0]], 1)
    with pytest.raises(ValueError, match="outside 0..1"):
        EventSequences.from_lists([[1.0]], [[2]], 2)


def test_unit_rate_rescales_time_only():
    p = random_hawkes_params(3, 0.6, seed=4)
    u = p.unit_rate()
    assert u.stationary_rate().sum() == pytest.approx(1.0)
    assert np.array_equal(u.adjacency, p.adjacency)  # the branching structure is unchanged
    g = u.mu[0] / p.mu[0]
    assert np.allclose(u.mu, p.mu * g) and np.allclose(u.decay, p.decay * g)
