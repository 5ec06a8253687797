"""The identity protocols (``PROTOCOLS["identity"]``, see :mod:`facelib.classify.protocols`): the paper's KDEF
split (same people, random pictures, every 3-subset), cross-session, cross-angle (a view and its mirror held out)
and leave-one-expression-out."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..vocab import EXPRESSIONS
from .aggregate import Aggregator, k_subsets
from .folds import Fold, ProtocolUnavailable, check_n_folds, fold_rng, usable_positions

PAPER_SUBJECTS = tuple([f"F{i:02d}" for i in range(1, 6)] + [f"M{i:02d}" for i in range(1, 6)])


def paper_subjects(df: pd.DataFrame) -> list[str] | None:
    """The people the paper's identity protocol uses: KDEF's F01…F05, M01…M05 when the table is KDEF and has
    them all; otherwise ``None`` (every subject of the table)."""
    subj = set(df["subject"].astype(str)) if "subject" in df.columns else set()
    is_kdef = "dataset" not in df.columns or (df["dataset"].astype(str) == "kdef").all()
    return list(PAPER_SUBJECTS) if is_kdef and set(PAPER_SUBJECTS) <= subj else None


def paper_identity(df: pd.DataFrame, subjects="auto", session: str | None = "A", n_train: int = 20,
                   n_test: int = 15, k: int = 3, n_folds: int = 5, seed: int = 0,
                   aggregator: Aggregator | None = None, max_sets: int | None = None) -> list[Fold]:
    """The paper's identity protocol (see module docstring); folds are *repeats* of a random picture split.

    ``subjects="auto"``: the paper's 10 KDEF people on KDEF (:func:`paper_subjects`), every subject on any other
    table; ``None``: every subject. Per person and repeat: a seeded random ``n_train`` of the person's usable
    pictures (in ``session`` when the table has sessions) train, the next ``n_test`` (or what is left, >= k) test.
    A person with fewer than ``n_train + k`` pictures is split 20:15 (at least ``k`` each side), so the
    protocol runs on any labelled set; fewer than ``2k`` pictures raises :class:`ProtocolUnavailable`.
    Then every k-subset of each side (C(20,3)=1140 train, C(15,3)=455 test per person; ``max_sets`` caps it).
    """
    n_folds = check_n_folds(n_folds)
    mask = np.ones(len(df), dtype=bool)
    if session is not None and "session" in df.columns and (df["session"].astype(str) == str(session)).any():
        mask &= (df["session"].astype(str) == str(session)).to_numpy()
    pos = usable_positions(df, mask)
    subj_all = df["subject"].astype(str).to_numpy()
    if isinstance(subjects, str) and subjects == "auto":
        subjects = paper_subjects(df.iloc[pos])
    if subjects is None:
        subjects = sorted(set(subj_all[pos]))
    subjects = list(subjects)
    by_subject = {s: pos[subj_all[pos] == s] for s in subjects}
    short = {s: len(p) for s, p in by_subject.items() if len(p) < 2 * k}
    if short:
        raise ProtocolUnavailable(f"identity/paper needs >= {2 * k} usable pictures per person (k={k} per side); "
                                  f"too few: {short} — drop these people (subjects=...) or lower k")
    if len(subjects) < 2:
        raise ProtocolUnavailable(f"identity/paper needs >= 2 people, found {len(subjects)}")
    folds = []
    for f in range(n_folds):
        rng = fold_rng(seed, f)
        tr_sets, te_sets, counts = [], [], {}
        for si, s in enumerate(subjects):
            n = len(by_subject[s])
            if n >= n_train + k:
                a, b = n_train, min(n_test, n - n_train)
            else:
                a = min(max(k, int(round(n * n_train / (n_train + n_test)))), n - k)
                b = n - a
            p = np.sort(by_subject[s])[rng.permutation(n)]
            tr, te = np.sort(p[:a]), np.sort(p[a:a + b])
            sub_seed = int(rng.integers(2**31))
            tr_sets.append(k_subsets(tr, k, max_sets=max_sets, seed=sub_seed))
            te_sets.append(k_subsets(te, k, max_sets=max_sets, seed=sub_seed + 1))
            counts[s] = (len(tr), len(te))
        folds.append(Fold(np.concatenate(tr_sets), np.concatenate(te_sets), name=f"paper_identity-repeat{f}",
                          aggregator=aggregator,
                          info={"pictures_per_subject": counts, "k": k, "subjects": subjects,
                                "max_sets": max_sets}))
    return folds


def cross_session_identity(df: pd.DataFrame, subjects="auto", train_session: str = "A",
                           test_session: str = "B", k: int = 1, max_sets: int | None = None, seed: int = 0,
                           aggregator: Aggregator | None = None, n_folds: int = 1) -> list[Fold]:
    """Identity across KDEF sessions: train on session A pictures, test on session B (one fold; the split is
    fixed, ``n_folds`` is accepted for a uniform signature and ignored). With ``k > 1``, every k-subset within a
    person and side (capped by ``max_sets``) is aggregated as in the paper's protocol.

    Raises :class:`ProtocolUnavailable` when either session is absent (the KDEF dev set has session A only).
    """
    if "session" not in df.columns:
        raise ProtocolUnavailable("cross_session identity not available: the table has no 'session' column")
    pos = usable_positions(df)
    sessions = set(df["session"].astype(str).to_numpy()[pos])
    missing = {train_session, test_session} - sessions
    if missing:
        raise ProtocolUnavailable(
            f"cross_session identity not available: needs both sessions {train_session} and {test_session}; "
            f"the data has only session(s) {sorted(sessions)} (the KDEF dev set is session A only — use the full "
            "KDEF, or the cross_angle / leave_expression_out identity protocols)")
    sess = df["session"].astype(str).to_numpy()
    return [_identity_split(df, pos[sess[pos] == train_session], pos[sess[pos] == test_session], subjects, k,
                            max_sets, seed, aggregator, name="cross_session_identity-0",
                            info={"train_session": train_session, "test_session": test_session})]


MIRROR_GROUPS = (("FL", "FR"), ("HL", "HR"), ("S",))


def cross_angle_identity(df: pd.DataFrame, subjects="auto", session: str | None = "A", k: int = 1,
                         max_sets: int | None = None, seed: int = 0, aggregator: Aggregator | None = None,
                         groups=MIRROR_GROUPS, n_folds: int | None = None) -> list[Fold]:
    """Leave-one-view-pair-out identity (3 folds): fold i tests on the views ``groups[i]`` — a view *and its
    mirror* ({FL, FR}, {HL, HR}, {S}) — and trains on the others (same people). A mirrored profile is nearly the
    same picture flipped, so the pair is held out together, and image models train without flips
    (``fold.info["flip"] is False``). ``n_folds`` (if given) keeps the first n groups."""
    groups = [tuple(g) for g in groups][: n_folds or None]
    folds = _leave_value_out(df, "angle", groups, subjects, session, k, max_sets, seed, aggregator,
                             "cross_angle_identity")
    for f in folds:
        f.info["flip"] = False
    return folds


def leave_expression_out_identity(df: pd.DataFrame, subjects="auto", session: str | None = "A",
                                  k: int = 1, max_sets: int | None = None, seed: int = 0,
                                  aggregator: Aggregator | None = None, expressions=EXPRESSIONS,
                                  n_folds: int | None = None) -> list[Fold]:
    """Leave-one-expression-out identity: fold i tests on expression ``expressions[i]`` (all angles), trains on
    the other six. Leak-aware: identity must be recognised across an expression never seen for that person."""
    return _leave_value_out(df, "expression", [(e,) for e in list(expressions)[: n_folds or None]], subjects, session, k,
                            max_sets, seed, aggregator, "leave_expression_out_identity")


def _leave_value_out(df, column, groups, subjects, session, k, max_sets, seed, aggregator, name) -> list[Fold]:
    """One fold per group of values of ``column``: test on the group's pictures, train on the rest."""
    mask = np.ones(len(df), dtype=bool)
    if session is not None and "session" in df.columns and (df["session"].astype(str) == str(session)).any():
        mask &= (df["session"].astype(str) == str(session)).to_numpy()
    if column not in df.columns:
        raise ProtocolUnavailable(f"{name} needs a {column!r} column")
    pos = usable_positions(df, mask)
    col = df[column].astype(str).to_numpy()
    present = set(col[pos])
    folds = []
    for i, group in enumerate(groups):
        group = [v for v in group if v in present]
        if not group:
            continue
        held = np.isin(col[pos], group)
        test_key = f"test_{column}"
        folds.append(_identity_split(df, pos[~held], pos[held], subjects, k, max_sets, seed + i, aggregator,
                                     name=f"{name}-{i}",
                                     info={test_key: group[0] if len(group) == 1 else "+".join(group),
                                           f"test_{column}s": group}))
    if not folds:
        raise ProtocolUnavailable(f"{name}: none of {groups} found in column {column!r}")
    return folds


