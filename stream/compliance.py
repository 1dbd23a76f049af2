"""The worker's compliance gate (docs/compliance.md): :class:`lola.comply.ComplianceGate` wired in.

* ``LOLA_COMPLIANCE_POLICY``: a policy file (YAML), or ``default`` for the policy shipped with
  the package. Unset: no gate, every new variant is ``active`` (as before). The rule checks
  run inline, before a variant is registered: a failing variant is ``blocked`` (never
  served, its reason in the snapshot, a ``noncompliant`` dead letter).
* ``LOLA_COMPLIANCE_CLASSIFIER``: ``package.module:factory``, ``factory(settings)`` returning
  ``classifier(text) -> reason or None``. With it, a new variant that passes the rules starts
  ``pending`` and is not served until one background thread has classified it (never on
  the decision path); the loop applies the answer. A classifier error leaves the variant
  pending and is retried at the next scan. Unlike priors, which never make a decision wait,
  an unchecked text must not reach users.
* SIGHUP re-reads the policy file and re-checks every running variant (a policy change); a
  file that no longer parses is logged and the old policy stays in force.

State changes go through :meth:`lola.stream.worker.Worker.request_variant_state`, so they
are applied by the loop between batches, journalled and checkpointed like any event.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable

from lola.comply import ComplianceGate, load_policy
from lola.errors import ConfigError, LolaError
from lola.stream.prior_plugins import call_factory

log = logging.getLogger("lola.worker")

#: How often the loop looks for pending variants to classify (seconds; only with a classifier).
SCAN_INTERVAL_S = 2.0

RequestState = Callable[[str, str, str, "str | None"], None]


def load_classifier(path: str, settings: Any) -> Callable[[str], str | None]:
    """Import ``package.module:factory`` and call ``factory(settings)`` (one-line errors)."""
    classifier = call_factory(path, settings, "compliance classifier")
    if not callable(classifier):
        raise ConfigError(f"compliance classifier {path!r} returned {type(classifier).__name__}, not a callable")
    return classifier


class WorkerCompliance:
    """The gate of new variants, the off-path classifier and re-checks on a policy reload."""

    def __init__(self, settings: Any, request_state: RequestState) -> None:
        self.path = settings.compliance_policy
        policy = load_policy(None if self.path == "default" else self.path)
        classifier = (load_classifier(settings.compliance_classifier, settings)
                      if settings.compliance_classifier else None)
        self.gate = ComplianceGate(policy, classifier)
        self._request_state = request_state
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lola-compliance") if classifier else None
        self._inflight: dict[tuple[str, str], Future] = {}
        self._reload = threading.Event()
        self._next_scan = 0.0
        self.rechecks = 0

    def request_reload(self) -> None:
        """Safe from a signal handler: the loop re-reads the policy at its next tick."""
        self._reload.set()

    def tick(self, shards: dict[int, Any]) -> None:
        """Called by the loop between batches."""
        if self._reload.is_set():
            self._reload.clear()
            self._recheck(shards)
        if self._pool is not None:
            self._collect()
            now = time.monotonic()
            if now >= self._next_scan:
                self._next_scan = now + SCAN_INTERVAL_S
                self._submit_pending(shards)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _variants(shards: dict[int, Any]) -> Iterable[tuple[str, str, str, str]]:
        for shard in list(shards.values()):
            for exp in list(shard.experiments.values()):
                if exp.status == "archived":
                    continue
                for vid, text, state in zip(exp.variant_ids, exp.texts, exp.states):
                    yield exp.experiment_id, vid, text, state

    def _recheck(self, shards: dict[int, Any]) -> None:
        try:
            policy = load_policy(None if self.path == "default" else self.path)
        except LolaError as exc:
            log.error("compliance policy not reloaded, the old one stays in force: %s", exc)
            return
        changes = self.gate.recheck(list(self._variants(shards)), policy)
        for c in changes:
            self._request_state(c.experiment_id, c.variant_id, c.state, c.reason)
        self.rechecks += 1
        log.info("compliance policy reloaded", extra={"changes": len(changes)})

    def _submit_pending(self, shards: dict[int, Any]) -> None:
        for experiment_id, variant_id, text, state in self._variants(shards):
            key = (experiment_id, variant_id)
            if state == "pending" and key not in self._inflight:
                self._inflight[key] = self._pool.submit(self.gate.classify, experiment_id, variant_id, text)

    def _collect(self) -> None:
        for key, fut in list(self._inflight.items()):
            if not fut.done():
                continue
            del self._inflight[key]
            try:
                state, reason = fut.result()
            except Exception as exc:  # the classifier's own failure: stay pending, retry at a later scan
                log.warning("compliance classifier failed; the variant stays pending",
                            extra={"experiment_id": key[0], "variant_id": key[1], "error": repr(exc)[:200]})
                continue
            self._request_state(key[0], key[1], state, reason)
