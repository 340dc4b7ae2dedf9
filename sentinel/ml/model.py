"""The host-anomaly model: an Isolation Forest over log-scaled per-window host features.

Why an Isolation Forest (docs/models.md has the longer argument): attacks are rare and change,
and the labels come from generated scenarios only, so a supervised model would learn those eight
scenarios and little else. An Isolation Forest learns what ordinary windows look like and scores
how easily a window is isolated from them; the labels are used only to pick the alert threshold
and to evaluate. Counts are heavy-tailed (bytes, events), so features are log1p-scaled first.

`anomaly_scores` is the one scoring function: the training asset, the promotion check, drift
and the stream workers all call it, so a window gets the same score wherever it is scored.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# skops (MLflow's default sklearn format) loads only the types it trusts; trees are ours.
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


@dataclass(frozen=True)
class TrainParams:
    n_estimators: int = 200
    max_samples: int = 256
    max_features: float = 1.0
    random_state: int = 7


def fit(frame: pd.DataFrame, features: list[str], params: TrainParams) -> Any:
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    model = make_pipeline(
        FunctionTransformer(np.log1p, feature_names_out="one-to-one"),
        IsolationForest(
            n_estimators=params.n_estimators,
            max_samples=min(params.max_samples, len(frame)),
            max_features=params.max_features,
            random_state=params.random_state,
        ),
    )
    model.fit(matrix(frame, features))
    return model


def matrix(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """The model's input: `features` in order, as float64 (counts are clipped at 0)."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise KeyError(f"features missing from the frame: {', '.join(missing)}")
    return frame[features].astype("float64").clip(lower=0.0)


