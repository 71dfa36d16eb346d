"""Reloaded graph programs made into modules that attacks, hooks and Monte Carlo dropout can use.

* A ``torch.export`` program (MLflow's ``pt2`` format): ``ExportedProgram.module()`` refuses
  ``.eval()``/``.train()``, which ART and torchattacks call, and runs as one flat graph, so no
  forward hook on a named layer fires. :func:`from_exported` unflattens it instead
  (``torch.export.unflatten``): the original module tree, each submodule a graph that is called
  (hooks fire), with ``.eval()``/``.train()``, input gradients, and the batch dimension as free as
  the export left it (MLflow marks it dynamic when the logged example has more than one image).
* A TorchScript module: no hooks can be registered on it. :func:`from_torchscript` converts it to
  an exported program (``torch._export.converter``) whose flat graph gets an identity "tap"
  module after each operation of a weighted layer (``conv``, ``linear``, norms), named as that
  layer, and one on the input of each linear layer.

Both programs were exported in eval mode, which fixes their dropout off; each dropout operation
is given back a real ``nn.Dropout`` so that Bayesian uncertainty (MC dropout) can switch it on.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import warnings
from typing import Iterator

import torch
from torch import nn
from torch.utils import _pytree as pytree  # torch's own walk over nested outputs

from medart.errors import ModelError
from medart.models.adapter import Layout


def _op(node: torch.fx.Node) -> str:
    return str(node.target) if node.op == "call_function" else ""


def _is(node: torch.fx.Node, name: str) -> bool:
    return _op(node).startswith((f"aten.{name}.", f"aten.{name}_."))


def _batch(ep: "torch.export.ExportedProgram") -> tuple[int | None, tuple]:
    """The user input's batch size when the export fixed it (``None`` when free), and its shape."""
    names = set(ep.graph_signature.user_inputs)
    node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name in names)
    shape = tuple(node.meta["val"].shape)
    return (shape[0] if isinstance(shape[0], int) else None), shape


def input_shape(ep: "torch.export.ExportedProgram") -> tuple:
    """``(N, C, H, W)`` of the program's input; fixed sizes are ints, free ones symbols."""
    return _batch(ep)[1]


def from_exported(ep: "torch.export.ExportedProgram") -> tuple[nn.Module, Layout]:
    """An unflattened module of ``ep`` and its :class:`Layout` (linear layers by name, fixed batch)."""
    linears, dropouts = [], {}
    for node in ep.graph.nodes:
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        if not stack:
            continue
        path = stack[-1][0]
        if _is(node, "linear"):
            linears.append(path)
        elif _is(node, "dropout") and isinstance(node.args[1], float):
            dropouts[path] = node.args[1]
    batch, _ = _batch(ep)
    if batch is not None and batch != 1:
        raise ModelError(f"the program was exported for batches of exactly {batch} images; log it again with an "
                         "input example of a different batch size (MLflow then frees the batch dimension)")
    network = torch.export.unflatten(ep)
    for path, p in dropouts.items():
        parent, _, leaf = path.rpartition(".")
        holder = network.get_submodule(parent) if parent else network
        if leaf in holder._modules:  # called as a submodule: hand it a real dropout layer
            holder._modules[leaf] = nn.Dropout(p)
    return network, Layout(linears=tuple(dict.fromkeys(linears)), fixed_batch=batch)


def from_torchscript(module: torch.jit.ScriptModule, example: torch.Tensor) -> tuple[nn.Module, Layout]:
    """A graph module computing what ``module`` computes on inputs shaped like ``example``, with
    tap modules named as ``module``'s weighted layers, and its :class:`Layout`."""
    from torch._export.converter import TS2EPConverter  # torch's TorchScript → torch.export converter

    try:
        with _quiet_export():
            ep = TS2EPConverter(module, (example,)).convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds; the user gets one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"the TorchScript model cannot be converted for feature taps on a {tuple(example.shape)} "
                         f"input ({type(exc).__name__}: {first[:160]}); check `input_channels` and `input_size`") from exc
    flat = ep.module()
    graph = flat.graph
    network = torch.fx.GraphModule(flat, graph)  # a plain GraphModule: .eval()/.train() work
    taps: dict[str, nn.Module] = {}
    linears: list[str] = []
    inputs: dict[str, nn.Module] = {}
    for index, node in enumerate(list(graph.nodes)):
        owner = _owner(node)
        if _is(node, "dropout"):
            _replace(network, node, nn.Dropout(float(node.args[1])), f"dropout_{index}")
        elif owner is not None:
            if _is(node, "linear"):
                inputs[owner] = _tap_before(network, node, f"{owner}.input")
                linears.append(owner)
            out = next((u for u in node.users if u.target is operator.getitem and u.args[1] == 0), node)
            taps[owner] = _tap_after(network, out, owner)
    graph.lint()
    network.recompile()
    with torch.no_grad():
        same = _same_outputs(network.eval()(example), module(example))
    if not same:
        raise ModelError("the TorchScript model converted for feature taps computes other outputs than the script; "
                         "export the network with torch.export or give its weights and a model card instead")
    return network, Layout(taps=taps, linears=tuple(linears), inputs=inputs)


def _same_outputs(ours, theirs) -> bool:
    """Whether two outputs hold the same values (tensors to float tolerance) in the same order: a
    tensor, or a dict, tuple or list of them (the converted program returns immutable copies)."""
    ours, theirs = pytree.tree_leaves(ours), pytree.tree_leaves(theirs)
    return len(ours) == len(theirs) and all(_same(a, b) for a, b in zip(ours, theirs))


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    return not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor) and a == b


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """The converter's notes (deprecations, shape specialisations) are torch's business, not the user's."""
    logger = logging.getLogger("torch._export")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _owner(node: torch.fx.Node) -> str | None:
    """The layer whose weights an operation uses (``head.3`` for ``head.3.weight``), if any."""
    if node.op != "call_function":
        return None
    for arg in node.args:
        if isinstance(arg, torch.fx.Node) and arg.op == "get_attr" and "." in str(arg.target):
            return str(arg.target).rsplit(".", 1)[0]
    return None


def _key(name: str) -> str:
    return "tap_" + name.replace(".", "_")


def _tap_after(network: torch.fx.GraphModule, node: torch.fx.Node, name: str) -> nn.Module:
    tap = nn.Identity()
    network.add_submodule(_key(name), tap)
    with network.graph.inserting_after(node):
        new = network.graph.call_module(_key(name), (node,))
    node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    return tap


def _tap_before(network: torch.fx.GraphModule, node: torch.fx.Node, name: str) -> nn.Module:
    tap = nn.Identity()
    network.add_submodule(_key(name), tap)
    with network.graph.inserting_before(node):
        new = network.graph.call_module(_key(name), (node.args[0],))
    node.args = (new, *node.args[1:])
    return tap


def _replace(network: torch.fx.GraphModule, node: torch.fx.Node, module: nn.Module, name: str) -> None:
    network.add_submodule(name, module)
    with network.graph.inserting_after(node):
        new = network.graph.call_module(name, (node.args[0],))
    node.replace_all_uses_with(new)
    network.graph.erase_node(node)
