r"""Networks in and out: ONNX files, PyTorch modules and scikit-learn MLPs as :class:`ReluNetwork`.

A :class:`~formulation.network.ReluNetwork` is the chain

.. math::

    Z_l = W_l X_{l-1} + b_l 1^T,\qquad X_l = \max(Z_l, 0)\ (l < L),\qquad Z_L \text{ linear},

with ``W_l`` of shape ``(n_l, n_{l-1})`` and samples as columns. The frameworks store samples as
rows, ``Y = X Wᵀ + b`` (PyTorch's ``nn.Linear.weight`` and ONNX ``Gemm`` with ``transB=1`` hold
``W_l`` itself; scikit-learn's ``coefs_`` and ONNX ``MatMul`` hold ``W_lᵀ``). Accepted here are
exactly the networks of that chain:

* ONNX: ``[Flatten] (Gemm | MatMul [Add]) Relu (Gemm | MatMul [Add]) Relu ... (Gemm | MatMul [Add])``
  with constant weights (initialisers or ``Constant`` nodes), one input and one output;
* PyTorch: ``nn.Sequential([nn.Flatten], nn.Linear, nn.ReLU, ..., nn.Linear)``;
* scikit-learn: ``MLPRegressor`` (or any estimator with ``coefs_``/``intercepts_``) with
  ``activation="relu"`` and a linear output.

Anything else is refused with a :class:`~formulation.results.ProblemError` that names the
operator (or module) and where it is; nothing is fused, dropped or approximated. No path unpickles:
ONNX is protobuf, read with the ``onnx`` package and checked by ``onnx.checker``, and a PyTorch
``.pt``/``.pth`` file (a pickle) is refused by :func:`refuse_pickle`.

The ``onnx`` package is an optional dependency (``pip install 'unrelu[onnx]'``), imported only
when an ONNX file is read or written; ``torch`` likewise (``unrelu[torch]``).
"""

from __future__ import annotations

import os

import numpy as np

from formulation.results import ProblemError, SolverNotFound

__all__ = ["from_onnx", "to_onnx", "from_torch", "to_torch", "from_sklearn", "refuse_pickle", "require_onnx",
           "require_torch", "PICKLE_SUFFIXES",
           "ONNX_OPSET"]

#: Suffixes of PyTorch's pickled files, refused by :meth:`ReluNetwork.load`.
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt")

#: Opset of the files :func:`to_onnx` writes (``Gemm`` and ``Relu`` are unchanged since opset 13/14;
#: 17 is read by every ONNX runtime released since 2022). IR version 8 goes with it.
ONNX_OPSET = 17
ONNX_IR_VERSION = 8

_ONNX_HINT = "ONNX files need the `onnx` package: `pip install onnx` or `pip install 'unrelu[onnx]'`."
_TORCH_HINT = "PyTorch modules need `torch`: `pip install torch` (CPU build) or `pip install 'unrelu[torch]'`."


def require_onnx():
    """The ``onnx`` module, or ``SolverNotFound`` with the install hint."""
    try:
        import onnx
        import onnx.checker
        import onnx.numpy_helper
    except ImportError as exc:
        raise SolverNotFound(_ONNX_HINT) from exc
    return onnx


def require_torch():
    """The ``torch`` module, or ``SolverNotFound`` with the install hint."""
    try:
        import torch
    except ImportError as exc:
        raise SolverNotFound(_TORCH_HINT) from exc
    return torch


def refuse_pickle(path: str) -> None:
    """Raise ``ProblemError`` for a pickled model file (``.pt``, ``.pth``, ...): loading one runs arbitrary code."""
    raise ProblemError(
        f"{path!r} looks like a pickled PyTorch file ({os.path.splitext(path)[1]}); loading it would run arbitrary "
        "code, so it is not offered. Export the model to ONNX instead (`torch.onnx.export(model, example, "
        "'net.onnx', dynamo=False)`, then `ReluNetwork.load('net.onnx')`), or save its weights as .npz: "
        "`ReluNetwork.from_torch(model).save('net.npz')`, or from a state_dict `sd`, "
        "`np.savez('net.npz', W1=sd['0.weight'].numpy(), b1=sd['0.bias'].numpy(), ...)`."
    )


