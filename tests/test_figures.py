"""Figures of training runs (validation/figures.py): each is drawn on a tiny problem, its axes are read
before it is written (series, labels, scales; no pixel comparison), and the files are checked."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex

from solvers.methods.al_trainer import ALTrainer
from validation import figures
from validation.cli import main
from validation.train_data import teacher_student

pytestmark = pytest.mark.filterwarnings("ignore::formulation.results.ConvergenceWarning")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _history(mode, iters=12):
    data = teacher_student(N=200, N_val=100, n0=3, teacher_hidden=(4,), seed=0)
    trainer = ALTrainer((6,), mode=mode, max_iters=iters, progress=False)
    return trainer.fit(data["X"], data["Y"], data["X_val"], data["Y_val"]).history


def _lines(axis):
    """Drawn series of an axis by label (legend notes, which hold no data, left out)."""
    return {line.get_label(): line for line in axis.get_lines() if len(line.get_xdata())}


def _notes(axis):
    return [text.get_text() for text in axis.get_legend().get_texts()]


def _written(paths):
    for path in paths:
        with open(path, "rb") as handle:
            head = handle.read(400)
        assert head.startswith(PNG_SIGNATURE) if path.endswith(".png") else b"<svg" in head


@pytest.mark.parametrize("mode", ["exact", "restarted"])
def test_training_figure_series(tmp_path, mode):
    history = _history(mode)
    figure = figures.training_figure(history, problem="tiny teacher", budget="at most 12 outer iterations",
                                     threads=1, mode=mode)
    loss, residuals = figure.axes[:2]
    assert "tiny teacher" in figure.get_suptitle() and "12 outer iterations" in figure.get_suptitle()
    assert "1 thread of" in figure.get_suptitle()

    # left: train and validation loss against seconds, from the initial network at 0 s, log y
    lines = _lines(loss)
    assert set(lines) == {"train loss (forward pass)", "validation loss (forward pass)"}
    train = lines["train loss (forward pass)"]
    np.testing.assert_allclose(train.get_xdata(), [row["seconds"] for row in history])
    assert train.get_xdata()[0] == 0.0 and train.get_ydata()[0] == pytest.approx(history[0]["train_loss"])
    assert loss.get_yscale() == "log" and loss.get_xscale() == "linear"
    assert "(s" in loss.get_xlabel() and "fraction of target variance" in loss.get_ylabel()
    top = [child for child in loss.child_axes if child.get_xlabel() == "outer iteration"]
    assert len(top) == 1, "outer iterations on a second x-axis"

    # right: violation per family and KKT residual against iterations; rows without KKT skipped
    lines = _lines(residuals)
    assert residuals.get_yscale() == "log" and residuals.get_xlabel() == "outer iteration"
    kkt = next(line for label, line in lines.items() if label.startswith("KKT residual"))
    with_kkt = [row["iteration"] for row in history if row["kkt"] is not None]
    np.testing.assert_array_equal(kkt.get_xdata(), with_kkt)
    notes = " ".join(_notes(residuals))
    assert history[0]["violation"] <= figures.ROUNDOFF and "iteration 0 left out" in notes
    if mode == "exact":  # every family violated after a sweep, bounds kept exactly by the clipped blocks
        for key in ("viol_C1", "viol_C2", "viol_C3", "viol_C4"):
            series = lines[figures.FAMILIES[key]]
            np.testing.assert_array_equal(series.get_xdata(), [row["iteration"] for row in history[1:]])
            expected = [row[key] if row[key] > 0 else np.nan for row in history[1:]]  # a log axis has no 0
            np.testing.assert_allclose(series.get_ydata(), expected)
        assert "violation 0 at every drawn iteration: bounds" in notes
        # the feasible first point does not stretch the axis: it starts near the smallest drawn violation
        smallest = min(row[key] for row in history[1:] for key in figures.FAMILIES if row[key] > 0)
        assert residuals.get_ylim()[0] > smallest / 10
    else:  # restarted: every iteration ends at a forward pass, the KKT residual is computed every few rows
        assert len(with_kkt) < len(history) and "KKT residual (computed on" in kkt.get_label()
        assert "C1, C2, C3, C4, bounds" in notes and "restarted mode" in notes
    _written(figures.write(figure, str(tmp_path / "history.png"), svg=True))


def test_train_plot_writes_png_and_svg(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    path = tmp_path / "d.npz"
    np.savez(path, X=X, Y=np.maximum(X @ np.array([[1.0], [-2.0], [0.5]]), 0))
    plot = tmp_path / "out" / "history.png"
    assert main(["train", "--data", str(path), "--hidden", "4", "--iters", "3", "--quiet", "--plot", str(plot),
                 "--svg", "--threads", "1"]) == 0
    assert f"wrote plot {plot}" in capsys.readouterr().out
    _written([str(plot), str(plot.with_suffix(".svg"))])


def test_train_svg_is_checked_before_training(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, X=rng.normal(size=(30, 2)), Y=rng.normal(size=(30, 1)))
    (tmp_path / "h.svg").mkdir()  # the SVG's place is a folder
    arguments = ["train", "--data", str(path), "--hidden", "4", "--iters", "2", "--quiet"]
    assert main([*arguments, "--plot", str(tmp_path / "h.png"), "--svg"]) == 2
    assert "is a folder" in capsys.readouterr().err and not (tmp_path / "h.png").exists()
    assert main([*arguments, "--svg"]) == 2
    assert "give --plot" in capsys.readouterr().err


def _synthetic_bench():
    """Rows and traces shaped like bench_one's for digits (one pyscnn peer ran, one did not)."""
    al = [{"seconds": s, "val_loss": 0.26 - 0.05 * s} for s in np.linspace(0, 1, 11)]
    adam = [{"seconds": s, "val_loss": 0.26 - 0.1 * s} for s in np.linspace(0, 1, 5)]
    rows = [{"method": "init (He + ridge output)", "seconds": 0.0, "val_loss": 0.26, "val_acc": 0.946},
            {"method": "AL (restarted)", "seconds": 1.0, "val_loss": 0.21, "val_acc": 0.97},
            {"method": "Adam", "seconds": 1.0, "val_loss": 0.16, "val_acc": 0.98},
            {"method": "pyscnn R-FISTA (gated ReLU)", "seconds": 0.3, "val_acc": 0.972, "note": "settings"},
            {"method": "pyscnn", "seconds": float("nan"), "val_acc": float("nan"),
             "note": "pyscnn is not installed: run `make scnn` (No module named 'scnn')"}]
    traces = {"histories": {"AL (restarted)": al, "Adam": adam}, "references": {"ridge (linear)": 0.3}}
    return rows, traces


