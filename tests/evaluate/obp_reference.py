"""Run under Open Bandit Pipeline's own environment (``make obp-env``; .venv-obp/bin/python):
``python obp_reference.py IN.npz OUT.json TAU``. Reads action, reward, pscore, pi [n, K], q [n, K]
and writes obp's IPS, SNIPS, DR and switch-DR policy values (obp.ope, version in the output)."""

import json
import sys

import numpy as np
import obp
from obp.ope import (DoublyRobust, InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting,
                     SwitchDoublyRobust)

data = np.load(sys.argv[1])
tau = float(sys.argv[3])
action, reward, pscore = data["action"], data["reward"], data["pscore"]
action_dist = data["pi"][:, :, None]   # obp's shape [n, K, len_list]
q = data["q"][:, :, None]
kw = dict(reward=reward, action=action, pscore=pscore, action_dist=action_dist, position=np.zeros_like(action))
out = {
    "obp_version": obp.__version__,
    "ips": InverseProbabilityWeighting().estimate_policy_value(**kw),
    "snips": SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kw),
    "dr": DoublyRobust().estimate_policy_value(estimated_rewards_by_reg_model=q, **kw),
    "switch_dr": SwitchDoublyRobust(tau=tau).estimate_policy_value(estimated_rewards_by_reg_model=q, **kw),
}
with open(sys.argv[2], "w") as fh:
    json.dump({k: (float(v) if k != "obp_version" else v) for k, v in out.items()}, fh)