def _identity_split(df, tr_pos, te_pos, subjects, k, max_sets, seed, aggregator, name, info) -> Fold:
    subj = df["subject"].astype(str).to_numpy()
    if isinstance(subjects, str) and subjects == "auto":
        subjects = paper_subjects(df.iloc[np.concatenate([tr_pos, te_pos])])
    if subjects is None:
        subjects = sorted(set(subj[tr_pos]) & set(subj[te_pos]))
    tr_sets, te_sets = [], []
    rng = np.random.default_rng(int(seed))
    for s in subjects:
        a, b = np.sort(tr_pos[subj[tr_pos] == s]), np.sort(te_pos[subj[te_pos] == s])
        if len(a) < k or len(b) < k:
            raise ProtocolUnavailable(f"{name}: subject {s} has {len(a)} train / {len(b)} test pictures (< k={k}); "
                                      "drop that subject (subjects=...) or lower k")
        if k == 1:
            tr_sets.append(a), te_sets.append(b)
        else:
            tr_sets.append(k_subsets(a, k, max_sets, int(rng.integers(2**31))))
            te_sets.append(k_subsets(b, k, max_sets, int(rng.integers(2**31))))
    if len(tr_sets) < 2:
        raise ProtocolUnavailable(f"{name}: needs >= 2 people with pictures on both sides, found {len(tr_sets)}")
    info = dict(info, subjects=list(subjects), k=k)
    return Fold(np.concatenate(tr_sets), np.concatenate(te_sets), name=name, aggregator=aggregator, info=info)
