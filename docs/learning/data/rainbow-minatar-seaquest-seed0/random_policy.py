# mean return of a uniformly random policy, 30 episodes, seeds 0..N-1 (N = argv 2, default 30)
import sys, numpy as np, gymnasium as gym, minatar.gym
minatar.gym.register_envs()
env_id = sys.argv[1]
env = gym.make(env_id)
rets, lens = [], []
for s in range(int(sys.argv[2]) if len(sys.argv) > 2 else 30):
    env.reset(seed=s); env.action_space.seed(s); done = False; R = 0.0; n = 0
    while not done:
        _, r, term, trunc, _ = env.step(env.action_space.sample()); R += r; n += 1; done = term or trunc
    rets.append(R); lens.append(n)
print(env_id, "random policy, %d episodes: mean %.2f (std %.2f), mean length %.0f" % (len(rets), np.mean(rets), np.std(rets), np.mean(lens)))
