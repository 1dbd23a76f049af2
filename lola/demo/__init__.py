"""``lola demo``: the main job, end to end, on the embedded broker and the default model.

What it does, in order:

1. picks ``--tests`` Upworthy headline tests from the *test* split of the dev data
   (never used to train the prior model) and writes them to ``<run>/tests.csv``
   (:mod:`~lola.demo.selection`);
2. scores their headlines with the prior model (:func:`lola.export.scoring.score_csv`);
3. replays the same tests offline for UCB, E&C and LOLA (:mod:`lola.replay`), tuned on
   tune-split tests; the tuned LOLA setting becomes the worker's default;
4. starts the embedded Tansu broker, the worker (``lola worker``) and the closed-loop
   load generator (``lola loadgen closed``) as child processes (:mod:`~lola.demo.supervisor`),
   and shows live progress (:mod:`~lola.demo.live`): events/s and consumer lag from the
   worker's ``/metrics`` and the share of traffic on each test's best headline from
   the snapshot topic;
5. writes ``reports/demo-<timestamp>.md`` with PNG plots (:mod:`~lola.demo.report`,
   :mod:`~lola.demo.plots`, :mod:`~lola.demo.stats`).

The orchestration is :mod:`lola.demo.run`; the command is :mod:`lola.demo.cli`. When a
step fails, the demo goes on without it and the report's "Skipped or degraded" section
says what and why; nothing is faked. Every process started carries
``LOLA_DEMO_RUN=<run id>`` in its environment, which is how the tests prove that
nothing survives.
"""

from lola.demo.cli import register

__all__ = ["register"]