# ====================================================================== the chain, shared by every reader
class _Chain:
    """Collects ``(W_l, b_l)`` in order and enforces affine, ReLU, affine, ..., affine.

    ``where`` names the node or module in every message; ``what`` names the source (a file or a module).
    """

    def __init__(self, what: str, kind: str):
        self.what, self.kind = what, kind  # kind: "node" (ONNX) or "module" (PyTorch)
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.open_layer = False  # the last affine layer has not been followed by a ReLU yet
        self.flatten_allowed = True
        self.flattened = False
        self.last_where = ""

    def affine(self, W: np.ndarray, b: np.ndarray, where: str) -> None:
        if self.open_layer:
            raise ProblemError(f"{self.what}: {where} follows the affine {self.last_where} without a ReLU between "
                               "them; a ReluNetwork alternates affine layers and ReLUs (two affine layers in a row "
                               "are not fused here, so that the weights stay exactly those of the file).")
        if self.weights and W.shape[1] != self.weights[-1].shape[0]:
            raise ProblemError(f"{self.what}: {where} takes {W.shape[1]} inputs but the layer before it "
                               f"({self.last_where}) has {self.weights[-1].shape[0]} outputs: wrong shapes.")
        if b.shape != (W.shape[0],):
            raise ProblemError(f"{self.what}: the bias of {where} has shape {b.shape}, but the layer has "
                               f"{W.shape[0]} outputs: wrong shapes.")
        for name, array in (("weight", W), ("bias", b)):
            if not np.all(np.isfinite(array)):
                bad = int(np.sum(~np.isfinite(array)))
                raise ProblemError(f"{self.what}: the {name} of {where} has {bad} NaN or inf entries; a network "
                                   "with non-finite parameters cannot be evaluated or verified.")
        self.weights.append(W)
        self.biases.append(b)
        self.open_layer = True
        self.flatten_allowed = False
        self.last_where = where

    def relu(self, where: str) -> None:
        if not self.open_layer:
            before = f"after {self.last_where}" if self.last_where else "at the input"
            raise ProblemError(f"{self.what}: {where} is a ReLU {before}, not after an affine layer; a ReluNetwork "
                               "applies exactly one ReLU after each hidden affine layer.")
        self.open_layer = False
        self.last_where = where

    def flatten(self, where: str) -> None:
        if not self.flatten_allowed:
            raise ProblemError(f"{self.what}: {where} is a Flatten after the first layer (or a second Flatten); "
                               "one Flatten is accepted, at the input.")
        self.flatten_allowed = False
        self.flattened = True
        self.last_where = where

    def network(self):
        from formulation.network import ReluNetwork

        if not self.weights:
            raise ProblemError(f"{self.what} has no affine layer (Gemm, MatMul or Linear); nothing to load.")
        if not self.open_layer:
            raise ProblemError(f"{self.what} ends with the ReLU {self.last_where}; a ReluNetwork's output layer is "
                               "linear. To keep the ReLU, append an identity layer (W = I, b = 0) after it in the "
                               "source model.")
        return ReluNetwork(self.weights, self.biases)


#: Operators read by :func:`from_onnx` and the attributes each may carry.
_ATTRIBUTES = {"Gemm": {"alpha", "beta", "transA", "transB"}, "MatMul": set(), "Add": set(), "Relu": set(),
               "Flatten": {"axis"}}


def _bias(array: np.ndarray, n_out: int, what: str, where: str) -> np.ndarray:
    """A bias broadcast along the batch as ONNX does: shapes ``(n,)``, ``(1, n)``, ``()``, ``(1,)``, ``(1, 1)``."""
    if array.size == 1 and array.ndim <= 2:
        return np.full(n_out, float(array.reshape(())), dtype=np.float64)
    if array.shape in ((n_out,), (1, n_out)):
        return array.reshape(n_out).astype(np.float64)
    raise ProblemError(f"{what}: the bias of {where} has shape {array.shape}; a layer with {n_out} outputs needs "
                       f"({n_out},) or (1, {n_out}) (one value per output, the same for every sample): wrong shapes.")


