"""The paper's two domains behind one interface (:class:`~nbsp_jax.domains.base.Domain`):
:class:`MetaWorld` and :class:`Atari`."""

from nbsp_jax.domains.atari import Atari, check_memory
from nbsp_jax.domains.base import Domain
from nbsp_jax.domains.metaworld import MetaWorld

DOMAINS = {"sac": MetaWorld, "sac_atari": Atari}


def domain_class(agent: str) -> type:
    """The domain of ``config.agent``; raises ValueError naming the valid choices."""
    if agent not in DOMAINS:
        raise ValueError(f"unknown config.agent {agent!r}; valid choices: {tuple(DOMAINS)}")
    return DOMAINS[agent]


def get_domain(config) -> Domain:
    """The :class:`MetaWorld` or :class:`Atari` domain of ``config.agent``."""
    return domain_class(config.agent)(config)


__all__ = ["DOMAINS", "Atari", "Domain", "MetaWorld", "check_memory", "domain_class",
           "get_domain"]
