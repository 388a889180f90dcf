"""The method switches: which parts of NBSP a ``config.method`` turns on, and the choices of
every NBSP option (selector, mask target, mask policy, mask placement).

Methods (``config.method``), by what they switch on:

=============  =====  ======  ===========
method         masks  replay  mask values
=============  =====  ======  ===========
``sac``        no     no      -
``replay_only`` no    yes     -
``mask_only``  yes    no      alpha * (1 - score)
``nbsp``       yes    yes     alpha * (1 - score)
``nbsp_hard``  yes    yes     0
``ewc``        no     no      -  (baseline: EWC's penalty, :mod:`nbsp_jax.method.ewc`)
``shrink_perturb`` no no      -  (baseline: :func:`nbsp_jax.method.shrink_perturb` at each
                                  task switch)
``redo``       no     no      -  (baseline: :func:`nbsp_jax.method.redo` every
                                  ``redo_every`` gradient steps)
``cbp``        no     no      -  (baseline: :func:`nbsp_jax.method.cbp_step` after every
                                  chunk of updates)
``npc``        no     no      -  (baseline: NPC's importance, :mod:`nbsp_jax.method.npc`)
``pi``         no     no      -  (baseline: plasticity injection at each task switch)
``ancl``       no     no      -  (baseline: A-EWC, EWC's penalty and a pull toward an
                                  auxiliary network trained first on each later task,
                                  :mod:`nbsp_jax.method.ancl`)
=============  =====  ======  ===========
"""

from __future__ import annotations

from typing import NamedTuple

NETWORKS = ("actor", "qf1", "qf2")
SELECTORS = ("goal", "random", "activation", "weight")
MASK_TARGETS = ("actor", "critic", "both")
MASK_POLICIES = ("latest", "min")
MASK_PLACEMENTS = ("update", "gradient")


class MethodSpec(NamedTuple):
    """What a method switches on."""

    masks: bool
    replay: bool
    hard: bool
    ewc: bool = False  # EWC's penalty in both optimizers, consolidated at each task's end
    shrink_perturb: bool = False  # Shrink & Perturb of every network at each task switch
    redo: bool = False  # ReDo's dormant-unit resets during training
    cbp: bool = False  # continual backprop's generate-and-test during training
    npc: bool = False  # NPC: Taylor importance during training, learning-rate scales after
    inject: bool = False  # plasticity injection at each task switch after the first
    ancl: bool = False  # ANCL: an auxiliary network trained first on each task after the first

    @property
    def acts_in_phase_one(self) -> bool:
        """Whether the method changes phase 1's training (then it cannot fork). Plasticity
        injection does not: before its first injection only the base trains and the other
        parts add exactly zero, so its phase 1 is the plain network's (a fork puts the
        source's networks into the base)."""
        return self.redo or self.cbp or self.npc


METHODS = {
    "sac": MethodSpec(False, False, False),
    "replay_only": MethodSpec(False, True, False),
    "mask_only": MethodSpec(True, False, False),
    "nbsp": MethodSpec(True, True, False),
    "nbsp_hard": MethodSpec(True, True, True),
    "ewc": MethodSpec(False, False, False, ewc=True),
    "shrink_perturb": MethodSpec(False, False, False, shrink_perturb=True),
    "redo": MethodSpec(False, False, False, redo=True),
    "cbp": MethodSpec(False, False, False, cbp=True),
    "npc": MethodSpec(False, False, False, npc=True),
    "pi": MethodSpec(False, False, False, inject=True),
    "ancl": MethodSpec(False, False, False, ewc=True, ancl=True),
}


def method_spec(name: str) -> MethodSpec:
    """Looks up a method; raises ValueError naming the valid choices."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid choices: {tuple(METHODS)}")
    return METHODS[name]