# ====================================================================== ONNX
def _onnx_read(path: str):
    """Load and check an ONNX model, every failure a ``ProblemError`` naming the file."""
    onnx = require_onnx()
    if not os.path.exists(path):
        raise ProblemError(f"ONNX file {path!r} does not exist; check the path.")
    if not os.path.isfile(path):
        raise ProblemError(f"ONNX file {path!r} is not a regular file; give the path of a .onnx file.")
    try:
        # external tensor data would be read from other files named inside this one: not followed
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # DecodeError on a truncated or foreign file, and whatever protobuf raises
        raise ProblemError(f"ONNX file {path!r} could not be parsed ({type(exc).__name__}: {exc}); it is truncated "
                           "or not an ONNX model. Export it again.") from exc
    stored = list(model.graph.initializer) + [attribute.t for node in model.graph.node for attribute in node.attribute
                                              if attribute.HasField("t")]
    for tensor in stored:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ProblemError(f"ONNX file {path!r}: tensor {tensor.name!r} is stored in an external data file, which "
                               "is not read here; save the model with its weights inside "
                               "(`onnx.save_model(model, path, save_as_external_data=False)`).")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and the C++ checker's other errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProblemError(f"ONNX file {path!r} fails onnx.checker ({first}); it is not a valid ONNX model. "
                           "Export it again.") from exc
    return onnx, model