def test_bench_figure_series(tmp_path):
    rows, traces = _synthetic_bench()
    figure = figures.bench_figure("digits", rows, traces, budget=1.0, threads=2, detail="float32")
    loss, metric = figure.axes
    title = figure.get_suptitle()
    assert "digits" in title and "budget 1 s per run" in title and "2 threads of" in title

    lines = _lines(loss)
    for label, history in traces["histories"].items():  # AL and Adam on the same axes, against seconds
        np.testing.assert_allclose(lines[label].get_xdata(), [row["seconds"] for row in history])
        np.testing.assert_allclose(lines[label].get_ydata(), [row["val_loss"] for row in history])
        assert lines[label].get_linewidth() == 2.0
    for label, value in (("init (He + ridge output)", 0.26), ("ridge (linear)", 0.3)):  # horizontal references
        np.testing.assert_allclose(lines[label].get_ydata(), [value, value])
    assert loss.get_yscale() == "log" and "validation loss" in loss.get_ylabel()

    points = _lines(metric)
    assert "accuracy (%)" in metric.get_ylabel()
    assert points["pyscnn R-FISTA (gated ReLU)"].get_xydata().tolist() == [[0.3, pytest.approx(97.2)]]
    assert points["Adam"].get_xydata().tolist() == [[1.0, pytest.approx(98.0)]]
    np.testing.assert_allclose(points["init (He + ridge output)"].get_ydata(), [94.6, 94.6])
    for method in ("AL (restarted)", "Adam"):  # a method keeps its colour in both panels
        assert to_hex(points[method].get_color()) == to_hex(lines[method].get_color())
    assert any(note.startswith("pyscnn: did not run (pyscnn is not installed") for note in _notes(metric))
    _written(figures.write(figure, str(tmp_path / "digits.png"), svg=True))


