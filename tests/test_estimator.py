"""SpikingADMMClassifier: scikit-learn's estimator checks, pipelines and grid search, and the three kinds
of input (2-D features, 3-D spike frames, a torch Dataset of tonic-framed N-MNIST recordings).

scikit-learn's checks (``parametrize_with_checks``) run on two configurations, both tiny (hidden layer
of 32, T = 16, 6 iterations) so that the ~55 checks of each take seconds:

* the defaults (min-max scaling, on-off channels, rate code): every check applies and passes;
* ``channels="on"`` (one spike input per feature): every check passes but ``check_classifiers_train``,
  expected to fail: a single rate-coded input per feature cannot tell a feature at its minimum from an
  absent one, and on the check's three 2-D blobs the training accuracy stays below its 0.83 bar.

Not run through the checks: ``scaling="none"``, which by design refuses features outside [0, 1] (the
checks feed standard-normal data, negative values included); ``test_scaling_none_refuses_values_outside``
checks that refusal. The checks also skip themselves where pandas or the array API is absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits as sk_load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from admm_snn import ADMMSettings, SpikingADMMClassifier

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(hidden_layer_sizes=(32,), time_steps=16, iterations=6)

EXPECTED_FAILURES = {
    "on": {"check_classifiers_train": "one rate-coded input per feature: the training accuracy on the check's "
                                      "2-D blobs stays below 0.83 (on-off channels, the default, pass)"},
}


def _expected_failed_checks(est):
    return EXPECTED_FAILURES.get(est.channels, {})


@parametrize_with_checks([SpikingADMMClassifier(**TINY), SpikingADMMClassifier(channels="on", **TINY)],
                         expected_failed_checks=_expected_failed_checks)
def test_sklearn_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    X, y = sk_load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    tr, te = idx[:600], idx[600:900]
    return X[tr], y[tr], X[te], y[te]


def test_features_with_any_labels(digits):
    Xtr, ytr, Xte, yte = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    clf = SpikingADMMClassifier(hidden_layer_sizes=(64,), time_steps=12, iterations=5).fit(Xtr, names[ytr])
    assert list(clf.classes_) == sorted(names)
    assert clf.n_features_in_ == 64
    pred = clf.predict(Xte)
    assert set(pred) <= set(names)
    assert clf.score(Xte, names[yte]) >= 0.85
    z = clf.decision_function(Xte[:5])
    assert z.shape == (5, 10) and list(clf.classes_[z.argmax(1)]) == list(pred[:5])
    assert clf.settings_.iterations == 5 and len(clf.history_) == 5


def test_rate_code_of_a_sample_does_not_depend_on_the_batch(digits):
    Xtr, ytr, Xte, _ = digits
    clf = SpikingADMMClassifier(hidden_layer_sizes=(16,), time_steps=8, iterations=2).fit(Xtr[:200], ytr[:200])
    z_all = clf.decision_function(Xte[:20])
    z_one = np.stack([clf.decision_function(Xte[i:i + 1])[0] for i in range(0, 20, 7)])
    np.testing.assert_array_equal(z_all[::7], z_one)
    np.testing.assert_array_equal(clf.decision_function(Xte[:20][::-1]), z_all[::-1])


def test_settings_parameters_and_precedence(digits):
    Xtr, ytr, _, _ = digits
    base = ADMMSettings.paper()
    clf = SpikingADMMClassifier(hidden_layer_sizes=8, time_steps=4, iterations=1, rho=2.0, settings=base,
                                random_state=5).fit(Xtr[:100], ytr[:100])
    s = clf.settings_
    assert (s.iterations, s.rho, s.seed, s.schedule, s.beta) == (1, 2.0, 5, base.schedule, base.beta)
    clf = SpikingADMMClassifier(hidden_layer_sizes=(8,), time_steps=4, iterations=1, settings={"l1": 0.1})
    assert clf.fit(Xtr[:100], ytr[:100]).settings_.l1 == 0.1
    with pytest.raises(ValueError):
        SpikingADMMClassifier(settings={"rho": -1.0}).fit(Xtr[:50], ytr[:50])
    with pytest.raises(ValueError):
        SpikingADMMClassifier(settings={"no_such_setting": 1}).fit(Xtr[:50], ytr[:50])
    with pytest.raises(ValueError):
        SpikingADMMClassifier(encoding="morse").fit(Xtr[:50], ytr[:50])


def test_scaling_none_refuses_values_outside(digits):
    Xtr, ytr, Xte, yte = digits
    clf = SpikingADMMClassifier(scaling="none", hidden_layer_sizes=(16,), time_steps=8, iterations=2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        clf.fit(Xtr, ytr)  # pixel values 0..16
    assert clf.fit(Xtr / 16.0, ytr).score(Xte / 16.0, yte) > 0.5


def test_pipeline_grid_search_and_clone(digits):
    Xtr, ytr, _, _ = digits
    pipe = make_pipeline(StandardScaler(), SpikingADMMClassifier(hidden_layer_sizes=(16,), time_steps=8,
                                                                  iterations=2))
    grid = GridSearchCV(pipe, {"spikingadmmclassifier__rho": [0.5, 1.0],
                               "spikingadmmclassifier__encoding": ["rate", "latency"]}, cv=2)
    grid.fit(Xtr[:300], ytr[:300])
    assert set(grid.best_params_) == {"spikingadmmclassifier__rho", "spikingadmmclassifier__encoding"}
    assert grid.best_score_ > 0.5
    twin = clone(grid.best_estimator_)
    assert twin.get_params()["spikingadmmclassifier__rho"] == grid.best_params_["spikingadmmclassifier__rho"]
    assert not hasattr(twin[-1], "weights_")


def test_validation_fraction_keeps_the_best_iteration(digits):
    Xtr, ytr, _, _ = digits
    clf = SpikingADMMClassifier(hidden_layer_sizes=(16,), time_steps=8, iterations=4, validation_fraction=0.25)
    clf.fit(Xtr, ytr)
    assert "val_accuracy" in clf.history_[-1]
    best = max(clf.history_, key=lambda h: h["val_accuracy"])
    assert clf.best_iteration_ == best["iteration"]


def test_spike_frames_and_spike_dataset():
    from admm_snn import load_digits
    ds = load_digits(time_steps=10)
    frames, labels = ds.frames[:400].numpy(), ds.labels[:400].numpy()
    clf = SpikingADMMClassifier(hidden_layer_sizes=(32,), iterations=4).fit(frames[:300], labels[:300])
    assert clf.n_features_in_ == 64 and clf.input_kind_ == "frames"
    assert clf.score(frames[300:], labels[300:]) >= 0.7
    with pytest.raises(ValueError, match="frames"):
        clf.predict(frames[300:, 0, :])  # fitted on frames, given features
    with pytest.raises(ValueError, match="inputs per frame"):
        clf.predict(frames[300:, :, :10])
    # an admm_snn SpikeDataset directly, labels taken from it
    clf2 = SpikingADMMClassifier(hidden_layer_sizes=(32,), iterations=4).fit(ds.subset(slice(0, 300)))
    np.testing.assert_array_equal(clf2.predict(frames[300:]), clf.predict(frames[300:]))
    assert clf2.score(ds.subset(slice(300, 400))) == clf.score(frames[300:], labels[300:])


class FramedNMNIST(torch.utils.data.Dataset):
    """N-MNIST recordings as a tonic pipeline yields them: events -> tonic.transforms -> frames
    (T, 2, 34, 34) numpy, with the label."""

    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from admm_snn.data import read_nmnist_file
        path, label = self.files[i]
        return self.transform(read_nmnist_file(path)), label


def test_torch_dataset_with_tonic_transforms(nmnist_root):
    import tonic.transforms as tt
    from admm_snn.data import limit_files, scan_nmnist_folder
    files = limit_files(scan_nmnist_folder(nmnist_root, "train"), 160)
    transform = tt.Compose([tt.Denoise(filter_time=10_000),
                            tt.ToFrame(sensor_size=(34, 34, 2), time_window=10_000)])
    data = FramedNMNIST(files, lambda ev: np.clip(transform(ev)[:10], 0, 1))
    frames, label = data[0]
    assert frames.shape[1:] == (2, 34, 34) and frames.shape[0] <= 10
    train = torch.utils.data.Subset(data, range(0, 160, 2))
    test = torch.utils.data.Subset(data, range(1, 160, 2))
    clf = SpikingADMMClassifier(hidden_layer_sizes=(32,), iterations=4).fit(train)
    assert clf.n_features_in_ == 2 * 34 * 34
    assert clf.score(test) > 0.4  # chance is 0.1; 80 training recordings, 4 iterations
