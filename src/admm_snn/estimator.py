"""A scikit-learn classifier that trains a spiking network with ADMM: :class:`SpikingADMMClassifier`.

It drops into scikit-learn: ``fit(X, y)``, ``predict``, ``decision_function``, ``score``,
``get_params``/``set_params`` (so ``clone``, ``Pipeline`` and ``GridSearchCV`` work), ``classes_`` and
``n_features_in_``. The constructor only stores its arguments; they are checked in ``fit``.

Inputs ``X`` (the same kind in ``fit`` and ``predict``):

* **2-D features** ``(n_samples, n_features)``: with ``scaling="minmax"`` (default) each feature is scaled
  to [0, 1] by the minimum and maximum seen in ``fit`` (values outside that range at predict time are
  clipped); with ``scaling="none"`` the values must already lie in [0, 1]. With ``channels="on-off"``
  (default) each intensity ``I`` becomes two inputs, ``I`` and ``1 - I``. The intensities are then
  spike-encoded over ``time_steps`` steps by the estimator's ``encoding``: ``"rate"`` (at every step a
  Bernoulli spike with probability equal to the intensity, drawn from a generator seeded by
  ``random_state`` and the sample's own values, so a sample gets the same spikes alone or in any batch)
  or ``"latency"`` (one spike at step ``round((1 - I)(T - 1))``, none for ``I = 0``).
* **3-D spike frames** ``(n_samples, T, n_inputs)``: used as they are (binary spikes or event counts);
  ``time_steps``, ``encoding`` and ``scaling`` do not apply. ``n_features_in_`` is ``n_inputs``.
* **a dataset**: a ``torch.utils.data.Dataset`` whose items are ``(frames, label)`` (e.g. a tonic dataset
  with a ``ToFrame`` transform: frames ``(T, ...)`` are flattened to ``(T, n_inputs)``, and samples of
  different lengths are padded with empty frames to the longest), or an :class:`admm_snn.data.SpikeDataset`.
  ``y`` may then be left out (the dataset's labels are used); ``score(dataset)`` scores against them.
  ADMM is a full-batch method: the whole dataset is read into memory.

Labels may be any class labels (numbers or strings); ``classes_`` holds them sorted, and predictions
are drawn from it.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_random_state, column_or_1d

from .admm.settings import ADMMSettings
from .data.dataset import SpikeDataset
from .data.encoding import ENCODINGS, encode_per_sample
from .data.split import stratified_split
from .errors import AdmmSnnError
from .network import forward
from .train import train

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    def _validate_data(est, X, reset=True, **kw):
        return est._validate_data(X, reset=reset, **kw)

SCALINGS = ("minmax", "none")
CHANNELS = ("on-off", "on")
_EXPLICIT = ("rho", "beta", "delta", "theta", "weight_step", "ridge")


def _is_dataset(X) -> bool:
    return isinstance(X, (torch.utils.data.Dataset, SpikeDataset))


def _dataset_arrays(ds):
    """(frames or features as an array, labels) read from a dataset."""
    if isinstance(ds, SpikeDataset):
        return ds.frames, ds.labels.numpy()
    items, labels = [], []
    for i in range(len(ds)):
        item = ds[i]
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise ValueError(f"dataset item {i} is a {type(item).__name__}; expected (frames, label)")
        x, label = item[0], item[1]
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        items.append(x)
        labels.append(label.item() if isinstance(label, torch.Tensor) else label)
    if not items:
        raise ValueError("the dataset is empty")
    if all(x.ndim == 1 for x in items):  # static features per item
        return np.stack(items), np.asarray(labels)
    if any(x.ndim < 2 for x in items):
        raise ValueError("dataset items mix feature vectors and frame sequences")
    flat = [x.reshape(x.shape[0], -1) for x in items]
    n_inputs = {f.shape[1] for f in flat}
    if len(n_inputs) > 1:
        raise ValueError(f"dataset items have different numbers of inputs per frame: {sorted(n_inputs)}")
    T = max(f.shape[0] for f in flat)
    out = np.zeros((len(flat), T, flat[0].shape[1]), dtype=np.result_type(*flat))
    for i, f in enumerate(flat):
        out[i, :f.shape[0]] = f
    return out, np.asarray(labels)


class SpikingADMMClassifier(ClassifierMixin, BaseEstimator):
    """A feed-forward LIF spiking network trained by ADMM, as a scikit-learn classifier.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (128,)
        Width of each hidden layer.
    time_steps : int, default 30
        Steps of the spike code of 2-D features (ignored for frames and datasets).
    encoding : {"rate", "latency"}, default "rate"
        Spike code of 2-D features.
    scaling : {"minmax", "none"}, default "minmax"
        How 2-D features become intensities in [0, 1]: per-feature min-max scaling fitted in ``fit``,
        or none (values must lie in [0, 1]).
    channels : {"on-off", "on"}, default "on-off"
        Spike inputs per 2-D feature: "on-off" encodes each intensity ``I`` as two inputs, ``I`` and
        ``1 - I`` (so a feature at its minimum is seen too, and every sample emits spikes); "on" as one.
    iterations : int or None, default None
        ADMM iterations (None: ``ADMMSettings().iterations``, or that of ``settings``).
    rho, beta, delta, theta, weight_step, ridge : float or None, default None
        The :class:`ADMMSettings` fields of the same names (None: the value of ``settings``, else
        the library default).
    settings : ADMMSettings, dict or None, default None
        Every other ADMM setting: an :class:`ADMMSettings` (e.g. ``ADMMSettings.paper()``) or a dict of
        its fields (e.g. ``{"l1": 0.1}``) applied on top of the defaults. The explicit parameters above
        and ``random_state`` take precedence.
    validation_fraction : float, default 0.0
        Fraction of the training samples held out (stratified) to choose the iteration whose weights
        are kept; 0 keeps the last iterate.
    random_state : int, RandomState or None, default 0
        Seed of the ADMM run (``ADMMSettings.seed``), of the rate code and of the validation split.
    device : str, default "cpu"
        ``"cpu"`` or ``"cuda[:N]"``.
    verbose : bool, default False
        Show the training progress bar.

    Attributes
    ----------
    classes_ : ndarray of the class labels seen in ``fit``.
    n_features_in_ : int, features (2-D input) or inputs per frame (frames, datasets).
    weights_ : list of torch.Tensor, the trained weights ``W_1 .. W_L``.
    settings_ : ADMMSettings used by ``fit``.
    history_ : list of dict, the per-iteration metrics of ``admm_snn.train``.
    best_iteration_ : int, the iteration whose weights are kept.
    """

    def __init__(self, hidden_layer_sizes=(128,), time_steps=30, encoding="rate", scaling="minmax",
                 channels="on-off", iterations=None, rho=None, beta=None, delta=None, theta=None, weight_step=None, ridge=None,
                 settings=None, validation_fraction=0.0, random_state=0, device="cpu", verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.time_steps = time_steps
        self.encoding = encoding
        self.scaling = scaling
        self.channels = channels
        self.iterations = iterations
        self.rho = rho
        self.beta = beta
        self.delta = delta
        self.theta = theta
        self.weight_step = weight_step
        self.ridge = ridge
        self.settings = settings
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------------------------------------
    # parameters
    # ------------------------------------------------------------------------------------------------

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(2 ** 31 - 1))

    def _admm_settings(self, seed: int) -> ADMMSettings:
        base = self.settings
        try:
            if base is None:
                base = ADMMSettings()
            elif isinstance(base, dict):
                base = ADMMSettings().replace(**base)
            elif not isinstance(base, ADMMSettings):
                raise ValueError(f"settings must be an ADMMSettings, a dict of its fields or None, "
                                 f"not {type(base).__name__}")
            changes = {k: getattr(self, k) for k in _EXPLICIT if getattr(self, k) is not None}
            if self.iterations is not None:
                changes["iterations"] = self.iterations
            return base.replace(seed=seed, **changes)
        except (AdmmSnnError, TypeError) as exc:
            raise ValueError(str(exc)) from None

    def _check_params(self) -> list[int]:
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral):
            hidden = (hidden,)
        try:
            hidden = [int(h) for h in hidden]
        except (TypeError, ValueError):
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} must be a sequence of "
                             "positive integers") from None
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} must be positive integers")
        if isinstance(self.time_steps, bool) or not isinstance(self.time_steps, numbers.Integral) \
                or self.time_steps < 1:
            raise ValueError(f"time_steps={self.time_steps!r} must be an integer >= 1")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding={self.encoding!r} is not one of {', '.join(ENCODINGS)}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling={self.scaling!r} is not one of {', '.join(SCALINGS)}")
        if self.channels not in CHANNELS:
            raise ValueError(f"channels={self.channels!r} is not one of {', '.join(CHANNELS)}")
        if not (0.0 <= float(self.validation_fraction) < 1.0):
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must be in [0, 1)")
        return hidden

    # ------------------------------------------------------------------------------------------------
    # inputs
    # ------------------------------------------------------------------------------------------------

    def _frames(self, X, fitting: bool):
        """(frames (N, T, n) tensor, labels from a dataset or None)."""
        labels = None
        if _is_dataset(X):
            X, labels = _dataset_arrays(X)
            if isinstance(X, torch.Tensor):
                X = X.numpy()
        elif isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        ndim = getattr(X, "ndim", None)
        if ndim is None:
            ndim = np.asarray(X, dtype=object).ndim if not hasattr(X, "shape") else len(X.shape)
        kind = "frames" if ndim == 3 else "features"
        if not fitting and kind != self.input_kind_:
            raise ValueError(f"{type(self).__name__} was fitted on {self.input_kind_} and cannot predict "
                             f"from {kind}")
        if kind == "frames":
            X = np.asarray(X)
            if X.dtype.kind in "biu" and X.dtype != np.uint8 and X.size and X.min() >= 0 and X.max() <= 1:
                X = X.astype(np.uint8)  # binary spikes stay compact (exact)
            X = check_array(X, allow_nd=True, dtype=None if X.dtype == np.uint8 else np.float32)
            if fitting:
                self.n_features_in_ = int(X.shape[2])
            elif X.shape[2] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[2]} inputs per frame, but {type(self).__name__} is "
                                 f"expecting {self.n_features_in_} inputs per frame as input")
            frames = torch.from_numpy(np.ascontiguousarray(X))
            if frames.dtype != torch.uint8 and bool(((frames == 0) | (frames == 1)).all()):
                frames = frames.to(torch.uint8)  # binary spikes stay compact (exact)
        else:
            X = _validate_data(self, X, reset=fitting, dtype=np.float64)
            if fitting:
                self.feature_min_ = X.min(axis=0) if self.scaling == "minmax" else np.zeros(X.shape[1])
                span = X.max(axis=0) - self.feature_min_ if self.scaling == "minmax" else np.ones(X.shape[1])
                self.feature_span_ = np.where(span > 0, span, 1.0)
            intensity = (X - self.feature_min_) / self.feature_span_
            if self.scaling == "none" and (intensity.min() < 0 or intensity.max() > 1):
                raise ValueError("with scaling='none' the features must lie in [0, 1]; scale them first "
                                 "(e.g. sklearn.preprocessing.MinMaxScaler) or use scaling='minmax'")
            intensity = np.clip(intensity, 0.0, 1.0)
            if self.channels == "on-off":  # every feature as two inputs, I and 1 - I
                intensity = np.hstack([intensity, 1.0 - intensity])
            frames = encode_per_sample(torch.from_numpy(intensity.astype(np.float32)), int(self.time_steps),
                                       self.encoding, self._seed())
        if fitting:
            self.input_kind_ = kind
        return frames, labels

    # ------------------------------------------------------------------------------------------------
    # scikit-learn interface
    # ------------------------------------------------------------------------------------------------

    def fit(self, X, y=None):
        """Train the network on ``X`` (features, frames or a dataset) and labels ``y`` (from the dataset
        when ``X`` is one and ``y`` is None)."""
        hidden = self._check_params()
        seed = self._seed()
        settings = self._admm_settings(seed)
        frames, ds_labels = self._frames(X, fitting=True)
        if y is None:
            if ds_labels is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
            y = ds_labels
        y = column_or_1d(y, warn=True)
        if len(y) != frames.shape[0]:
            raise ValueError(f"X has {frames.shape[0]} samples but y has {len(y)} labels")
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes; got 1 class "
                             f"({self.classes_[0]!r})")
        labels = torch.as_tensor(y_idx.reshape(-1), dtype=torch.int64)
        val = None
        if self.validation_fraction > 0:
            tr, va = stratified_split(labels, [1.0 - self.validation_fraction, self.validation_fraction], seed)
            if len(va) and len(tr):
                val = (frames[va].permute(1, 0, 2).contiguous(), labels[va])
                frames, labels = frames[tr], labels[tr]
        result = train(frames.permute(1, 0, 2).contiguous(), labels, hidden, settings,
                       n_classes=len(self.classes_), val=val, progress=bool(self.verbose), device=self.device)
        self.weights_ = result.weights
        self.settings_ = settings
        self.history_ = result.history
        self.best_iteration_ = result.best_iteration
        return self

    def _potentials(self, X) -> torch.Tensor:
        check_is_fitted(self, "weights_")
        frames, _ = self._frames(X, fitting=False)
        frames = frames.permute(1, 0, 2)
        out = []
        for s in range(0, frames.shape[1], 4096):
            chunk = frames[:, s:s + 4096].to(self.device)
            out.append(forward(self.weights_, chunk, self.settings_.lif).output[-1].double().cpu())
        return torch.cat(out) if out else torch.empty(0, len(self.classes_), dtype=torch.float64)

    def decision_function(self, X):
        """The output layer's membrane potentials at the last step, ``(n_samples, n_classes)``; the
        prediction is their argmax. For two classes, the difference of the two, ``(n_samples,)``."""
        z = self._potentials(X).numpy()
        return z[:, 1] - z[:, 0] if len(self.classes_) == 2 else z

    def predict(self, X):
        """Class labels (from ``classes_``) by forward simulation of the trained network."""
        z = self._potentials(X)
        return self.classes_[z.argmax(dim=1).numpy()]

    def score(self, X, y=None, sample_weight=None):
        """Mean accuracy on ``X`` and ``y`` (a dataset's own labels when ``y`` is None)."""
        if _is_dataset(X):  # read it once, for the frames and the labels
            X, labels = _dataset_arrays(X)
            y = labels if y is None else y
        return super().score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"X_types": ["2darray", "3darray"]}