def test_bench_figure_variants_are_thin():
    histories = {name: [{"seconds": 0.0, "val_loss": 0.3}, {"seconds": 1.0, "val_loss": value}]
                 for name, value in (("default", 0.1), ("exact", 0.2), ("fixed penalty", 0.15))}
    traces = {"histories": histories, "thin": ["exact", "fixed penalty"],
              "references": {"init (He + ridge output)": 0.3}}
    figure = figures.bench_figure("teacher-student", [], traces, budget=1.0, threads=None)
    assert len(figure.axes) == 1, "no final-metric panel for a regression"
    lines = _lines(figure.axes[0])
    assert [lines[name].get_linewidth() for name in histories] == [2.0, 0.8, 0.8]
    assert "library-default threads" in figure.get_suptitle()


@pytest.fixture
def drawn(monkeypatch):
    """The figures the commands write, kept for reading (paths -> Figure)."""
    kept = {}
    write = figures.write

    def keep(figure, path, **kwargs):
        kept[str(path)] = figure
        return write(figure, path, **kwargs)

    monkeypatch.setattr(figures, "write", keep)
    return kept


def test_bench_train_plot(tmp_path, capsys, drawn):
    pytest.importorskip("torch", reason="the Adam baseline needs the [torch] extra")
    plots, table = tmp_path / "plots", tmp_path / "rows.csv"
    assert main(["bench", "train", "--quick", "--problems", "teacher-student", "--budget", "1", "--csv", str(table),
                 "--plot", str(plots), "--svg"]) == 0
    out = capsys.readouterr().out
    assert "problem" in out and "AL sweep s" in out  # the tables are still printed
    path = str(plots / "bench_train_teacher-student.png")
    _written([path, path[:-4] + ".svg"])
    lines = _lines(drawn[path].axes[0])
    assert {"AL (restarted)", "Adam", "init (He + ridge output)"} <= set(lines)
    for method in ("AL (restarted)", "Adam"):
        seconds = lines[method].get_xdata()
        assert seconds[0] == 0.0 and len(seconds) >= 5 and seconds[-1] <= 1.5  # recorded along the budget
        assert lines[method].get_ydata()[0] == pytest.approx(lines["init (He + ridge output)"].get_ydata()[0])


def test_bench_train_ablation_plot(tmp_path, capsys, drawn):
    plots = tmp_path / "plots"
    assert main(["bench", "train", "--quick", "--problems", "teacher-student", "--budget", "0.2", "--ablation",
                 "--csv", str(tmp_path / "rows.csv"), "--plot", str(plots)]) == 0
    path = str(plots / "bench_train_teacher-student_ablation.png")
    _written([path])
    lines = _lines(drawn[path].axes[0])
    widths = {label: line.get_linewidth() for label, line in lines.items() if not label.startswith("init")}
    assert len(widths) >= 2
    assert [label for label, width in widths.items() if width > 1] == [
        label for label in widths if "(default)" in label]
    assert "val loss" in capsys.readouterr().out


