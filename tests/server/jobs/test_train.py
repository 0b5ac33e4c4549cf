"""The shared training loop: held-out evaluation after the epochs `evaluate_every` picks."""

from __future__ import annotations

import pytest

from augserve.server.jobs import train
from augserve.server.jobs.data import load_dataset
from augserve.server.jobs.models import digits_net
from augserve.server.jobs.progress import Context
from augserve.server.jobs.specs import Finetune, JobSpecError, Prune


@pytest.mark.parametrize(("every", "evaluated"), [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]),
                                                  (9, [5])])
def test_fit_evaluates_every_nth_epoch_and_the_last(monkeypatch, every, evaluated):
    calls, ends = [], []
    real = train.evaluate

    def counting(model, x, y, batch_size=512):
        calls.append(len(y))
        return real(model, x, y, batch_size)

    def report(event):
        if event.step == event.steps and event.epoch:
            ends.append((event.epoch, event.accuracy))
        return False

    monkeypatch.setattr(train, "evaluate", counting)
    data = load_dataset("digits")
    acc = train.fit(digits_net(width=4), data, Context(0, report, min_interval_s=60), "finetune",
                    5, 1e-2, batch_size=512, evaluate_every=every)
    assert len(calls) == len(evaluated)
    measured = [epoch for epoch, accuracy in ends if accuracy >= 0]
    assert measured[0] == evaluated[0] and ends[-1] == (5, acc)
    # an epoch between evaluations repeats the last measured accuracy (-1 before the first)
    assert all(accuracy == -1 for epoch, accuracy in ends if epoch < evaluated[0])


def test_evaluate_every_must_be_positive():
    with pytest.raises(JobSpecError, match=r"finetune\.evaluate_every must be > 0, got 0"):
        Finetune(evaluate_every=0)
    with pytest.raises(JobSpecError, match=r"prune\.evaluate_every must be > 0, got 0"):
        Prune(evaluate_every=0)
