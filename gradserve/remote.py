"""The session proxy: ``rnet = client.remote(net)`` answers the tutorial's own lines, each a call on a worker.

``rnet(x)`` gives a ``RemoteTensor`` (the output's values came back with the call; its graph stays on
the session); a loss module applied to it goes through ``__torch_function__`` to the session's ``loss``
call; ``backward``, ``zero_grad``, ``sgd_update`` and ``step`` run remotely; parameters, grads and the
autograd graph are fetched when read. Tensors travel as safetensors bytes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Self

import safetensors.torch
import torch
from torch import nn

from gradserve.export_form import catalogue_spec, export_module, named_inputs
from gradserve.protocol import codec
from gradserve.remote_values import RemoteModule, RemoteParameter, RemoteTensor

if TYPE_CHECKING:
    from gradserve.transport import Transport

BINARY = {"Content-Type": codec.OCTET, "Accept": codec.OCTET}
_DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64"}


class RemoteNet:
    """A session on the service standing in for ``net``; see the module docstring."""

    def __init__(
        self,
        client: Transport,
        net: nn.Module | dict[str, Any],
        optimizer: dict[str, Any] | None,
        *,
        input_shape: list[int] | tuple[int, ...] | None,
        seed: int,
        device: str,
        format: str = "auto",
        output: str | int | None = None,
    ) -> None:
        self._client = client
        self._module = net if isinstance(net, nn.Module) else None
        self._output = output
        # Refused, with format="spec", before any request.
        self._spec = dict(net) if isinstance(net, dict) else catalogue_spec(net, format)
        # None: the readable catalogue spec; else the module is exported at the first call, on its inputs.
        self.exported = self._spec is None
        self.training = self._module.training if self._module is not None else True
        self._seed_pending: int | None = None
        self._weights = None if self._module is None else codec.to_safetensors(self._module.state_dict())
        self._optimizer = optimizer
        self._seed = seed
        self._device = device
        self._public: dict[str, Any] | None = None
        self._threads: int | None = None
        self.generation = 0  # bumped by each forward: older outputs and losses are stale
        self.batch: Any = None  # a session opened at a job's step: that step's batch (gradserve.jobs.StepBatch)
        self.loss_generation = 0
        if self._spec is not None and (input_shape is not None or "input_shape" in self._spec):
            self._create(list(input_shape or self._spec["input_shape"]), None)

    # --- the session ---------------------------------------------------------------------------------------------

    @classmethod
    def attach(cls, client: Transport, public: dict[str, Any]) -> Self:
        """A session the service already built (``public``: its create answer), e.g. a job opened at a step."""
        net = cls(client, {}, public.get("optimizer"), input_shape=None, seed=public["seed"], device=public["device"])
        net._public = public
        return net

    @property
    def id(self) -> str:
        return str(self._session()["id"])

    def _create_exported(self, inputs: dict[str, torch.Tensor]) -> None:
        assert self._module is not None, "only a module is exported"
        network = self._client.upload_exported(export_module(self._module, inputs, self._output))
        body = {"network_id": network["id"], "seed": self._seed, "device": self._device, "optimizer": self._optimizer}
        self._public = self._client.session_call("POST", "/v1/sessions", json=body).json()
        self._started()

    def _create(self, input_shape: list[int], dtype: torch.dtype | None) -> None:
        assert self._spec is not None
        spec = {**self._spec, "input_shape": input_shape}
        if dtype is not None and dtype != torch.float32 and "input_dtype" not in spec:
            spec["input_dtype"] = _DTYPES.get(dtype, str(dtype).removeprefix("torch."))
        body = {"network": spec, "seed": self._seed, "device": self._device, "optimizer": self._optimizer}
        self._public = self._client.session_call("POST", "/v1/sessions", json=body).json()
        if self._weights is not None:  # the module's own weights, not the seed's
            self._call("PUT", "state", content=self._weights, headers={"Content-Type": codec.OCTET})
            if self._seed_pending is None:  # as an exported session starts: torch.manual_seed(seed), no init draws
                self._seed_pending = self._seed
        self._started()

    def _session(self) -> dict[str, Any]:
        if self._public is None:
            raise RuntimeError(
                "the session starts at the first call rnet(input), which gives the input shape; "
                "or pass input_shape=[...] (one sample's shape) to remote()"
            )
        return self._public

    def _call(self, method: str, op: str, **kwargs: Any) -> Any:
        response = self._client.session_call(method, f"/v1/sessions/{self.id}/{op}", **kwargs)
        if response.headers.get("content-type", "").startswith(codec.OCTET):
            return response.content if op == "state" else codec.unpack_answer(response.content)
        body = response.json()
        if isinstance(body, dict) and "threads" in body:
            self._threads = int(body["threads"])
        return body

    def _binary(self, method: str, op: str, tensors: dict[str, torch.Tensor], args: dict[str, Any]) -> Any:
        body = self._call(method, op, content=codec.pack_call(tensors, args), headers=BINARY)
        if "threads" in body:
            self._threads = int(body["threads"])
        return body

    # --- what the tutorial calls ---------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> RemoteTensor:
        if self.exported:
            assert self._module is not None
            named = named_inputs(self._module, args, kwargs)
            if self._public is None:
                self._create_exported(named)
            answer = self._binary("POST", "forward", {f"inputs.{k}": v for k, v in named.items()}, {})
        else:
            if self._module is not None and kwargs:  # rnet(x=t): by the forward's parameter name, as locally
                args = tuple(named_inputs(self._module, args, kwargs).values())
            if len(args) != 1:
                raise TypeError("this network takes one input tensor: rnet(x)")
            x = torch.as_tensor(args[0])
            if self._public is None:
                self._create(list(x.shape[1:]), x.dtype)
            answer = self._binary("POST", "forward", {"input": x}, {})
        self.generation += 1
        return RemoteTensor(self, answer["output"], answer.get("grad_fn"), "output", self.generation)

    forward = __call__

    def loss(self, criterion: dict[str, Any], output: RemoteTensor, target: torch.Tensor) -> RemoteTensor:
        """``criterion(output, target)`` on the session (what a loss module applied to ``output`` calls)."""
        output.check_fresh()
        answer = self._binary("POST", "loss", {"target": torch.as_tensor(target)}, {"criterion": criterion})
        value = answer["loss"]
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(float(value), dtype=output.dtype)
        self.loss_generation = self.generation
        return RemoteTensor(self, value, answer.get("grad_fn"), "loss", self.generation)

    def backward(self, gradient: torch.Tensor | None = None, retain_graph: bool = False) -> None:
        tensors = {} if gradient is None else {"gradient": torch.as_tensor(gradient)}
        self._binary("POST", "backward", tensors, {"retain_graph": retain_graph})

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self._public is None:
            return  # no session yet: its gradients start as None, as a new module's do
        self._call("POST", "zero_grad", json={"set_to_none": set_to_none})

    def train(self, mode: bool = True) -> RemoteNet:
        """``net.train(mode)`` on the session: dropout and batch norm switch as in PyTorch."""
        self.training = mode
        if self._public is not None:
            self._call("POST", "train", json={"mode": mode})
        return self

    def eval(self) -> RemoteNet:
        return self.train(False)

    def manual_seed(self, seed: int) -> None:
        """``torch.manual_seed(seed)`` for the session's generator: dropout after it matches a local run that
        made the same call (before the session exists, it is applied as the session starts)."""
        self._seed_pending = int(seed)
        if self._public is not None:
            self._call("POST", "manual_seed", json={"seed": self._seed_pending})
            self._seed_pending = None

    def _started(self) -> None:
        """What the caller said before the session existed, applied to it now."""
        if not self.training:
            self._call("POST", "train", json={"mode": False})
        if self._seed_pending is not None:
            self.manual_seed(self._seed_pending)

    def sgd_update(self, lr: float) -> None:
        """The tutorial's manual rule, ``f.data.sub_(f.grad.data * lr)`` for every parameter."""
        self._call("POST", "sgd_update", json={"lr": float(lr)})

    def step(self) -> None:
        """``optimizer.step()`` with the session's optimizer (``remote(net, torch.optim.SGD, lr=...)``)."""
        self._call("POST", "step")

    @property
    def optimizer(self) -> SessionOptimizer:
        """The session's optimizer, for the tutorial's ``optimizer.zero_grad()`` ... ``optimizer.step()``."""
        return SessionOptimizer(self)

    def parameter(self, name: str) -> dict[str, Any]:
        """A parameter's (or buffer's) ``data`` and ``grad`` (None where PyTorch's is), as local tensors."""
        answer: dict[str, Any] = self._call("GET", f"parameters/{name}", headers={"Accept": codec.OCTET})
        answer.setdefault("grad", None)
        if "threads" in answer:
            self._threads = int(answer["threads"])
        return answer

    def graph(self, root: str = "auto", max_nodes: int = 500) -> dict[str, Any]:
        """The autograd graph of the last loss (or output) as the service dumps it."""
        params = {"root": root, "max_nodes": max_nodes}
        graph: dict[str, Any] = self._call("GET", "graph", params=params)
        return graph

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The session's state in the module's own key order (safetensors files keep their own)."""
        got = safetensors.torch.load(self._call("GET", "state"))
        order = list(self._module.state_dict()) if self._module is not None else []
        return {k: got[k] for k in order if k in got} | {k: v for k, v in got.items() if k not in order}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._call("PUT", "state", content=codec.to_safetensors(state), headers={"Content-Type": codec.OCTET})

    def to_local(self) -> nn.Module:
        """An ordinary module with the remote weights: a copy of the original, else built from the spec."""
        if self._module is not None:
            local = copy.deepcopy(self._module)
        else:
            from models.nn.build import build_network  # the server's builder: only needed without a module
            from models.spec.network import NetworkSpec

            assert self._spec is not None, "an exported network always has its module"
            local = build_network(NetworkSpec.model_validate(self._spec))
        local.load_state_dict(self.state_dict())
        return local

    def delete(self) -> None:
        """Forget the session on the service."""
        if self._public is not None:
            self._client.request("DELETE", f"/v1/sessions/{self.id}")
            self._public = None

    @property
    def threads(self) -> int:
        """PyTorch threads the session's worker computes with: ``torch.set_num_threads(rnet.threads)``
        before a local run gives the same bits."""
        if self._threads is None and self._public is None:  # no session yet: the session workers say theirs
            workers = self._client.request("GET", "/readyz").json().get("workers", [])
            counts = {int(w["threads"]) for w in workers if "sessions" in w.get("lanes", []) and "threads" in w}
            if len(counts) == 1:
                self._threads = counts.pop()
        if self._threads is None:
            first = self._named_shapes()[0][0]
            self._threads = int(self.parameter(first)["threads"])
        return self._threads

    # --- parameters, as nn.Module shows them ---------------------------------------------------------------------

    def _named_shapes(self) -> list[tuple[str, list[int]]]:
        if self._public is not None:
            return [(p["name"], p["shape"]) for p in self._public["parameters"]]
        assert self._module is not None, "a session from a spec is created at once"
        return [(n, list(p.shape)) for n, p in self._module.named_parameters()]

    def named_parameters(self) -> Iterator[tuple[str, RemoteParameter]]:
        for name, shape in self._named_shapes():
            yield name, RemoteParameter(self, name, shape)

    def parameters(self) -> Iterator[RemoteParameter]:
        for _, p in self.named_parameters():
            yield p

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return RemoteModule(self, name).resolve()

    def __repr__(self) -> str:
        if self._public is not None:
            return str(self._public["repr"])
        return repr(self._module)  # what the service will print: fx_spec checked each module's repr


class SessionOptimizer:
    """``optimizer = rnet.optimizer``: ``zero_grad`` and ``step`` on the session (its state lives there)."""

    def __init__(self, net: RemoteNet) -> None:
        self._net = net

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._net.zero_grad(set_to_none)

    def step(self) -> None:
        self._net.step()
