"""Continual-RL metrics of the NBSP paper (SPEC section 6; paper Eq. 9-13, appendix C.4).

Pure numpy, no JAX. Everything here works on the *phase-indexed* performance matrix
``sr`` of one run:

    sr[i, j] = performance on the task of phase ``j`` after training phase ``i``

(0-indexed here; SPEC and the paper count from 1). ``H`` is the number of phases. In a
cycling sequence the same task appears in several phases, e.g. the two-task cycle
window-open -> window-close trained c = 2 times gives ``H = 4`` phases with tasks
``[window-open, window-close, window-open, window-close]``. Rows and columns of ``sr``
are phases, not distinct tasks, exactly as in the paper: columns 0 and 2 of that matrix
hold the same numbers (both are evaluations of window-open), and the metrics count them
once per phase.

Only entries with ``j <= i`` are read; the upper triangle (tasks of phases not reached
yet) is ignored, so it may hold anything finite.

Metrics (0-indexed translation of SPEC section 6 / paper Eq. 9-11):

* ASR (AR for Atari) = (1/H) sum_{i=0}^{H-1} 1/(i+1) sum_{j<=i} sr[i, j]
* FWT = (1/H) sum_i sr[i, i]
* FM  = (1/(H-1)) sum_{i=1}^{H-1} (1/i) sum_{j<i} max_{l in j..i-1} (sr[l, j] - sr[i, j])

FM follows SPEC: the maximum runs over the phases ``l`` from ``j`` (when phase ``j``'s task
was trained) to ``i - 1``. The paper's Eq. 10 prints ``l in {1, ..., i-1}``; for a
phase-indexed matrix the entries ``l < j`` are evaluations before phase ``j`` was trained,
which the SPEC (and Chaudhry et al., 2018) exclude. FM is not clipped at 0: a task that
improves after it was trained contributes a negative term, as in the formula.

For Atari, ``sr`` holds normalised returns (:func:`normalize_atari`, paper Eq. 12 with the
random/human scores of Table 7) and the ASR is reported as AR (Eq. 13).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "ATARI_SCORES",
    "canonical_atari_game",
    "continual_metrics",
    "continual_metrics_batch",
    "metrics_for",
    "normalize_atari",
    "summarize",
]

METRIC_NAMES = ("asr", "fm", "fwt")

# Paper Table 7 (scores of Mnih et al., 2015): game -> (random score, human score).
ATARI_SCORES: dict[str, tuple[float, float]] = {
    "Alien": (227.5, 6875.0),
    "BankHeist": (14.2, 734.4),
    "Bowling": (23.1, 154.8),
    "Pong": (-20.7, 9.3),
}


def _as_sr_matrix(sr: Any, ndim: int) -> np.ndarray:
    """Converts ``sr`` to a float64 array and checks it is finite with square phase axes."""
    try:
        arr = np.asarray(sr, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sr must be numeric, got {type(sr).__name__}: {err}") from err
    what = "[H, H]" if ndim == 2 else "[S, H, H]"
    if arr.ndim != ndim:
        raise ValueError(f"sr must have shape {what}, got shape {arr.shape} (ndim {arr.ndim})")
    if arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"sr must have shape {what} (square phase axes), got shape {arr.shape}")
    if arr.shape[-1] < 1:
        raise ValueError(f"sr needs at least one phase, got shape {arr.shape}")
    if ndim == 3 and arr.shape[0] < 1:
        raise ValueError(f"sr needs at least one seed, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = tuple(int(k) for k in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"sr must be finite, got {arr[bad]} at index {bad} (shape {arr.shape})")
    return arr


def _metrics_2d(sr: np.ndarray) -> dict[str, float]:
    """ASR, FM and FWT of one validated ``[H, H]`` float64 matrix."""
    h = sr.shape[0]
    asr = float(np.mean([sr[i, : i + 1].mean() for i in range(h)]))
    fwt = float(np.mean(np.diag(sr)))
    if h == 1:
        fm = math.nan
    else:
        per_phase = []
        for i in range(1, h):
            # For each earlier phase j: best performance on phase j's task over phases
            # j..i-1, minus the performance after phase i.
            drops = [sr[j:i, j].max() - sr[i, j] for j in range(i)]
            per_phase.append(np.mean(drops))
        fm = float(np.mean(per_phase))
    return {"asr": asr, "fm": fm, "fwt": fwt}


def continual_metrics(sr: Any) -> dict[str, float]:
    """ASR, FM and FWT (SPEC section 6, paper Eq. 9-11) of one phase-indexed matrix.

    Args:
        sr: array-like of shape ``[H, H]``; ``sr[i, j]`` is the performance (success rate,
            or normalised return for Atari) on the task of phase ``j`` after training phase
            ``i``, 0-indexed. Phases may repeat tasks (a cycle A -> B -> A -> B gives
            ``H = 4``); the matrix is indexed by phase. Only ``j <= i`` is read.

    Returns:
        ``{'asr': float, 'fm': float, 'fwt': float}``. ``fm`` is ``nan`` when ``H == 1``
        (forgetting needs a later phase; Eq. 10 divides by ``H - 1 = 0``).

    Raises:
        ValueError: if ``sr`` is not numeric, not 2-D, not square, empty or not finite.

    Example:
        Two-task cycle A -> B -> A -> B where each task is solved right after training it
        and fully forgotten when the other one is trained::

            >>> sr = [[1, 0, 1, 0],
            ...       [0, 1, 0, 1],
            ...       [1, 0, 1, 0],
            ...       [0, 1, 0, 1]]
            >>> m = continual_metrics(sr)
            >>> round(m['asr'], 4), round(m['fm'], 4), m['fwt']
            (0.6667, 0.7222, 1.0)

        ASR = (1 + 1/2 + 2/3 + 1/2) / 4 = 2/3 and FM = (1 + 1/2 + 2/3) / 3 = 13/18.
    """
    return _metrics_2d(_as_sr_matrix(sr, ndim=2))


def continual_metrics_batch(sr: Any) -> dict[str, np.ndarray]:
    """Per-seed :func:`continual_metrics` of a stack of matrices.

    Args:
        sr: array-like of shape ``[S, H, H]`` (seed, phase after, phase evaluated).

    Returns:
        ``{'asr', 'fm', 'fwt'}`` -> float64 array of shape ``[S]`` (``fm`` all ``nan`` when
        ``H == 1``).

    Raises:
        ValueError: if ``sr`` is not a finite ``[S, H, H]`` array with ``S, H >= 1``.

    Example:
        Identity matrices: each task is learned (to 1 or 0.5) and then fully forgotten::

            >>> import numpy as np
            >>> out = continual_metrics_batch(np.stack([np.eye(2), 0.5 * np.eye(2)]))
            >>> out['fwt'].tolist(), out['fm'].tolist()
            ([1.0, 0.5], [1.0, 0.5])
    """
    arr = _as_sr_matrix(sr, ndim=3)
    per_seed = [_metrics_2d(m) for m in arr]
    return {k: np.array([m[k] for m in per_seed], dtype=np.float64) for k in METRIC_NAMES}


def summarize(per_seed: Any) -> dict[str, Any]:
    """Mean and standard error over seeds, as plain Python types (JSON-serialisable).

    Args:
        per_seed: 1-D array-like of shape ``[S]`` (one value per seed), or a mapping
            ``name -> [S]`` such as the output of :func:`continual_metrics_batch`, which is
            summarised entry by entry.

    Returns:
        ``{'mean': float, 'stderr': float, 'per_seed': list[float]}`` with
        ``stderr = std(ddof=1) / sqrt(S)`` and ``stderr = 0.0`` for ``S == 1``; for a
        mapping input, ``{name: that dict}``. ``nan`` values propagate (e.g. FM with
        ``H == 1``); ``json.dumps`` writes them as ``NaN``.

    Raises:
        ValueError: if a value array is not 1-D or is empty.

    Example:
        >>> summarize([0.25, 0.5, 0.75])['mean'], round(summarize([0.25, 0.5, 0.75])['stderr'], 4)
        (0.5, 0.1443)
    """
    if isinstance(per_seed, Mapping):
        return {name: summarize(values) for name, values in per_seed.items()}
    arr = np.asarray(per_seed, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"per_seed must be a non-empty 1-D array [S], got shape {arr.shape}")
    n = arr.size
    mean = float(arr.mean())
    stderr = 0.0 if n == 1 else float(arr.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "stderr": stderr, "per_seed": [float(v) for v in arr]}


def metrics_for(sr: Any, atari: bool = False) -> dict[str, Any]:
    """Metrics of one run or of seeds, named as in the paper (``'ar'`` for Atari, Eq. 13).

    Dispatches to :func:`continual_metrics` for ``[H, H]`` input and to
    :func:`continual_metrics_batch` for ``[S, H, H]``; with ``atari`` the key ``'asr'`` is
    renamed ``'ar'``.

    Args:
        sr: array-like of shape ``[H, H]`` or ``[S, H, H]``; for Atari it must already hold
            normalised returns (:func:`normalize_atari`).
        atari: rename ``'asr'`` to ``'ar'``.

    Returns:
        ``{'asr' or 'ar', 'fm', 'fwt'}`` -> float (2-D input) or array ``[S]`` (3-D input).

    Raises:
        ValueError: as :func:`continual_metrics`, or if ``sr`` is neither 2-D nor 3-D.

    Example:
        >>> sorted(metrics_for([[0.5]], atari=True))
        ['ar', 'fm', 'fwt']
    """
    ndim = np.ndim(sr)
    if ndim == 3:
        out: dict[str, Any] = continual_metrics_batch(sr)
    elif ndim == 2:
        out = continual_metrics(sr)
    else:
        raise ValueError(
            f"sr must have shape [H, H] or [S, H, H], got shape {np.shape(sr)} (ndim {ndim})"
        )
    if atari:
        out = {("ar" if k == "asr" else k): v for k, v in out.items()}
    return out


_LOOKUP = {name.lower(): name for name in ATARI_SCORES}


def canonical_atari_game(game: str) -> str:
    """Table 7 name of an Atari game given in EnvPool/Gymnasium style, case-insensitively.

    Accepts e.g. ``'Pong'``, ``'pong'``, ``'Pong-v5'`` (EnvPool), ``'ALE/Pong-v5'``;
    ``'Bank_Heist'`` or ``'bank-heist'`` also map to ``'BankHeist'``.

    Args:
        game: game or environment id.

    Returns:
        The key of :data:`ATARI_SCORES`.

    Raises:
        ValueError: for a game not in Table 7; the message lists the known games.

    Example:
        >>> canonical_atari_game('bankheist-v5')
        'BankHeist'
    """
    key = str(game).strip()
    key = re.sub(r"^ALE/", "", key, flags=re.IGNORECASE)
    key = re.sub(r"-v\d+$", "", key, flags=re.IGNORECASE)
    key = re.sub(r"[^0-9a-z]", "", key.lower())
    if key not in _LOOKUP:
        raise ValueError(
            f"unknown Atari game {game!r}; known games (paper Table 7): "
            f"{', '.join(sorted(ATARI_SCORES))}"
        )
    return _LOOKUP[key]


def normalize_atari(game: str, returns: Any) -> Any:
    """Human-normalised Atari return, paper Eq. 12: ``(r - random) / (human - random)``.

    Args:
        game: game name in Table 7 (``'Pong'``, ``'Pong-v5'``, ... see
            :func:`canonical_atari_game`).
        returns: raw return(s), scalar or array of any shape.

    Returns:
        ``float`` for a scalar input, else a float64 array of the same shape.

    Raises:
        ValueError: for an unknown game (the message lists the known games).

    Example:
        Pong has random -20.7 and human 9.3, so 9.3 -> 1 and -5.7 -> 0.5::

            >>> round(normalize_atari('Pong-v5', -5.7), 6)
            0.5
    """
    random_score, human_score = ATARI_SCORES[canonical_atari_game(game)]
    r = np.asarray(returns, dtype=np.float64)
    out = (r - random_score) / (human_score - random_score)
    return float(out) if out.ndim == 0 else out