def from_onnx(path: str | os.PathLike):
    """Read a feed-forward ReLU network from an ONNX file (module docstring for what is accepted).

    ``Gemm`` is taken with its ``alpha``, ``beta`` and ``transB`` attributes applied exactly
    (``W = alpha B'ᵀ``, ``b = beta C``; ``alpha = beta = 1`` leaves the stored numbers untouched);
    ``transA = 1`` is refused, since it transposes the batch. Weights may be float16, float32 or
    float64; they are converted to float64 exactly.

    Raises
    ------
    ProblemError
        A missing, truncated or invalid file; an unsupported operator (named with its node); weights
        that are not constants, not floating point, NaN or inf; shapes that do not chain.
    SolverNotFound
        The ``onnx`` package is not installed.
    """
    path = os.fspath(path)
    onnx, model = _onnx_read(path)
    graph = model.graph
    what = f"ONNX file {path!r}"
    for domain in model.opset_import:
        if domain.domain not in ("", "ai.onnx"):
            raise ProblemError(f"{what} imports the operator set {domain.domain!r}; only the standard ONNX "
                               "operators are read.")

    constants: dict[str, np.ndarray] = {}

    def tensor(proto, name: str) -> np.ndarray:
        try:
            return onnx.numpy_helper.to_array(proto)
        except Exception as exc:
            raise ProblemError(f"{what}: tensor {name!r} could not be read ({exc}).") from exc

    for initializer in graph.initializer:
        constants[initializer.name] = tensor(initializer, initializer.name)
    for sparse in graph.sparse_initializer:
        raise ProblemError(f"{what}: sparse initialiser {sparse.values.name!r} is not supported; store it dense.")

    inputs = [value for value in graph.input if value.name not in constants]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ProblemError(f"{what} has {len(inputs)} data input(s) and {len(graph.output)} output(s); a network "
                           "here has exactly one of each.")
    current = inputs[0].name
    chain = _Chain(what, "node")
    pending = None  # (W, node label) of a MatMul whose Add may follow

    def label(node, index: int) -> str:
        return f"node {index} ({node.op_type}" + (f" {node.name!r})" if node.name else ")")

    def constant(node, name: str, index: int, role: str) -> np.ndarray:
        if name not in constants:
            raise ProblemError(f"{what}: the {role} of {label(node, index)} is {name!r}, which is computed by the "
                               "graph, not a constant; weights must be initialisers or Constant nodes.")
        array = constants[name]
        if not np.issubdtype(array.dtype, np.floating):
            raise ProblemError(f"{what}: the {role} {name!r} of {label(node, index)} has dtype {array.dtype}; "
                               "weights must be floating point.")
        return array.astype(np.float64)

    def weight(node, index: int, where: str, role: str, first: str) -> np.ndarray:
        """The 2-D constant second input of a Gemm or MatMul whose first input is the data."""
        if node.input[0] != current:
            raise ProblemError(f"{what}: {where} multiplies the constant {node.input[0]!r} by the data; the "
                               f"data must be its first input {first}.")
        B = constant(node, node.input[1], index, role)
        if B.ndim != 2:
            raise ProblemError(f"{what}: the {role} of {where} has shape {B.shape}; it must be 2-D: wrong shapes.")
        return B

    def close_matmul(bias: np.ndarray | None, where: str) -> None:
        nonlocal pending
        W, matmul_where = pending
        pending = None
        chain.affine(W, np.zeros(W.shape[0]) if bias is None else bias, where if bias is not None else matmul_where)

    for index, node in enumerate(graph.node):
        where = label(node, index)
        if node.domain not in ("", "ai.onnx"):
            raise ProblemError(f"{what}: {where} is from the operator domain {node.domain!r}; only the standard "
                               "operators Gemm, MatMul, Add, Relu, Flatten (and Constant) are read.")
        attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
        if node.op_type == "Constant":
            if set(attributes) != {"value"} or len(node.output) != 1:
                raise ProblemError(f"{what}: {where} sets {sorted(attributes)}; only a Constant with a `value` "
                                   "tensor is read.")
            constants[node.output[0]] = tensor(attributes["value"], node.output[0])
            continue
        if pending is not None and node.op_type != "Add":
            close_matmul(None, "")
        data = [name for name in node.input if name and name not in constants]
        if node.op_type not in _ATTRIBUTES:
            raise ProblemError(f"{what}: {where} is not supported; a ReluNetwork is read from Gemm or MatMul (+Add) "
                               "and Relu nodes, with an optional Flatten at the input.")
        unknown = sorted(set(attributes) - _ATTRIBUTES[node.op_type])
        if unknown:  # e.g. `broadcast` of Gemm and Add before opset 7, whose broadcasting differs
            raise ProblemError(f"{what}: {where} has attribute(s) {unknown}, which are not supported (only "
                               f"{sorted(_ATTRIBUTES[node.op_type]) or 'none'}); re-export with opset 13 or later.")
        if current not in data:
            raise ProblemError(f"{what}: {where} takes {list(node.input)}, not the result of the node before it "
                               f"({current!r}): the graph must be one chain of layers without branches.")
        if data != [current] or len(node.output) != 1:
            others = [name for name in data if name != current] or [current]
            raise ProblemError(f"{what}: {where} takes {others} besides {current!r}, the result of the node before "
                               "it; every other input must be a constant (initialiser or Constant node) and the "
                               "graph one chain of layers without branches.")
        if node.op_type == "Flatten":
            if attributes.get("axis", 1) != 1:
                raise ProblemError(f"{what}: {where} has axis={attributes['axis']}; only axis=1 (keep the batch "
                                   "dimension, flatten the rest) is supported.")
            chain.flatten(where)
        elif node.op_type == "Relu":
            chain.relu(where)
        elif node.op_type == "Gemm":
            if attributes.get("transA", 0):
                raise ProblemError(f"{what}: {where} has transA=1, which transposes the batch; only transA=0 is "
                                   "supported.")
            B = weight(node, index, where, "weight B", "A")
            W = B if attributes.get("transB", 0) else B.T
            alpha, beta = float(attributes.get("alpha", 1.0)), float(attributes.get("beta", 1.0))
            if alpha != 1.0:
                W = alpha * W
            if len(node.input) > 2 and node.input[2]:
                b = _bias(constant(node, node.input[2], index, "bias C"), W.shape[0], what, where)
                if beta != 1.0:
                    b = beta * b
            else:
                b = np.zeros(W.shape[0])
            chain.affine(np.ascontiguousarray(W), b, where)
        elif node.op_type == "MatMul":
            B = weight(node, index, where, "weight", "(X @ W)")
            pending = (np.ascontiguousarray(B.T), where)
        else:  # Add
            if pending is None:
                raise ProblemError(f"{what}: {where} does not follow a MatMul; an Add is read only as the bias of "
                                   "the MatMul before it.")
            (other,) = [name for name in node.input if name != current] or [None]
            if other is None:
                raise ProblemError(f"{what}: {where} adds the data to itself; an Add must add a constant bias.")
            bias = _bias(constant(node, other, index, "bias"), pending[0].shape[0], what, where)
            close_matmul(bias, where)
        current = node.output[0]
    if pending is not None:
        close_matmul(None, "")
    if graph.output[0].name != current:
        raise ProblemError(f"{what}: the graph output {graph.output[0].name!r} is not the result of the last "
                           f"node ({current!r}); the graph must be one chain of layers.")
    network = chain.network()
    _check_declared_shape(what, inputs[0], network.widths[0], "input", flatten=chain.flattened)
    _check_declared_shape(what, graph.output[0], network.widths[-1], "output", flatten=False)
    return network


