"""Slow NumPy twin of the contextual kernels, written from Algorithms 4 and 5 as printed.

A and the Gram matrix are kept explicitly and solved afresh at every decision; x is built
as the full Kronecker product (no block factorisation); propensities come straight from
the inverse-gap-weighting formula. Uniforms are kernels_twin's Python re-implementation.
"""

from __future__ import annotations

import math

import numpy as np
from kernels_twin import decision_keys, uniform


class ContextualTwin:
    def __init__(self, algorithm, arms, alpha=0.1, ridge=1.0, gamma_scale=1.0, first_epoch=32.0, n_aux=0.0,
                 priors=None):
        self.algorithm, self.alpha, self.gamma_scale = algorithm, alpha, gamma_scale
        self.arms = [np.asarray(a, dtype=float) for a in arms]
        self.active = [True] * len(arms)
        d = len(self.arms[0]) * 8
        self.du = 8
        self.A = ridge * np.eye(d)
        self.b = np.zeros(d)
        self.W = np.zeros(d)
        self.t, self.epoch_end, self.gamma = 0.0, first_epoch, 1.0
        if priors is not None and n_aux > 0:
            e0 = np.zeros(self.du)
            e0[0] = 1.0
            for a, mu in zip(self.arms, priors):
                x = np.kron(a, e0)
                self.A += n_aux * np.outer(x, x)
                self.b += n_aux * mu * x
        self.refit()

    def refit(self):
        self.W = np.linalg.solve(self.A, self.b)

    def probabilities(self, u):
        """The next decision's probability of each arm for user u (FALCON), or the tied argmax share."""
        xs = [np.kron(a, u) for a in self.arms]
        if self.algorithm == "falcon":
            f = np.array([self.W @ x if on else -np.inf for x, on in zip(xs, self.active)])
            best = int(np.argmax(f))
            k_act = sum(self.active)
            p = np.array([1.0 / (k_act + self.gamma * (f[best] - f[k])) if on and k != best else 0.0
                          for k, on in enumerate(self.active)])
            p[best] = 1.0 - p.sum()
            return p, f
        theta = np.linalg.solve(self.A, self.b)
        s = np.array([theta @ x + self.alpha * math.sqrt(max(x @ np.linalg.solve(self.A, x), 0.0)) if on else -np.inf
                      for x, on in zip(xs, self.active)])
        return s, s

    def decide(self, u, key):
        p, s = self.probabilities(u)
        if self.algorithm == "falcon":
            u0 = uniform(key, 0)
            acc = 0.0
            pick = int(np.argmax(s))
            for k in range(len(p)):
                if p[k] > 0:
                    acc += p[k]
                    if u0 < acc:
                        pick = k
                        break
            return pick, float(p[pick])
        tied = [k for k in range(len(s)) if s[k] == s.max()]
        pick = tied[min(int(uniform(key, 1) * len(tied)), len(tied) - 1)]
        return pick, 1.0 / len(tied)

    def learn(self, slot, u, w, r):
        x = np.kron(self.arms[slot], u)
        self.A += w * np.outer(x, x)
        self.b += r * x
        if w > 0:
            self.t += w
            if self.algorithm == "falcon" and self.t >= self.epoch_end:
                self.epoch_end = 2.0 * self.t
                self.gamma = max(1.0, self.gamma_scale * math.sqrt(len(self.arms) * self.t))
                self.refit()

    def simulate(self, users, seg, ctr, seed):
        out = []
        for u, s, key in zip(users, seg, decision_keys(seed, len(users))):
            slot, p = self.decide(u, key)
            c = 1.0 if uniform(key, 2) < ctr[s, slot] else 0.0
            self.learn(slot, u, 1.0, c)
            out.append((slot, p, c))
        return out
