"""The contextual experiments of one shard: featurizers, kernel state, join window, oracle refits.

:class:`lola.stream.processor.ShardProcessor` owns one :class:`ContextualShard` and calls it
for experiments whose settings carry ``contextual`` (docs/contextual.md). Decisions of those
experiments come from :mod:`lola.kernels.contextual` with the request's featurized context;
counts and snapshots still go through the shard's BanditState row as for any experiment.

Arm features (``arm_dim`` long, setting ``arm_features``): ``slot`` dummy-codes the arm
(``[1, e_slot]``; full rank for up to arm_dim arms), ``text`` is
:func:`lola.stream.features.text_features` (intercept and a signed hashed bag of words),
``model`` starts as ``text`` and becomes :func:`lola.stream.features.model_features` (the prior
model's projected embedding) when the arm's prior arrives with it; updates before that stay in
A and b under the hashed row. The LLM prior enters as ``n_aux`` pseudo-impressions when it
arrives (:meth:`ContextualState.set_prior`), after the model's features, so at ``[1, z]``.

FALCON oracles are refit on one background thread (a d x d Cholesky solve over a copy of
the Gram matrix), never on the decision path: an epoch boundary marks the row, the next
batch submits the refit, and a later batch applies the weights.
"""

from __future__ import annotations

import base64
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from lola.kernels.contextual_state import ContextualState
from lola.stream.context import ContextualSettings, Featurizer
from lola.stream.features import model_features, text_features
from lola.stream.join import JoinWindow

POLICY_NAMES = {"linucb": "ctx_linucb", "falcon": "ctx_falcon"}


def arm_features(mode: str, slot: int, text: str, arm_dim: int) -> np.ndarray:
    """a of a new arm: the dummy-coded slot (``[1, e_slot]``, the arm_dim-th arm ``[1, 0, ...]``;
    arms beyond arm_dim fall back to text) or the hashed text (``text``, and ``model`` until the
    model's features arrive: :meth:`ContextualShard.set_model_features`)."""
    if mode == "slot" and slot < arm_dim:
        a = np.zeros(arm_dim)
        a[0] = 1.0
        if slot + 1 < arm_dim:
            a[slot + 1] = 1.0
        return a
    return text_features(text, arm_dim)


@dataclass
class CtxExperiment:
    row: int
    settings: ContextualSettings
    featurizer: Featurizer