def _check_declared_shape(what: str, value, width: int, role: str, *, flatten: bool) -> None:
    """Compare the static shape declared for the graph's input or output with the network's width."""
    if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
        return
    dims = value.type.tensor_type.shape.dim
    if not dims:
        raise ProblemError(f"{what}: the {role} {value.name!r} is declared as a scalar; it must be (batch, "
                           f"{width}).")
    sizes = [dim.dim_value if dim.HasField("dim_value") else None for dim in dims[1:]]
    if len(dims) == 1 or (not flatten and len(dims) != 2):
        raise ProblemError(f"{what}: the {role} {value.name!r} has {len(dims)} dimension(s); it must be (batch, "
                           f"{width})" + (" or (batch, ...) before a Flatten." if flatten else "."))
    if all(size is not None for size in sizes) and int(np.prod(sizes)) != width:
        raise ProblemError(f"{what}: the {role} {value.name!r} is declared with shape (batch, "
                           f"{', '.join(map(str, sizes))}) but the network's {'first' if role == 'input' else 'last'} "
                           f"layer has {width} {'inputs' if role == 'input' else 'outputs'}: wrong shapes.")


def to_onnx(network, path: str | os.PathLike, *, dtype: str = "float64", opset: int = ONNX_OPSET) -> str:
    """Write ``network`` as an ONNX file of ``Gemm`` (``transB=1``, ``W_l`` stored as is) and ``Relu`` nodes.

    The input ``input`` has shape ``(N, n0)`` with a symbolic batch ``N``, the output ``output``
    ``(N, nL)``: samples are rows, as in every framework that reads ONNX. ``dtype="float64"`` (default)
    keeps the weights exactly, so :func:`from_onnx` gives back the same network; ``"float32"`` rounds
    them (what most runtimes run fastest). The file is checked with ``onnx.checker`` and written to a
    temporary name, then renamed. Returns the path written.
    """
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    types = {"float64": (np.float64, TensorProto.DOUBLE), "float32": (np.float32, TensorProto.FLOAT)}
    if str(dtype) not in types:
        raise ProblemError(f"dtype={dtype!r} is not supported for ONNX export; choose 'float64' or 'float32'.")
    numpy_type, element = types[str(dtype)]
    path = os.fspath(path)
    nodes, initializers = [], []
    current = "input"
    for index, (W, b) in enumerate(zip(network.weights, network.biases), start=1):
        initializers.append(numpy_helper.from_array(np.asarray(W, dtype=numpy_type), name=f"W{index}"))
        initializers.append(numpy_helper.from_array(np.asarray(b, dtype=numpy_type), name=f"b{index}"))
        output = "output" if index == network.depth else f"Z{index}"
        nodes.append(helper.make_node("Gemm", [current, f"W{index}", f"b{index}"], [output], name=f"layer{index}",
                                      transB=1))
        current = output
        if index < network.depth:
            nodes.append(helper.make_node("Relu", [current], [f"X{index}"], name=f"relu{index}"))
            current = f"X{index}"
    graph = helper.make_graph(
        nodes, "relu_network",
        [helper.make_tensor_value_info("input", element, ["N", network.widths[0]])],
        [helper.make_tensor_value_info("output", element, ["N", network.widths[-1]])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(opset))],
                              producer_name="unrelu", ir_version=ONNX_IR_VERSION)
    onnx.checker.check_model(model)
    temporary = path + ".tmp.onnx"
    onnx.save_model(model, temporary)
    os.replace(temporary, path)
    return path


