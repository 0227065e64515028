"""Networks in and out: ONNX files, PyTorch modules, scikit-learn MLPs (formulation.interchange).

The ONNX graphs are evaluated independently with ``onnx.reference.ReferenceEvaluator`` (the operator
definitions in numpy), PyTorch modules with torch itself and MLPRegressor with its own ``predict``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import solvers
from formulation.network import ReluNetwork
from formulation.results import ProblemError

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator
except ImportError:  # the PyTorch and scikit-learn tests below still run
    onnx = None

#: ONNX in/out; CI installs the extra, so these run there.
needs_onnx = pytest.mark.skipif(onnx is None, reason="ONNX in/out needs the onnx package (pip install 'unrelu[onnx]')")

TOL = 1e-12  # float64 forward passes of the same weights; only the order of summation may differ


def _inputs(n0: int, N: int = 9, seed: int = 0) -> np.ndarray:
    """Samples as ROWS, as the frameworks take them."""
    return np.random.default_rng(seed).normal(size=(N, n0))


def _run_onnx(path, X: np.ndarray) -> np.ndarray:
    session = ReferenceEvaluator(str(path))
    name = session.input_names[0]
    return session.run(None, {name: X})[0]


def _same_weights(a: ReluNetwork, b: ReluNetwork) -> bool:
    return a.widths == b.widths and all(np.array_equal(x, y) for x, y in zip(a.weights + a.biases,
                                                                              b.weights + b.biases))


def _save_graph(path, nodes, initializers, n_in, n_out, *, input_shape=None, opset=17):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, input_shape or ["N", n_in])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", n_out])],
        initializer=[numpy_helper.from_array(np.asarray(v, dtype=np.float64), name=k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


@needs_onnx
# ====================================================================== ONNX out and back
def test_onnx_round_trip_is_exact_in_float64_and_runs_in_an_onnx_evaluator(tmp_path):
    network = ReluNetwork.random([4, 7, 5, 3], seed=2)
    path = tmp_path / "net.onnx"
    assert network.save(path) == str(path)  # the suffix picks ONNX
    model = onnx.load(str(path))
    assert [node.op_type for node in model.graph.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    back = ReluNetwork.load(path)
    assert _same_weights(network, back)
    X = _inputs(4)
    np.testing.assert_allclose(_run_onnx(path, X), network.forward(X.T).T, rtol=0, atol=TOL)


@needs_onnx
def test_onnx_float32_export_rounds_the_weights_to_float32(tmp_path):
    network = ReluNetwork.random([3, 6, 2], seed=4)
    path = network.to_onnx(tmp_path / "net32.onnx", dtype="float32")
    back = ReluNetwork.from_onnx(path)
    for original, read in zip(network.weights + network.biases, back.weights + back.biases):
        np.testing.assert_array_equal(read, original.astype(np.float32).astype(np.float64))
    with pytest.raises(ProblemError, match="float16"):
        network.to_onnx(tmp_path / "net16.onnx", dtype="float16")


@needs_onnx
# ====================================================================== three sources, one forward pass
def test_pytorch_export_to_onnx_gives_the_same_forward_pass(tmp_path):
    torch = pytest.importorskip("torch", reason="needs PyTorch")
    torch.manual_seed(0)
    # Flatten at the input: the model takes (N, 2, 3) and flattens it row-major to 6 features
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)).double()
    path = tmp_path / "torch.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter announces its successor
        torch.onnx.export(model, (torch.zeros(1, 2, 3, dtype=torch.float64),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    assert "Flatten" in [node.op_type for node in onnx.load(str(path)).graph.node]
    network = ReluNetwork.load(path)
    assert network.widths == (6, 8, 5, 2)
    X = np.random.default_rng(1).normal(size=(11, 2, 3))
    expected = model(torch.from_numpy(X)).detach().numpy()
    np.testing.assert_allclose(network.forward(X.reshape(11, 6).T).T, expected, rtol=0, atol=TOL)
    assert _same_weights(network, ReluNetwork.from_torch(model))


def test_sklearn_mlp_regressor_gives_the_same_forward_pass():
    neural = pytest.importorskip("sklearn.neural_network", reason="needs scikit-learn")
    X = _inputs(4, N=60)
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs' iteration limit
        mlp = neural.MLPRegressor(hidden_layer_sizes=(6, 5), max_iter=50, solver="lbfgs", random_state=0).fit(X, y)
    network = ReluNetwork.from_sklearn(mlp)
    assert network.widths == (4, 6, 5, 1)
    np.testing.assert_array_equal(network.weights[0], mlp.coefs_[0].T)  # sklearn's W is (n_in, n_out)
    np.testing.assert_allclose(network.forward(X.T)[0], mlp.predict(X), rtol=0, atol=TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tanh = neural.MLPRegressor(hidden_layer_sizes=(3,), activation="tanh", max_iter=5, solver="lbfgs").fit(X, y)
    with pytest.raises(ProblemError, match="activation='tanh'"):
        ReluNetwork.from_sklearn(tanh)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classifier = neural.MLPClassifier(hidden_layer_sizes=(3,), max_iter=5, solver="lbfgs").fit(X, y > 0)
    with pytest.raises(ProblemError, match="out_activation_='logistic'"):
        ReluNetwork.from_sklearn(classifier)


@needs_onnx
def test_onnx_helper_matmul_add_graph_gives_the_same_forward_pass(tmp_path):
    rng = np.random.default_rng(3)
    W1, b1, W2, b2 = rng.normal(size=(3, 5)), rng.normal(size=5), rng.normal(size=(5, 2)), rng.normal(size=(1, 2))
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["m1"], name="mm1"),
             helper.make_node("Add", ["b1", "m1"], ["z1"], name="add1"),  # bias first: Add commutes
             helper.make_node("Relu", ["z1"], ["h1"], name="relu1"),
             helper.make_node("MatMul", ["h1", "W2"], ["m2"], name="mm2"),
             helper.make_node("Add", ["m2", "b2"], ["y"], name="add2")]
    path = _save_graph(tmp_path / "mm.onnx", nodes, {"W1": W1, "b1": b1, "W2": W2, "b2": b2}, 3, 2)
    network = ReluNetwork.load(path)
    np.testing.assert_array_equal(network.weights[0], W1.T)
    X = _inputs(3)
    np.testing.assert_allclose(network.forward(X.T).T, _run_onnx(path, X), rtol=0, atol=TOL)


@needs_onnx
def test_onnx_helper_gemm_attributes_and_constant_nodes(tmp_path):
    """transB=0, alpha, beta, a (1, n) bias, a missing bias, weights from a Constant node, MatMul without Add."""
    rng = np.random.default_rng(5)
    B1, C1 = rng.normal(size=(4, 6)), rng.normal(size=(1, 6))
    B2 = rng.normal(size=(3, 6))
    B3 = rng.normal(size=(3, 2))
    nodes = [helper.make_node("Gemm", ["x", "B1", "C1"], ["z1"], alpha=0.5, beta=2.0, name="g1"),
             helper.make_node("Relu", ["z1"], ["h1"]),
             helper.make_node("Constant", [], ["B2"], value=numpy_helper.from_array(B2, name="B2")),
             helper.make_node("Gemm", ["h1", "B2"], ["z2"], transB=1, alpha=-1.5, name="g2"),
             helper.make_node("Relu", ["z2"], ["h2"]),
             helper.make_node("MatMul", ["h2", "B3"], ["y"], name="last")]
    path = _save_graph(tmp_path / "gemm.onnx", nodes, {"B1": B1, "C1": C1, "B3": B3}, 4, 2)
    network = ReluNetwork.load(path)
    assert network.widths == (4, 6, 3, 2)
    np.testing.assert_array_equal(network.biases[1], np.zeros(3))
    X = _inputs(4)
    np.testing.assert_allclose(network.forward(X.T).T, _run_onnx(path, X), rtol=0, atol=TOL)


# ====================================================================== PyTorch in and out
def test_torch_round_trip_exact_in_float64_and_rounded_in_float32():
    torch = pytest.importorskip("torch", reason="needs PyTorch")
    network = ReluNetwork.random([5, 8, 4, 3], seed=6)
    module = network.to_torch()
    assert [type(layer).__name__ for layer in module] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert _same_weights(network, ReluNetwork.from_torch(module))
    X = _inputs(5)
    np.testing.assert_allclose(module(torch.from_numpy(X)).detach().numpy(), network.forward(X.T).T, rtol=0,
                               atol=TOL)
    single = network.to_torch(dtype=torch.float32)
    assert single[0].weight.dtype == torch.float32
    back = ReluNetwork.from_torch(single)
    for original, read in zip(network.weights + network.biases, back.weights + back.biases):
        np.testing.assert_array_equal(read, original.astype(np.float32).astype(np.float64))
    # a float32 forward pass agrees with float64 to float32 rounding
    output32 = single(torch.from_numpy(X.astype(np.float32))).detach().numpy()
    np.testing.assert_allclose(output32, network.forward(X.T).T, rtol=1e-5, atol=1e-5)
    with pytest.raises(ProblemError, match="float16"):
        network.to_torch(dtype="float16")


def test_from_torch_reads_a_lone_linear_a_nested_sequential_and_a_linear_without_bias():
    torch = pytest.importorskip("torch", reason="needs PyTorch")
    nn = torch.nn
    lone = ReluNetwork.from_torch(nn.Linear(3, 2))
    assert lone.widths == (3, 2)
    nested = nn.Sequential(nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(inplace=True)), nn.Linear(4, 1))
    network = ReluNetwork.from_torch(nested)
    assert network.widths == (3, 4, 1)
    np.testing.assert_array_equal(network.biases[0], np.zeros(4))


@pytest.mark.parametrize("layers, match", [
    (lambda nn: [nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)], r"module '1' \(Tanh\) is not supported"),
    (lambda nn: [nn.Linear(3, 4), nn.Linear(4, 1)], r"module '1' \(Linear\) follows the affine module '0'"),
    (lambda nn: [nn.Linear(3, 4), nn.ReLU()], r"ends with the ReLU module '1'"),
    (lambda nn: [nn.ReLU(), nn.Linear(3, 1)], r"module '0' \(ReLU\) is a ReLU at the input"),
    (lambda nn: [nn.Linear(3, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 1)], r"Flatten after the first layer"),
    (lambda nn: [nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 1)], r"takes 5 inputs but the layer before it"),
    (lambda nn: [nn.Flatten(start_dim=2), nn.Linear(3, 1)], r"start_dim=2"),
])
def test_from_torch_refuses_what_is_not_a_relu_chain_by_name(layers, match):
    torch = pytest.importorskip("torch", reason="needs PyTorch")
    with pytest.raises(ProblemError, match=match):
        ReluNetwork.from_torch(torch.nn.Sequential(*layers(torch.nn)))


def test_from_torch_refuses_other_modules_and_nan_weights():
    torch = pytest.importorskip("torch", reason="needs PyTorch")
    with pytest.raises(ProblemError, match="takes an nn.Sequential.*got Conv1d"):
        ReluNetwork.from_torch(torch.nn.Conv1d(1, 1, 2))
    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight[0, 0] = float("nan")
    with pytest.raises(ProblemError, match=r"weight of module '0' \(Linear\) has 1 NaN"):
        ReluNetwork.from_torch(torch.nn.Sequential(layer))


# ====================================================================== bad files
def test_pickled_torch_files_are_refused_with_the_way_out(tmp_path):
    torch = pytest.importorskip("torch", reason="needs PyTorch")
    for suffix in (".pt", ".pth"):
        path = tmp_path / f"model{suffix}"
        torch.save(torch.nn.Sequential(torch.nn.Linear(2, 1)).state_dict(), str(path))
        with pytest.raises(ProblemError, match=r"pickle.*arbitrary code.*ONNX.*state_dict.*npz"):
            ReluNetwork.load(path)


@needs_onnx
def test_truncated_and_foreign_onnx_files_are_refused(tmp_path):
    good = ReluNetwork.random([3, 4, 1], seed=0).to_onnx(tmp_path / "good.onnx")
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProblemError, match=r"truncated\.onnx.*(could not be parsed|fails onnx\.checker)"):
        ReluNetwork.load(truncated)
    text = tmp_path / "text.onnx"
    text.write_text("not a model at all")
    with pytest.raises(ProblemError, match=r"text\.onnx.*(could not be parsed|fails onnx\.checker)"):
        ReluNetwork.load(text)
    with pytest.raises(ProblemError, match="does not exist"):
        ReluNetwork.load(tmp_path / "missing.onnx")


@needs_onnx
def test_unsupported_operator_is_refused_naming_operator_and_node(tmp_path):
    W = np.ones((3, 2))
    nodes = [helper.make_node("MatMul", ["x", "W"], ["z"], name="dense"),
             helper.make_node("Sigmoid", ["z"], ["y"], name="squash")]
    path = _save_graph(tmp_path / "sig.onnx", nodes, {"W": W}, 3, 2)
    with pytest.raises(ProblemError, match=r"node 1 \(Sigmoid 'squash'\) is not supported"):
        ReluNetwork.load(path)


@needs_onnx
@pytest.mark.parametrize("case, match", [
    ("transA", r"node 0 \(Gemm 'g'\) has transA=1"),
    ("nan", r"the bias of node 0 \(Gemm 'g'\) has 1 NaN"),
    ("chain", r"node 2 \(Gemm 'h'\) takes 4 inputs but the layer before it .* has 5 outputs: wrong shapes"),
    ("declared", r"input 'x' is declared with shape \(batch, 7\) but the network's first layer has 3 inputs"),
    ("bias", r"the bias of node 0 \(Gemm 'g'\) has shape \(5, 1\)"),
    ("final_relu", r"ends with the ReLU node 1 \(Relu"),
    ("two_gemms", r"node 1 \(Gemm 'h'\) follows the affine node 0 \(Gemm 'g'\) without a ReLU"),
    ("branch", r"node 2 \(Add 'skip'\) takes \['z'\] besides 'r'.*one chain of layers without branches"),
    ("old_add", r"node 1 \(Add 'add'\) has attribute\(s\) \['broadcast'\], which are not supported"),
    ("data_weight", r"node 2 \(Relu\) takes \['x'\], not the result of the node before it \('r'\)"),
])
def test_bad_onnx_graphs_are_refused_by_name(tmp_path, case, match):
    rng = np.random.default_rng(0)
    B, C = rng.normal(size=(5, 3)), rng.normal(size=5)
    values = {"B": B, "C": C}
    g = dict(inputs=["x", "B", "C"], outputs=["z"], name="g", transB=1)
    n_out, shape = 5, None
    if case == "transA":
        nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["y"], name="g", transA=1)]
        values["B"] = rng.normal(size=(3, 5))
        shape = [3, "N"]
    elif case == "nan":
        values["C"] = np.array([0.0, np.nan, 0, 0, 0])
        nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["y"], name="g", transB=1)]
    elif case == "chain":
        values["B2"] = rng.normal(size=(2, 4))
        nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["z"], name="g", transB=1),
                 helper.make_node("Relu", ["z"], ["r"]),
                 helper.make_node("Gemm", ["r", "B2"], ["y"], name="h", transB=1)]
        n_out = 2
    elif case == "declared":
        nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["y"], name="g", transB=1)]
        shape = ["N", 7]
    elif case == "bias":
        values["C"] = rng.normal(size=(5, 1))
        nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["y"], name="g", transB=1)]
    elif case == "final_relu":
        nodes = [helper.make_node("Gemm", **g), helper.make_node("Relu", ["z"], ["y"])]
    elif case == "two_gemms":
        values["B2"] = rng.normal(size=(2, 5))
        nodes = [helper.make_node("Gemm", **g), helper.make_node("Gemm", ["z", "B2"], ["y"], name="h", transB=1)]
        n_out = 2
    elif case == "branch":
        nodes = [helper.make_node("Gemm", **g), helper.make_node("Relu", ["z"], ["r"]),
                 helper.make_node("Add", ["r", "z"], ["y"], name="skip")]
    elif case == "old_add":  # opset 6's Add with its own broadcasting attribute
        nodes = [helper.make_node("MatMul", ["x", "Bt"], ["m"], name="mm"),
                 helper.make_node("Add", ["m", "C"], ["y"], name="add", broadcast=1)]
        values["Bt"] = B.T
    else:  # data_weight: a node off the chain
        nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["z"], name="f", transB=1),
                 helper.make_node("Relu", ["z"], ["r"]),
                 helper.make_node("Relu", ["x"], ["x2"]),
                 helper.make_node("Gemm", ["r", "x2"], ["y"], name="g")]
    path = _save_graph(tmp_path / "bad.onnx", nodes, values, 3, n_out, input_shape=shape,
                       opset=6 if case == "old_add" else 17)
    with pytest.raises(ProblemError, match=match):
        ReluNetwork.load(path)


@needs_onnx
def test_external_data_is_not_followed(tmp_path):
    network = ReluNetwork.random([30, 40, 2], seed=0)
    path = network.to_onnx(tmp_path / "net.onnx")
    model = onnx.load(path)
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    with pytest.raises(ProblemError, match="external data file"):
        ReluNetwork.load(tmp_path / "ext.onnx")


# ====================================================================== the command line
@needs_onnx
@pytest.mark.skipif("HIGHS" not in solvers.available_backends(), reason="needs HiGHS (pip install highspy)")
@pytest.mark.parametrize("source", ["to_onnx", "torch"])
def test_verify_reads_an_onnx_network_end_to_end(tmp_path, capsys, source):
    from validation.cli import main

    network = ReluNetwork.random([2, 4, 3], seed=0)
    path = tmp_path / "net.onnx"
    if source == "to_onnx":
        network.to_onnx(path)
    else:
        torch = pytest.importorskip("torch", reason="needs PyTorch")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(network.to_torch(), (torch.zeros(1, 2, dtype=torch.float64),), str(path),
                              dynamo=False, dynamic_axes={"input": {0: "N"}}, input_names=["input"])
    assert _same_weights(ReluNetwork.load(path), network)
    code = main(["verify", "--network", str(path), "--problem", "bound", "--box", "1", "--starts", "0",
                 "--backends", "HIGHS", "--no-adam"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1 instances: relaxation preserved the optimum (proved equal) on 1/1" in out


@needs_onnx
def test_verify_reports_a_bad_onnx_file_as_a_usage_error(tmp_path, capsys):
    from validation.cli import main

    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    assert main(["verify", "--network", str(tmp_path / "bad.onnx"), "--problem", "bound"]) == 2
    assert "bad.onnx" in capsys.readouterr().err


@needs_onnx
def test_train_out_onnx_writes_an_onnx_network(tmp_path, capsys):
    from validation.cli import main

    out = tmp_path / "learned.onnx"
    assert main(["train", "--hidden", "4", "--iters", "2", "--quiet", "--out", str(out)]) == 0
    assert "wrote network " + str(out) in capsys.readouterr().out
    network = ReluNetwork.load(out)
    assert network.widths == (10, 4, 1)
    X = _inputs(10)
    np.testing.assert_allclose(_run_onnx(out, X), network.forward(X.T).T, rtol=0, atol=TOL)
    assert main(["train", "--hidden", "4", "--iters", "1", "--quiet", "--out", str(tmp_path / "plain")]) == 0
    assert ReluNetwork.load(tmp_path / "plain.npz").widths == (10, 4, 1)


def test_missing_onnx_package_names_the_install(tmp_path, monkeypatch, capsys):
    import sys

    from formulation.results import SolverNotFound
    from validation.cli import main

    network = ReluNetwork.random([2, 3, 1], seed=0)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(SolverNotFound, match=r"pip install 'unrelu\[onnx\]'"):
        network.to_onnx(tmp_path / "net.onnx")
    with pytest.raises(SolverNotFound, match="ONNX files need the `onnx` package"):
        ReluNetwork.load(tmp_path / "net.onnx")
    # train refuses before training, not after
    assert main(["train", "--hidden", "2", "--iters", "1", "--quiet", "--out", str(tmp_path / "n.onnx")]) == 2
    captured = capsys.readouterr()
    assert "onnx" in captured.err and "outer iterations" not in captured.out
