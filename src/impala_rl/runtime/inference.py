"""Central inference (``--inference central``): actors send their observations to one
batched model on the learner's device instead of running their own CPU copy.

Each actor process gets a channel: request and response buffers in shared memory (sized
for its environments) and a pipe that carries only "request ready" / "reply ready"
signals. In the learner process a server thread turns each request into a
:class:`~impala_rl.runtime.dynamic_batching.DynamicBatcher` submission, so requests from
all actors are grouped up to a maximum batch size or a timeout and run as one forward
pass. The inference model is a separate copy, updated under a lock on every publish, so
actors never see weights half-way through an optimizer step.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from multiprocessing import connection

import torch

from impala_rl.models import NetOutput
from impala_rl.runtime.dynamic_batching import BatcherClosed, DynamicBatcher
from impala_rl.runtime.types import RolloutSpec


def _request_fields(spec: RolloutSpec) -> dict[str, tuple[tuple, torch.dtype]]:
    """The network's inputs for one step, and the agent's recurrent state before it."""
    rows = spec.row_fields()
    fields = {"obs": rows["obs"], "first": rows["first"], "last_action": rows["last_action"],
              "last_reward": ((), torch.float32)}
    fields.update({name: (shape, dtype) for name, shape, dtype in spec.states})
    return fields


def _response_fields(spec: RolloutSpec, policy_size: int, num_values: int) -> dict[str, tuple[tuple, torch.dtype]]:
    """The network's outputs for one step (its NetOutput), and the recurrent state after it."""
    fields = {"policy_params": ((policy_size,), torch.float32), "values": ((num_values,), torch.float32)}
    fields.update({name: (shape, dtype) for name, shape, dtype in spec.states})
    return fields


def _alloc(fields: dict, n: int) -> dict[str, torch.Tensor]:
    return {k: torch.zeros((n,) + shape, dtype=dtype).share_memory_() for k, (shape, dtype) in fields.items()}


@dataclass
class Channel:
    """One actor's end: what it writes its request into, and where the reply appears."""

    conn: object
    request: dict
    response: dict
    state_names: tuple = ()


class RemoteForward:
    """Stands in for the actor's model: ``forward(obs, first, last_action, last_reward, core_state)``
    with [1, N, ...] inputs returns (NetOutput, new_state) computed by the inference server."""

    def __init__(self, channel: Channel):
        self.channel = channel

    def __call__(self, obs, first, last_action, last_reward, core_state=()):
        req, resp = self.channel.request, self.channel.response
        req["obs"].copy_(obs[0])
        req["first"].copy_(first[0])
        req["last_action"].copy_(last_action[0])
        req["last_reward"].copy_(last_reward[0])
        for name, value in zip(self.channel.state_names, core_state, strict=True):
            req[name].copy_(value)
        self.channel.conn.send(1)
        if self.channel.conn.recv() != 1:
            raise RuntimeError("the inference server failed this request (see the learner's log)")
        out = NetOutput(resp["policy_params"][None].clone(), resp["values"][None].clone())
        return out, tuple(resp[name].clone() for name in self.channel.state_names)


class InferenceServer:
    """Batched inference for actor processes, in a thread of the learner process."""

    def __init__(self, spec: RolloutSpec, model: torch.nn.Module, device: torch.device, *,
                 min_batch: int, max_batch: int, timeout_s: float, acting_model=None):
        self.spec = spec
        self.device = device
        # the agent's acting copy (Agent.acting_model: eval mode, or noisy layers kept sampling)
        self.model = (acting_model or torch.nn.Module.eval)(copy.deepcopy(model).to(device))
        self.policy_size = int(model.policy_param_size)  # the network's NetOutput.policy_params width
        self.num_values = int(model.num_values)  # and its values' (one per task)
        self.lock = threading.Lock()
        self.batcher = DynamicBatcher(self._run, min_batch=min_batch, max_batch=max_batch, timeout_s=timeout_s,
                                      name="impala-inference")
        self.channels: dict[int, tuple] = {}  # actor id -> (server conn, request, response)
        self.channels_lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._serve, name="impala-inference-server", daemon=True)
        self.thread.start()

    @torch.inference_mode()
    def _run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        state = tuple(x[name] for name in self.spec.state_names)
        with self.lock:
            out, new_state = self.model(obs=x["obs"][None], first=x["first"][None],
                                        last_action=x["last_action"][None], last_reward=x["last_reward"][None],
                                        core_state=state)
        result = {"policy_params": out.policy_params[0], "values": out.values[0]}
        result.update(zip(self.spec.state_names, new_state, strict=True))
        return {k: v.to("cpu") for k, v in result.items()}

    def update(self, model: torch.nn.Module) -> None:
        state = model.state_dict()
        with self.lock:
            self.model.load_state_dict(state)

    def channel(self, actor_id: int, num_envs: int, ctx) -> Channel:
        """A fresh channel for (a new incarnation of) an actor; returns the actor's end."""
        server_conn, actor_conn = ctx.Pipe(duplex=True)
        request = _alloc(_request_fields(self.spec), num_envs)
        response = _alloc(_response_fields(self.spec, self.policy_size, self.num_values), num_envs)
        with self.channels_lock:
            old = self.channels.pop(actor_id, None)
            self.channels[actor_id] = (server_conn, request, response)
        if old is not None:
            old[0].close()
        return Channel(actor_conn, request, response, self.spec.state_names)

    def _serve(self) -> None:
        while not self.closed:
            with self.channels_lock:
                by_conn = {c[0]: c for c in self.channels.values()}
            if not by_conn:
                threading.Event().wait(0.05)
                continue
            try:
                ready = connection.wait(list(by_conn), timeout=0.2)
            except OSError:
                continue  # a channel was closed under us (actor restart); look again
            for conn in ready:
                server_conn, request, response = by_conn[conn]
                try:
                    conn.recv()
                except (EOFError, OSError):
                    with self.channels_lock:  # the actor died; its backend gives it a new channel
                        for aid, c in list(self.channels.items()):
                            if c[0] is conn:
                                del self.channels[aid]
                    continue
                try:
                    future = self.batcher.submit(request)
                except BatcherClosed:
                    return
                future.add_done_callback(lambda f, c=conn, r=response: self._reply(f, c, r))

    @staticmethod
    def _reply(future, conn, response) -> None:
        try:
            result = future.result()
        except BatcherClosed:
            return
        except Exception:
            result = None  # the model failed: tell the actor (it raises and is restarted)
        try:
            if result is None:
                conn.send(0)
                return
            for k, v in result.items():
                response[k].copy_(v)
            conn.send(1)
        except OSError:
            pass  # the actor is gone

    def close(self) -> None:
        self.closed = True
        self.batcher.close()
        self.thread.join(timeout=5)
        with self.channels_lock:
            for conn, _, _ in self.channels.values():
                conn.close()
            self.channels.clear()