# ====================================================================== PyTorch
def from_torch(module):
    """A :class:`ReluNetwork` with the weights of ``module``, converted to float64 exactly.

    ``module`` is an ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU`` (``nn.Flatten`` with the default
    ``start_dim=1, end_dim=-1`` first is accepted), alternating and ending with an ``nn.Linear``; a lone
    ``nn.Linear`` is a one-layer network. Nested ``nn.Sequential`` are read in order. Any other module is
    refused by name, and so is a ``Linear`` followed by a ``Linear``.
    """
    torch = require_torch()
    nn = torch.nn
    if isinstance(module, nn.Linear):
        module = nn.Sequential(module)
    if not isinstance(module, nn.Sequential):
        raise ProblemError(f"from_torch takes an nn.Sequential of nn.Linear / nn.ReLU (and nn.Flatten first), got "
                           f"{type(module).__name__}; for another module, build an nn.Sequential with its layers, "
                           "or export it to ONNX.")

    def leaves(sequential, prefix=""):
        for name, child in sequential.named_children():
            if isinstance(child, nn.Sequential):
                yield from leaves(child, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", child

    chain = _Chain(f"module {type(module).__name__}", "module")
    for name, child in leaves(module):
        where = f"module {name!r} ({type(child).__name__})"
        if type(child) is nn.Linear:
            W = child.weight.detach().cpu().to(torch.float64).numpy().copy()
            if child.bias is None:
                b = np.zeros(W.shape[0])
            else:
                b = child.bias.detach().cpu().to(torch.float64).numpy().copy()
            chain.affine(W, b, where)
        elif type(child) is nn.ReLU:
            chain.relu(where)
        elif type(child) is nn.Flatten:
            if (child.start_dim, child.end_dim) != (1, -1):
                raise ProblemError(f"{where} has start_dim={child.start_dim}, end_dim={child.end_dim}; only the "
                                   "default (1, -1) is supported.")
            chain.flatten(where)
        else:
            raise ProblemError(f"{where} is not supported; from_torch reads nn.Linear and nn.ReLU (and nn.Flatten "
                               "at the input). Export other models to ONNX only if they are made of these layers.")
    return chain.network()


def to_torch(network, dtype="float64"):
    """``nn.Sequential(nn.Linear, nn.ReLU, ..., nn.Linear)`` with the weights of ``network``.

    ``dtype`` is ``"float64"`` (default; the weights exactly), ``"float32"``, or a ``torch.dtype``. The
    module is on the CPU with gradients enabled, ready for training or ``torch.onnx.export``.
    """
    torch = require_torch()
    names = {"float64": torch.float64, "float32": torch.float32, torch.float64: torch.float64,
             torch.float32: torch.float32}
    if dtype not in names:
        raise ProblemError(f"dtype={dtype!r} is not supported; choose 'float64' or 'float32' (or torch.float64, "
                           "torch.float32).")
    torch_type = names[dtype]
    layers = []
    for index, (W, b) in enumerate(zip(network.weights, network.biases)):
        linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=torch_type)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.asarray(W, dtype=np.float64)).to(torch_type))
            linear.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float64)).to(torch_type))
        layers.append(linear)
        if index < network.depth - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


# ====================================================================== scikit-learn
def from_sklearn(estimator):
    """A :class:`ReluNetwork` from a fitted scikit-learn ``MLPRegressor`` (``coefs_``, ``intercepts_``).

    scikit-learn stores ``coefs_[l]`` as ``(n_{l-1}, n_l)``, samples as rows; here ``W_l = coefs_[l]ᵀ``.
    The hidden activation must be ``"relu"`` and the output activation linear (``out_activation_ ==
    "identity"``, as in ``MLPRegressor``); an ``MLPClassifier``'s logistic or softmax output is refused.
    """
    for attribute in ("coefs_", "intercepts_"):
        if not hasattr(estimator, attribute):
            raise ProblemError(f"{type(estimator).__name__} has no `{attribute}`; pass a fitted MLPRegressor.")
    activation = getattr(estimator, "activation", "relu")
    if activation != "relu":
        raise ProblemError(f"{type(estimator).__name__} has activation={activation!r}; only 'relu' networks are "
                           "ReluNetworks. Refit with activation='relu'.")
    output = getattr(estimator, "out_activation_", "identity")
    if output != "identity":
        raise ProblemError(f"{type(estimator).__name__} has out_activation_={output!r}; a ReluNetwork's output "
                           "layer is linear ('identity', as in MLPRegressor).")
    from formulation.network import ReluNetwork

    return ReluNetwork([np.asarray(W).T for W in estimator.coefs_], list(estimator.intercepts_))
