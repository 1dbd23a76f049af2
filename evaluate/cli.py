"""``lola evaluate``: off-policy evaluation from the worker's topics or an Open Bandit Dataset folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from lola.errors import ConfigError

MAX_RESAMPLES = 100_000


def load_log(log: str, bootstrap: Optional[str], topic_prefix: Optional[str], settings_file: Optional[Path],
             max_records: int) -> tuple[Any, dict | None, bool]:
    """(Log, snapshots or None, is OBD) for ``--log topics`` or ``--log obd:DIR``."""
    from lola.stream.decision_log import read_obd, read_stream_log

    if log.startswith("obd:"):
        return read_obd(log[4:]), None, True
    if log != "topics":
        raise ConfigError(f"--log must be 'topics' or 'obd:DIR', got {log!r}")
    from lola.stream.cli_common import load_settings as _settings, topics as _topics
    from lola.stream.snapshot import read_snapshots

    s = _settings(settings_file, bootstrap_servers=bootstrap, **_topics(topic_prefix))
    s.require_bootstrap()
    return read_stream_log(s, max_records), read_snapshots(s), False


def run(log: Any, snapshots: dict | None, obd: bool, policy: str, resamples: int, seed: int, tau: float,
        experiment: Optional[str], interval: str = "studentized") -> dict[str, Any]:
    """The ``lola evaluate`` JSON for one policy."""
    from lola.evaluate.estimators import Feedback, estimate, evaluate
    from lola.evaluate.policies import matrix, policy_table, replay, reward_model

    log = log.select(experiment)
    out: dict[str, Any] = {"policy": policy, "log": "obd" if obd else "topics", "experiment": experiment}
    if policy.startswith("replay:"):
        rewards = replay(log, policy[7:], snapshots, seed)["rewards"]
        fb = Feedback(np.zeros(len(rewards), dtype=np.int64), rewards, np.ones(len(rewards)),
                      np.ones((len(rewards), 1)))
        out.update(n=int(len(rewards)), n_logged=int(log.action.shape[0]), method="replay (Li et al. 2011)",
                   estimates={"replay": estimate(fb, "ips", resamples, np.random.default_rng(seed), interval=interval)})
    else:
        pi = matrix(log, policy_table(log, policy, snapshots))
        fb = Feedback(log.action, log.reward, log.pscore, pi, reward_model(log, snapshots, obd))
        out.update(n=int(log.action.shape[0]), estimates=evaluate(fb, resamples, seed, tau, interval), switch_tau=tau)
    unsupported = sorted(e for e in log.variants if not ((snapshots or {}).get(e, {}).get("ope") or {}).get("supported", True))
    if unsupported:  # the snapshot says some variant had propensity 0: IPS-type estimates are biased there
        out["warnings"] = [f"{len(unsupported)} experiment(s) logged by a policy without a positive propensity for "
                           f"every variant (snapshot ope.supported false; give it min_traffic): {', '.join(unsupported[:5])}"]
    out["interval"] = interval
    out["logged_mean_reward"] = float(log.reward.mean())
    out["health"] = log.health
    return out


def register(app: typer.Typer) -> None:
    """Add ``lola evaluate``."""

    @app.command("evaluate")
    def evaluate_cmd(
        policy: str = typer.Option("uniform", help="uniform | snapshot | file:PATH | replay:POLICY (docs/evaluation.md)"),
        log: str = typer.Option("topics", "--log", help="topics (the worker's decisions and events) or obd:DIR"),
        bootstrap: Optional[str] = typer.Option(None, "--bootstrap", help="Kafka bootstrap HOST:PORT (--log topics)"),
        resamples: int = typer.Option(1000, "--resamples", help="bootstrap resamples for the intervals (0: none)"),
        experiment: Optional[str] = typer.Option(None, "--experiment", help="evaluate one experiment only"),
        seed: int = typer.Option(0, help="bootstrap (and replay) seed"),
        interval: str = typer.Option("studentized", "--interval",
                                     help="bootstrap interval: studentized (bootstrap-t) or percentile (obp's)"),
        tau: float = typer.Option(20.0, help="switch-DR: importance weights above this keep the model term only"),
        max_records: int = typer.Option(5_000_000, help="most records read per topic"),
        topic_prefix: Optional[str] = typer.Option(None, "--topic-prefix"),
        settings_file: Optional[Path] = typer.Option(None, "--settings", help="env-style settings file"),
        out: Optional[Path] = typer.Option(None, "--out", help="also write the JSON here"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Off-policy evaluation (IPS, SNIPS, DR, switch-DR with bootstrap intervals) of a fixed policy."""
        if not 0 <= resamples <= MAX_RESAMPLES:
            raise ConfigError(f"--resamples must be in [0, {MAX_RESAMPLES}], got {resamples}")
        if not tau > 0:
            raise ConfigError(f"--tau must be > 0, got {tau}")
        from lola.evaluate.estimators import INTERVALS

        if interval not in INTERVALS:
            raise ConfigError(f"--interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
        if max_records < 1:
            raise ConfigError("--max-records must be >= 1")
        logged, snapshots, obd = load_log(log, bootstrap, topic_prefix, settings_file, max_records)
        result = run(logged, snapshots, obd, policy, resamples, seed, tau, experiment, interval)
        text = json.dumps(result, indent=2)
        if out is not None:
            out.write_text(text + "\n")
        if as_json:
            typer.echo(text)
            return
        typer.echo(f"{result['policy']} on {result['log']}: n = {result['n']}, logged mean reward "
                   f"{result['logged_mean_reward']:.5f}")
        for name, est in result["estimates"].items():
            ci = est["ci"]
            typer.echo(f"  {name:9s} {est['value']:.5f}" + ("" if ci is None else f"  [{ci[0]:.5f}, {ci[1]:.5f}]"))
