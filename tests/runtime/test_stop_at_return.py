"""--stop-at-return: the early stop once every task's recent mean return reaches its target."""

import pytest

from impala_rl.config import ConfigError, TrainConfig
from impala_rl.runtime.actor import EpisodeStats
from impala_rl.runtime.loop import Step, stop_at_return


def step(*episodes):
    return Step(frames=100, version=1, metrics={}, episodes=[EpisodeStats(r, 10, t) for t, r in episodes],
                wait_s=0.0, publish_s=0.0)


def test_stops_only_when_every_task_s_full_window_mean_reaches_its_target():
    hook = stop_at_return((10.0, 1000.0), window=3)
    assert hook(step((0, 50.0), (0, 50.0))) is None  # two episodes: not a full window
    assert hook(step((0, 50.0), (1, 0.0), (1, 0.0))) is None  # task 0 there; task 1 not a full window
    assert hook(step((1, 0.0))) is None  # task 1's full window: mean 0 < 1000
    assert hook(step((1, 3000.0))) == "target"  # task 1's last three: 0, 0, 3000 -> 1000


def test_a_falling_mean_does_not_stop():
    hook = stop_at_return((10.0,), window=2)
    assert hook(step((0, 9.0), (0, 10.0))) is None  # 9.5
    assert hook(step((0, 11.0))) == "target"  # 10, 11 -> 10.5


@pytest.mark.parametrize("text,env,expected", [
    ("", "CartPole-v1", ()),
    ("400", "CartPole-v1", (400.0,)),
    ("300", "CartPole-v1,Acrobot-v1", (300.0, 300.0)),
    ("300, -100", "CartPole-v1,Acrobot-v1", (300.0, -100.0)),
])
def test_targets_are_one_per_task(text, env, expected):
    assert TrainConfig(env=env, stop_at_return=text).stop_returns == expected


@pytest.mark.parametrize("text,kw", [("high", {}), ("1,2", {}), ("nan", {}), ("400", {"num_learners": 2,
                                                                                       "backend": "ray"})])
def test_unreadable_targets_are_refused(text, kw):
    with pytest.raises(ConfigError, match="stop_at_return"):
        TrainConfig(env="CartPole-v1", stop_at_return=text, **kw).validate()