class ContextualShard:
    def __init__(self, user_dim: int, arm_dim: int, join_window_s: float, join_window_bytes: int) -> None:
        self.user_dim, self.arm_dim = user_dim, arm_dim
        self.state = ContextualState(arm_dim, user_dim, capacity_experiments=4)
        self.join = JoinWindow(join_window_s, join_window_bytes)
        self.experiments: dict[str, CtxExperiment] = {}
        self._rows: list[int] = []
        self._slots: list[int] = []
        self._users: list[np.ndarray] = []
        self._w: list[float] = []
        self._r: list[float] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[int, Future] = {}

    def __contains__(self, experiment_id: str) -> bool:
        return experiment_id in self.experiments

    def policy_name(self, experiment_id: str) -> str:
        return POLICY_NAMES[self.experiments[experiment_id].settings.algorithm]

    # ------------------------------------------------------------------ registry
    def parse(self, raw: Any) -> ContextualSettings:
        return ContextualSettings.parse(raw, self.user_dim)

    def add_experiment(self, experiment_id: str, spec: ContextualSettings) -> None:
        # a row freed by an evicted experiment is reused, so the state stays as large as the
        # most contextual experiments held at once (rows are never moved: the join window and
        # pending oracle refits refer to them)
        used = {x.row for x in self.experiments.values()}
        free = [r for r in range(self.state.n_experiments) if r not in used]
        if free:
            row = free[0]
            self.state.reset_row(row, spec.params())
        else:
            row = self.state.add_experiment(spec.params())
        self.experiments[experiment_id] = CtxExperiment(row, spec, Featurizer(spec.features, self.user_dim))

    def remove_experiment(self, experiment_id: str) -> None:
        """Forget an evicted experiment: its join entries, never-joined count and pending refit go too."""
        exp = self.experiments.pop(experiment_id, None)
        if exp is None:
            return
        self.join.drop_row(exp.row)
        fut = self._pending.pop(exp.row, None)
        if fut is not None:
            fut.cancel()
        self.state.n_arms[exp.row] = 0  # nothing of it can be served until the row is reused

    def set_arm_active(self, experiment_id: str, slot: int, active: bool) -> None:
        self.state.set_arm_active(self.experiments[experiment_id].row, slot, active)

    def add_arm(self, experiment_id: str, text: str) -> None:
        exp = self.experiments[experiment_id]
        slot = int(self.state.n_arms[exp.row])
        self.state.add_arm(exp.row, arm_features(exp.settings.arm_features, slot, text, self.arm_dim))

    def retire_arm(self, experiment_id: str, slot: int) -> None:
        self.state.retire_arm(self.experiments[experiment_id].row, slot)

    def set_model_features(self, experiment_id: str, slot: int, z: np.ndarray) -> bool:
        """Arm ``slot``'s features from the prior model's projected embedding, in ``model`` mode
        (call before :meth:`set_prior`, whose pseudo-impressions use the arm's row). True if set."""
        exp = self.experiments[experiment_id]
        if exp.settings.arm_features != "model":
            return False
        self.state.set_arm_features(exp.row, slot, model_features(z, self.arm_dim))
        return True

    def set_prior(self, experiment_id: str, slot: int, prior: float) -> None:
        self.state.set_prior(self.experiments[experiment_id].row, slot, prior)

    # ------------------------------------------------------------------ events
    def featurize(self, experiment_id: str, context: dict | None, user_id: str | None) -> np.ndarray:
        """u of one request; EventError("bad_context") if the context cannot be used."""
        return self.experiments[experiment_id].featurizer(context, user_id)

    def outcome(self, experiment_id: str, slot: int, request_id: str | None, impression_id: str | None,
                event_id: str, impressions: float, reward: float) -> None:
        """Queue the training row of an outcome that joins its decision (else nothing to learn)."""
        entry = self.join.get(request_id, impression_id)
        if entry is None or entry.row != self.experiments[experiment_id].row:
            return
        if impressions > 0 and request_id is not None:
            self.join.link(event_id, request_id)
        self._rows.append(entry.row)
        self._slots.append(slot)  # the arm the outcome names (normally the decided one)
        self._users.append(entry.u)
        self._w.append(impressions)
        self._r.append(reward)

    def flush(self) -> None:
        """Train on the queued outcomes; submit refits of FALCON oracles whose epoch ended."""
        if self._rows:
            self.state.update(np.asarray(self._rows, dtype=np.int64), np.asarray(self._slots, dtype=np.int64),
                              np.stack(self._users), np.asarray(self._w, dtype=np.float64),
                              np.asarray(self._r, dtype=np.float64))
            del self._rows[:], self._slots[:], self._users[:], self._w[:], self._r[:]
        for row in self.state.due_rows():
            if row in self._pending:
                continue  # the next refit waits for this one; the flag stays set
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="lola-falcon-oracle")
            self._pending[row] = self._pool.submit(ContextualState.fit_oracle, *self.state.oracle_inputs(row))

    def apply_refits(self, wait: bool = False) -> int:
        """Install the oracles whose refit finished (all of them with ``wait``)."""
        done = 0
        for row, fut in list(self._pending.items()):
            if wait or fut.done():
                self.state.set_oracle(row, fut.result())
                del self._pending[row]
                done += 1
        return done

    def decide(self, experiment_ids: list[str], request_ids: list[str], users: list[np.ndarray], seed: int,
               ts: float) -> tuple[list[int], list[float]]:
        self.apply_refits()
        rows = np.fromiter((self.experiments[e].row for e in experiment_ids), dtype=np.int64, count=len(users))
        slots, prop = self.state.select(rows, np.stack(users), seed)
        for rid, row, slot, u in zip(request_ids, rows.tolist(), slots.tolist(), users):
            if slot >= 0:
                self.join.put(rid, row, slot, u, ts)
        return slots.tolist(), prop.tolist()

    # ------------------------------------------------------------------ snapshots, checkpoints
    def snapshot(self, experiment_id: str) -> dict[str, Any]:
        exp = self.experiments[experiment_id]
        par = self.state.par[exp.row]
        out = {"algorithm": exp.settings.algorithm, "featurizer_version": exp.settings.features.version,
               "user_dim": self.user_dim, "arm_dim": self.arm_dim, "impressions": float(par[4]),
               "never_joined": self.join.never_joined.get(exp.row, 0), "join_entries": len(self.join.entries),
               "join_bytes": self.join.bytes}
        if exp.settings.algorithm == "falcon":
            out.update(epoch=int(par[6]), gamma=float(par[3]))
        return out

    def to_json(self) -> dict[str, Any]:
        self.apply_refits(wait=True)
        return {"user_dim": self.user_dim, "arm_dim": self.arm_dim,
                "experiments": {e: [x.row, x.settings.model_dump()] for e, x in self.experiments.items()},
                "state": base64.b64encode(self.state.to_bytes()).decode(), "join": self.join.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any], join_window_s: float, join_window_bytes: int) -> "ContextualShard":
        shard = cls(int(d["user_dim"]), int(d["arm_dim"]), join_window_s, join_window_bytes)
        shard.state = ContextualState.from_bytes(base64.b64decode(d["state"]))
        for exp_id, (row, spec) in d["experiments"].items():
            settings = ContextualSettings.model_validate(spec)
            shard.experiments[exp_id] = CtxExperiment(int(row), settings, Featurizer(settings.features, shard.user_dim))
        shard.join = JoinWindow.from_json(d["join"], join_window_s, join_window_bytes)
        return shard

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

