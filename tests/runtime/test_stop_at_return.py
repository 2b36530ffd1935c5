"""--stop-at-return: the early stop once every task's recent mean return reaches its target."""

from collections import deque

import pytest

from impala_rl.config import ConfigError, TrainConfig
from impala_rl.runtime.actor import EpisodeStats
from impala_rl.runtime.loop import Step, stop_at_return


class Windows:
    """The logger's side: each task's last ``size`` returns, filled before the hook runs."""

    def __init__(self, tasks: int, size: int):
        self.windows = [deque(maxlen=size) for _ in range(tasks)]

    def step(self, hook, *episodes):
        for task, ret in episodes:
            self.windows[task].append(ret)
        return hook(Step(frames=100, version=1, metrics={}, episodes=[], wait_s=0.0, publish_s=0.0))


def test_stops_only_when_every_task_s_full_window_mean_reaches_its_target():
    w = Windows(2, 3)
    hook = stop_at_return((10.0, 1000.0), w.windows)
    assert w.step(hook, (0, 50.0), (0, 50.0)) is None  # two episodes: not a full window
    assert w.step(hook, (0, 50.0), (1, 0.0), (1, 0.0)) is None  # task 0 there; task 1 not a full window
    assert w.step(hook, (1, 0.0)) is None  # task 1's full window: mean 0 < 1000
    assert w.step(hook, (1, 3000.0)) == "target"  # task 1's last three: 0, 0, 3000 -> 1000


def test_a_falling_mean_does_not_stop():
    w = Windows(1, 2)
    hook = stop_at_return((10.0,), w.windows)
    assert w.step(hook, (0, 9.0), (0, 10.0)) is None  # 9.5
    assert w.step(hook, (0, 11.0)) == "target"  # 10, 11 -> 10.5


def test_the_hook_reads_the_run_logger_s_windows(tmp_path):
    from impala_rl.logging import RunLogger

    logger = RunLogger(tmp_path, 1000, quiet=True, tensorboard=False, window=2, tasks=("CartPole-v1", "Acrobot-v1"))
    hook = stop_at_return((10.0, -100.0), logger.recent_windows())
    step = Step(frames=10, version=1, metrics={}, wait_s=0.0, publish_s=0.0,
                episodes=[EpisodeStats(20.0, 20, 0), EpisodeStats(-90.0, 90, 1), EpisodeStats(20.0, 20, 0)])
    logger.record(step.frames, {}, step.episodes, {})
    assert hook(step) is None  # Acrobot: one episode of two
    more = Step(frames=20, version=2, metrics={}, wait_s=0.0, publish_s=0.0, episodes=[EpisodeStats(-80.0, 80, 1)])
    logger.record(more.frames, {}, more.episodes, {})
    assert hook(more) == "target"
    logger.close()


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
