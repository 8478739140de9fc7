"""Brute-force transducer likelihood: every alignment enumerated (the independent truth of
the loss tests)."""

import itertools
import math


def path_sum(blank, label, T_b, U_b):
    """-log sum over every alignment of exp(sum of its transition log-probs), by enumeration.
    blank[t][u], label[t][u]: log-probs of a blank at (t, u) and of label u at (t, u)."""
    total = []
    n_sym = T_b - 1 + U_b
    for label_pos in itertools.combinations(range(n_sym), U_b):
        t = u = 0
        lp = 0.0
        for i in range(n_sym):
            if i in label_pos:
                lp += label[t][u]
                u += 1
            else:
                lp += blank[t][u]
                t += 1
        total.append(lp + blank[t][u])
    m = max(total)
    return -(m + math.log(sum(math.exp(x - m) for x in total)))