def test_bench_plot_folder_is_checked_before_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    table = tmp_path / "rows.csv"
    assert main(["bench", "train", "--problems", "digits", "--budget", "1", "--csv", str(table),
                 "--plot", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err and not table.exists()
    assert main(["bench", "train", "--problems", "digits", "--svg", "--csv", str(table)]) == 2
    assert "give --plot DIR" in capsys.readouterr().err


def _cs_records():
    def record(method, psnr, **extra):
        return {"dataset": "mnist", "ratio": 100, "method": method, "m": 100, "n": 784, "psnr": psnr, "items": 300,
                **extra}

    al_history = [{"seconds": s, "train_loss": 0.17 - 0.02 * s} for s in np.linspace(0, 2, 9)]
    adam_history = [{"seconds": s, "train_loss": 0.17 - 0.04 * s} for s in np.linspace(0, 2, 5)]
    records = [record("al", 20.5, hidden=500, budget=2.0, al={"history": al_history, "init_train_loss": 0.17}),
               record("adam", 21.5, hidden=500, budget=2.0, history=adam_history),
               record("al_init", 19.8), record("ridge", 19.7), record("lasso", 18.0, items=5),
               # a cell stored before histories were kept: no figure
               dict(record("al", 22.0, hidden=500, budget=2.0, al={"init_train_loss": 0.1}), ratio=200)]
    return {f"{r['dataset']}/{r['ratio']}/{r['method']}": r for r in records}


def test_cs_training_figure(tmp_path, drawn):
    from validation.cs import training_figures

    records = _cs_records()
    paths = training_figures(records, str(tmp_path), svg=True)
    png = str(tmp_path / "cs_mnist_100_training.png")
    assert paths == [png, png[:-4] + ".svg"]
    _written(paths)
    loss, metric = drawn[png].axes
    assert "cs mnist, m = 100" in drawn[png].get_suptitle() and "budget 2 s" in drawn[png].get_suptitle()
    lines = _lines(loss)
    np.testing.assert_allclose(lines["AL"].get_xdata(), np.linspace(0, 2, 9))
    np.testing.assert_allclose(lines["Adam"].get_ydata(), [0.17 - 0.04 * s for s in np.linspace(0, 2, 5)])
    np.testing.assert_allclose(lines["AL start"].get_ydata(), [0.17, 0.17])
    assert "training loss" in loss.get_ylabel()
    points = _lines(metric)
    assert points["AL"].get_xydata().tolist() == [[2.0, 20.5]]
    assert points["Adam"].get_xydata().tolist() == [[2.0, 21.5]]
    for label, value in (("ridge (linear)", 19.7), ("LASSO, 5 test items", 18.0), ("AL start", 19.8)):
        np.testing.assert_allclose(points[label].get_ydata(), [value, value])


def test_cs_training_figure_with_validation_curves(tmp_path, drawn):
    """Runs with validation pairs: the validation loss thick, the training loss thin, the pairs start named."""
    from validation.cs import training_figures

    records = _cs_records()
    del records["mnist/200/al"]
    al, adam = records["mnist/100/al"], records["mnist/100/adam"]
    al["init"] = "pairs"
    al["al"]["init_val_loss"] = 0.2
    for row in al["al"]["history"]:
        row["val_loss"] = 0.2 - 0.01 * row["seconds"]
    for row in adam["history"]:
        row["val_loss"] = 0.2 - 0.03 * row["seconds"]
    png = str(tmp_path / "cs_mnist_100_training.png")
    assert training_figures(records, str(tmp_path)) == [png]
    loss, metric = drawn[png].axes
    lines = _lines(loss)
    np.testing.assert_allclose(lines["AL"].get_ydata(), [0.2 - 0.01 * s for s in np.linspace(0, 2, 9)])
    np.testing.assert_allclose(lines["Adam (train)"].get_ydata(), [0.17 - 0.04 * s for s in np.linspace(0, 2, 5)])
    assert lines["AL (train)"].get_linewidth() < lines["AL"].get_linewidth()
    np.testing.assert_allclose(lines["AL start (= ridge, as a ReLU net)"].get_ydata(), [0.2, 0.2])
    assert "validation" in loss.get_ylabel()


def test_cs_plot_folder_is_checked_before_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("not a folder")
    arguments = ["cs", "--quick", "--no-progress", "--datasets", "mnist", "--methods", "ridge",
                 "--checkpoint-dir", str(tmp_path / "ck")]
    assert main([*arguments, "--plot", str(tmp_path / "afile")]) == 2
    assert "is a file" in capsys.readouterr().err and not (tmp_path / "ck").exists()
    assert main([*arguments, "--svg"]) == 2
    assert "give --plot DIR" in capsys.readouterr().err
