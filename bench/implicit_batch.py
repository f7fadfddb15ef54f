"""Batch fit of the implicit model vs. SGD replay, in the temporal setup a retrain faces.

A seeded simulator stream is split in time: every variant trains a fresh bundle on the
first ``--train-share`` of it the way a retrain does (``train_window``: SGD replay,
``epochs`` passes, the click model in the first), the batch variants then refit the
implicit factors with ``fit_implicit``; each is then run prequentially over the rest
(score, then learn online, as the consumer does) and reports recall@10 of the implicit
model, the click model's log loss and AUC (its ``cf_logit`` feature comes from that
variant's implicit model), the training objective and the seconds of the fit::

    .venv/bin/python bench/implicit_batch.py --events 200000 --seed 42 --section FILE
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import Limits, ModelConfig  # noqa: E402
from stream.evaluation import BinaryScore, HitRate  # noqa: E402
from stream.events import (  # noqa: E402
    ClickEvent,
    DwellEvent,
    ImpressionEvent,
    InteractionEvent,
    RatingEvent,
)
from stream.lifecycle.training import TrainingData, train_window  # noqa: E402
from stream.models import ModelBundle  # noqa: E402
from stream.models.implicit_batch import (  # noqa: E402
    Observations,
    fit_implicit,
    observations,
    weighted_log_loss,
)

RECALL_K = 10


@dataclass
class Row:
    name: str
    fit_seconds: float
    train_loss: float
    recall: float | None
    logloss: float | None
    auc: float | None


def prequential(
    bundle: ModelBundle, events: list[InteractionEvent], data: TrainingData
) -> tuple[float | None, float | None, float | None]:
    """Recall@10, log loss and AUC over ``events``, scoring each before learning it (as
    ``FeedbackLearner`` does)."""
    recall, clicks = HitRate(), BinaryScore()
    users, items = data.users, data.items
    for e in events:
        kind = type(e)
        if kind is ClickEvent or kind is ImpressionEvent:
            clicked = kind is ClickEvent
            if clicked:
                hit = bundle.implicit.hit_at_k(e.user_id, e.item_id, RECALL_K)
                if hit is not None:
                    recall.update(hit)
            p = bundle.learn_engagement(
                e,  # type: ignore[arg-type]
                clicked,
                users.get(e.user_id),
                items.get(e.item_id),  # type: ignore[attr-defined]
                True,
            )
            assert p is not None
            clicks.update(clicked, p)
        elif kind is DwellEvent:
            bundle.learn_dwell(e)  # type: ignore[arg-type]
        elif kind is RatingEvent:
            bundle.learn_rating(e)  # type: ignore[arg-type]
    return recall.value, clicks.logloss, clicks.auc


def train_loss(bundle: ModelBundle, train: list[InteractionEvent]) -> float:
    """The implicit model's weighted log loss on the training observations (on a copy:
    aggregating adds no ids here, every training id is known already)."""
    model = copy.deepcopy(bundle.implicit)
    obs = observations(model, train, bundle.config.negative_weight, bundle.dwell_scale)
    return weighted_log_loss(model, obs)


def fit_als(bundle: ModelBundle, train: list[InteractionEvent], args: argparse.Namespace) -> float:
    """Replace the implicit factors by the ``implicit`` library's ALS (Hu, Koren, Volinsky):
    a pair's value is ``alpha`` times its positive weight, or minus its negative weight for
    an impression-only pair (the library's "disliked" entry); then the scale and a common
    item bias are fitted to the observations' log loss, since the online model reads
    ``bias + p . q`` as a logit. Return the seconds."""
    from implicit.cpu.als import AlternatingLeastSquares  # optional: bench only
    from scipy.sparse import csr_matrix

    t0 = time.perf_counter()
    model = bundle.implicit
    obs = observations(model, train, bundle.config.negative_weight, bundle.dwell_scale)
    value = np.where(obs.positive > 0, obs.positive, -obs.negative)
    matrix = csr_matrix((value, (obs.users, obs.items)), shape=(model.n_users, model.n_items))
    als = AlternatingLeastSquares(
        factors=model.factors,
        regularization=args.als_regularization,
        alpha=args.als_alpha,
        dtype=np.float64,
        iterations=args.iterations * 2,
        num_threads=1,
        random_state=args.seed,
    )
    als.fit(matrix, show_progress=False)
    p, q = np.asarray(als.user_factors), np.asarray(als.item_factors)
    scale, bias = _calibrate(np.einsum("ij,ij->i", p[obs.users], q[obs.items]), obs)
    root = np.sqrt(max(scale, 1e-6))  # the scale shared by both sides, as SGD moves both
    model._users.vectors[: model.n_users] = p * root
    model._items.vectors[: model.n_items] = q * root
    model._items.biases[: model.n_items] = bias
    return time.perf_counter() - t0


def _calibrate(dots: np.ndarray, obs: Observations) -> tuple[float, float]:
    """(a, c) minimizing the weighted log loss of ``sigmoid(a * dot + c)``: Newton steps."""
    w = np.array([1.0, 0.0])
    x = np.stack([dots, np.ones_like(dots)], axis=1)
    total = obs.positive + obs.negative
    for _ in range(25):
        s = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (total * s - obs.positive)
        hess = (x.T * (total * s * (1.0 - s))) @ x + 1e-9 * np.eye(2)
        w -= np.linalg.solve(hess, grad)
    return float(w[0]), float(w[1])


def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    sim = Simulator(SimulatorConfig(n_users=args.users, n_items=args.items, seed=args.seed))
    data = TrainingData.from_events([*sim.profiles(), *sim.events(args.events)])
    cut = int(args.train_share * len(data.events))
    train, test = data.events[:cut], data.events[cut:]
    cfg, limits = ModelConfig(seed=args.seed), Limits()
    rows: list[Row] = []

    def fresh() -> ModelBundle:
        return ModelBundle.fresh(
            cfg, limits.rating_min, limits.rating_max, limits.dwell_cap_seconds
        )

    def report(name: str, bundle: ModelBundle, seconds: float) -> None:
        loss = train_loss(bundle, train)
        scores = prequential(copy.deepcopy(bundle), test, data)
        rows.append(Row(name, seconds, loss, *scores))
        print(
            f"{name:28s} fit {seconds:6.2f} s  train loss {loss:.4f}  recall@10 "
            f"{scores[0]:.4f}  logloss {scores[1]:.4f}  auc {scores[2]:.4f}",
            flush=True,
        )

    sgd1: ModelBundle | None = None
    sgd1_seconds = 0.0
    for epochs in args.epochs:
        bundle = fresh()
        t0 = time.perf_counter()
        train_window(bundle, train, data.users, data.items, window=1.0, epochs=epochs)
        seconds = time.perf_counter() - t0
        report(f"SGD replay, epochs={epochs}", bundle, seconds)
        if epochs == 1:
            sgd1, sgd1_seconds = bundle, seconds
    if sgd1 is None:
        sgd1 = fresh()
        t0 = time.perf_counter()
        train_window(sgd1, train, data.users, data.items, window=1.0, epochs=1)
        sgd1_seconds = time.perf_counter() - t0
    for reg in args.batch_regularization:
        for bias_reg in args.bias_regularization or [reg]:
            bundle = copy.deepcopy(sgd1)
            fit = fit_implicit(
                bundle,
                train,
                iterations=args.iterations,
                regularization=reg,
                bias_regularization=bias_reg,
            )
            name = f"epochs=1 + batch, reg={reg:g}/{bias_reg:g}"
            report(name, bundle, sgd1_seconds + fit.seconds)
            print(f"    batch fit alone {fit.seconds:.2f} s, {fit.pairs} pairs", flush=True)
    if args.als and importlib.util.find_spec("implicit") is None:
        print("--als: the implicit package is not installed; no ALS row", flush=True)
    elif args.als:
        bundle = copy.deepcopy(sgd1)
        seconds = fit_als(bundle, train, args)
        name = f"epochs=1 + implicit ALS, alpha={args.als_alpha:g}"
        report(name, bundle, sgd1_seconds + seconds)
    setup = {
        "users": args.users,
        "items": args.items,
        "events": args.events,
        "seed": args.seed,
        "train": len(train),
        "test": len(test),
        "iterations": args.iterations,
    }
    return rows, setup


def section(rows: list[Row], setup: dict[str, Any], command: str) -> str:
    lines = [
        "## Implicit model: batch fit vs. SGD replay",
        "",
        f"Machine: {machine()}.",
        "",
        f"Command: `{command}`",
        "",
        f"Simulator {setup['users']} users x {setup['items']} items, {setup['events']:,} "
        f"interaction events, seed {setup['seed']}. Each variant trains a fresh bundle on "
        f"the first {setup['train']:,} events as a retrain does, then runs prequentially "
        f"(score, then learn online) over the last {setup['test']:,}. Batch: "
        f"`fit_implicit`, {setup['iterations']} Newton sweeps after one SGD pass, at the "
        "penalty per event shown (factors/item bias); implicit ALS (with `--als`): the "
        "`implicit` library's AlternatingLeastSquares on the same pairs, then scaled and "
        "biased to the observations' log loss. Fit s of those rows includes the SGD pass. "
        "Train loss: the implicit model's weighted log loss on the training observations; "
        "recall@10 of the implicit model, log loss and AUC of the click model (its "
        "`cf_logit` from that variant), both prequential over the held-out part.",
        "",
        "| variant | fit s | train loss | recall@10 | log loss | AUC |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.fit_seconds:.2f} | {r.train_loss:.4f} | {_f(r.recall)} | "
            f"{_f(r.logloss)} | {_f(r.auc)} |"
        )
    return "\n".join(lines) + "\n"


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--train-share", type=float, default=0.8)
    ap.add_argument("--epochs", type=int, nargs="*", default=[1, 2, 3])
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--batch-regularization", type=float, nargs="*", default=[0.01, 0.03, 0.1])
    ap.add_argument("--bias-regularization", type=float, nargs="*", default=[])
    ap.add_argument("--als", action="store_true", help="Add the implicit library's ALS.")
    ap.add_argument("--als-alpha", type=float, default=1.0)
    ap.add_argument("--als-regularization", type=float, default=0.1)
    ap.add_argument("--section", type=Path, help="Write the markdown section to this file.")
    args = ap.parse_args()
    rows, setup = run(args)
    if args.section is not None:
        command = "OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/implicit_batch.py " + " ".join(
            sys.argv[1:]
        )
        args.section.write_text(section(rows, setup, command))


if __name__ == "__main__":
    main()