def anomaly_scores(model: Any, frame: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Higher is more anomalous (the negated Isolation Forest score, about 0.3 to 0.8)."""
    return -np.asarray(model.score_samples(matrix(frame, features)), dtype="float64")


class CompiledForest:
    """The fitted log1p → IsolationForest pipeline as flat arrays, scored for all trees at once.

    scikit-learn scores an Isolation Forest one tree at a time through joblib (~0.2 ms a tree
    whatever the rows: 40 ms for 200 trees), which made scoring most of a worker's scoring round.
    Here every tree's nodes are concatenated and all (row, tree) pairs walk down together, one
    numpy step per level. The arithmetic is scikit-learn's: features cast to float32 before the
    comparisons, per-tree path lengths added in tree order, the same normalisation, so the scores
    are equal (tests/orchestration/test_models.py checks it against `score_samples`).
    """

    def __init__(self, pipeline: Any) -> None:
        from sklearn.ensemble._iforest import _average_path_length

        forest = pipeline[-1]
        self.transform = pipeline[:-1]
        lefts, rights, features, thresholds, values, roots = [], [], [], [], [], []
        offset, depth = 0, 0
        for index, (tree, columns) in enumerate(
            zip(forest.estimators_, forest.estimators_features_, strict=True)
        ):
            nodes = tree.tree_
            ids = np.arange(nodes.node_count)
            leaf = nodes.children_left == -1
            lefts.append(np.where(leaf, ids, nodes.children_left) + offset)  # leaves loop
            rights.append(np.where(leaf, ids, nodes.children_right) + offset)
            features.append(np.asarray(columns)[np.where(leaf, 0, nodes.feature)])
            thresholds.append(np.where(leaf, 0.0, nodes.threshold))
            values.append(
                forest._decision_path_lengths[index]
                + forest._average_path_length_per_tree[index]
                - 1.0
            )
            roots.append(offset)
            offset += nodes.node_count
            depth = max(depth, nodes.max_depth)
        self.left, self.right = np.concatenate(lefts), np.concatenate(rights)
        self.feature, self.threshold = np.concatenate(features), np.concatenate(thresholds)
        self.value = np.concatenate(values)
        self.roots = np.asarray(roots)
        self.depth = depth
        self.denominator = len(forest.estimators_) * float(
            _average_path_length([forest._max_samples])[0]
        )

    def score_samples(self, frame: pd.DataFrame) -> np.ndarray:
        x = np.asarray(self.transform.transform(frame), dtype=np.float32)
        rows = np.arange(len(x))[:, None]
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        for _ in range(self.depth):
            left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(left, self.left[node], self.right[node])
        per_tree = self.value[node]
        depths = np.zeros(len(x))
        for column in per_tree.T:  # in tree order, as scikit-learn adds them
            depths += column
        if self.denominator == 0:
            return -np.ones(len(x))
        # scikit-learn's sign: score_samples is the opposite of the anomaly score
        scores: np.ndarray = -(2 ** (-(depths / self.denominator)))
        return scores


def best_threshold(labels: np.ndarray, scores: np.ndarray, fallback_rate: float = 0.02) -> float:
    """The score that maximises F1 on `labels`; without positives, the top `fallback_rate`."""
    from sklearn.metrics import precision_recall_curve

    if labels.sum() == 0 or labels.sum() == len(labels):
        return float(np.quantile(scores, 1 - fallback_rate))
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


@dataclass(frozen=True)
class Evaluation:
    rows: int
    positives: int
    precision: float
    recall: float
    pr_auc: float
    alerts: int
    alert_rate_per_host_day: float

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


def evaluate(
    frame: pd.DataFrame, labels: np.ndarray, scores: np.ndarray, threshold: float
) -> Evaluation:
    """Precision and recall at `threshold`, PR-AUC (average precision), and alerts per host-day."""
    from sklearn.metrics import average_precision_score, precision_score, recall_score

    flagged = scores >= threshold
    positives = int(labels.sum())
    host_days = max(
        1,
        frame.assign(day=pd.to_datetime(frame["event_timestamp"]).dt.date)[["host_id", "day"]]
        .drop_duplicates()
        .shape[0],
    )
    return Evaluation(
        rows=len(frame),
        positives=positives,
        precision=float(precision_score(labels, flagged, zero_division=0)),
        recall=float(recall_score(labels, flagged, zero_division=0)),
        pr_auc=float(average_precision_score(labels, scores)) if positives else 0.0,
        alerts=int(flagged.sum()),
        alert_rate_per_host_day=float(flagged.sum()) / host_days,
    )


@dataclass
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame
    cutoff: pd.Timestamp


def time_split(frame: pd.DataFrame, holdout_fraction: float) -> Split:
    """The newest `holdout_fraction` of the time range is held out; windows never straddle."""
    ts = pd.to_datetime(frame["event_timestamp"])
    stamps = np.sort(ts.unique())
    if len(stamps) < 2:
        raise ValueError(f"need windows at two times or more to hold some out, got {len(stamps)}")
    index = min(len(stamps) - 1, max(1, round(len(stamps) * (1 - holdout_fraction))))
    cutoff = pd.Timestamp(stamps[index])
    return Split(
        frame[ts < cutoff].reset_index(drop=True),
        frame[ts >= cutoff].reset_index(drop=True),
        cutoff,
    )


def snapshot_digest(frame: pd.DataFrame) -> str:
    """A content hash of a training set: the same rows give the same digest."""
    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10) -> float:
    """Population stability index of `actual` against `expected` (bins: expected's quantiles)."""
    expected = np.asarray(expected, dtype="float64")
    actual = np.asarray(actual, dtype="float64")
    if len(expected) == 0 or len(actual) == 0:
        return 0.0
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant feature: drift is any move off that value
        same = float(np.mean(actual == expected[0]))
        edges = np.array([expected[0] - 0.5, expected[0] + 0.5])
        e = np.array([1.0, 1e-6])
        a = np.array([max(same, 1e-6), max(1 - same, 1e-6)])
        return float(np.sum((a - e) * np.log(a / e)))
    inner = edges[1:-1]
    e = np.bincount(np.searchsorted(inner, expected, side="right"), minlength=len(edges) - 1)
    a = np.bincount(np.searchsorted(inner, actual, side="right"), minlength=len(edges) - 1)
    e_share = np.maximum(e / e.sum(), 1e-6)
    a_share = np.maximum(a / a.sum(), 1e-6)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def plot(
    out: Path, labels: np.ndarray, scores: np.ndarray, threshold: float, title: str
) -> list[Path]:
    """PR curve and score histogram (benign vs attack, threshold marked) as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 4))
    if labels.sum():
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax.plot(recall, precision)
    ax.set(
        xlabel="recall", ylabel="precision", title=f"PR curve: {title}", xlim=(0, 1), ylim=(0, 1.05)
    )
    fig.tight_layout()
    paths.append(out / "pr_curve.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = [float(b) for b in np.linspace(float(scores.min()), float(scores.max()) + 1e-9, 40)]
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="benign windows")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="attack windows")
    ax.axvline(threshold, color="black", linestyle="--", label="threshold")
    ax.set(xlabel="anomaly score", ylabel="windows", title=f"scores: {title}", yscale="log")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "score_histogram.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
