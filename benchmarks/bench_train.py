"""Training cost, old path vs new path (the lean training loop): what the lean loop, the device's precision and the scikit-learn
grid changes buy, as ratios, plus the accuracy checks that they change nothing that matters.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--threads 2] [--sections 4,5a] [--kdef-full ROOT]

Prints, one block each:
1. image ResNet-34 step (forward + backward + AdamW) at 48 px (batch 32) and 224 px (batch 16): fp32 with the old
   optimizer vs the precision ``choose_precision`` picks for this CPU (fused AdamW, channels_last where chosen);
2. the study's cost per 48-px picture-epoch vs the bare network step (the overhead figure, target ≤ 1.3×), with the
   split of one epoch (data/augment, forward/backward/step, validation), old loop vs new;
3. one vector cell: 1-D ResNet-34 on a 40-d vector, batch 128, per epoch, old loop vs new;
4. one scikit-learn cell (linsvm on HOG, 7 expression classes) on a KDEF-shaped table: the old grid code (kept
   here) vs ``train_vector_model``; ``--quick`` uses a 2× dev-sized table, the full mode ~4,900 rows (7× the dev
   table, a full KDEF's size). The old grid is capped at 60 s (quick) / 360 s (full): each old fit runs in a forked
   child stopped when the cap is spent, and a capped figure is printed as "≥". ``--kdef-full ROOT``: the HOG table
   of a real full-KDEF-sized folder instead (a full KDEF, or ``facelib synthetic --identities 70 --sessions A B``);
5. accuracy: (a) scikit-learn stopped grid vs the old full grid on the dev HOG table (test accuracy over person
   splits); (b) fp32 vs the precision the study picks at ``CPU_BF16_MIN_IMAGE_SIZE`` = 128 px (bf16 +
   channels_last on a CPU with native bf16) for the image ResNet-34 trained by the study's own loop
   (``_fit_torch``, ``image_inputs``, ``image_eval_batch``) on identity: the dev KDEF's 20 people, straight and
   half-profile pictures (full profiles left out, for time), each person's pictures split ~75/25 into fit /
   validation (fixed seed), 10 epochs, 3 seeds — mean ± std of the best validation accuracy, chance level, seconds
   per epoch, and the difference against the repeats' pooled std (the issue's criterion). ``--quick``: 2 person
   splits in (a); 6 people, 2 epochs, 2 seeds in (b) (a smoke test of the same path).

Data: the dev KDEF under ``FACELIB_KDEF`` (manifest read with ``facelib.data``) when set, else synthetic arrays of
the same shapes (said in the output). Timings on a shared machine are noisy; the load average is printed.
``--quick`` takes < 3 min on 2 cores (167 s measured on the dev KDEF), the full mode ≈ 22 min (1,340 s measured).
"""
from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from facelib.classify import images as I  # noqa: E402
from facelib.classify import trainer as T  # noqa: E402
from facelib.classify.models import ResNet34Vector, image_resnet34  # noqa: E402
from facelib.classify.precision import (CPU_BF16_MIN_IMAGE_SIZE, Precision, choose_precision,  # noqa: E402
                                        cpu_has_native_bf16)

I_BF16_SIZE = CPU_BF16_MIN_IMAGE_SIZE  # section 5b compares fp32 and bf16 where the study starts to use bf16
ID_ANGLES = ("S", "HL", "HR")  # 5b's pictures: straight and half profiles (KDEF's full profiles left out)


def load() -> tuple:
    return tuple(round(x, 2) for x in os.getloadavg())


# ------------------------------------------------------------------------------ the old path, kept for comparison
def old_augment_batch(x, gen, flip=True, scale=(0.75, 1.0), ratio=(0.9, 1.1), jitter=0.2):
    B, _, S, _ = x.shape
    mean, std = I.IMAGENET_MEAN, I.IMAGENET_STD
    u = torch.rand(B, 6, generator=gen)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    r = ratio[0] + (ratio[1] - ratio[0]) * u[:, 1]
    w, h = torch.sqrt(area * r).clamp(max=1.0), torch.sqrt(area / r).clamp(max=1.0)
    cx, cy = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)
    sx = torch.where(u[:, 4] < 0.5, -w, w) if flip else w
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    img = out * std + mean
    j = 1 + jitter * (2 * torch.rand(B, 3, 1, 1, 1, generator=gen) - 1)
    img = img * j[:, 0]
    m = img.mean(dim=(1, 2, 3), keepdim=True)
    img = (img - m) * j[:, 1] + m
    gray = img.mean(dim=1, keepdim=True)
    img = ((img - gray) * j[:, 2] + gray).clamp(0, 1)
    return (img - mean) / std


def old_fit_torch(model, X_fit, y_fit, X_val, y_val, to_tensor, *, epochs, batch_size, seed, augment=None):
    """The loop before the lean loop (numpy fancy-indexing + conversion per batch, default AdamW, deepcopy), timed the
    same way: returns (seconds per training pass, history with data/val seconds)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(epochs), 1))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(int(seed))
    y_fit_t = torch.as_tensor(y_fit, dtype=torch.long)
    best, best_state, hist = (-1.0, np.inf), None, []

    def logits_of(X):
        model.eval()
        outs, step = [], max(batch_size, 256)
        with torch.no_grad():
            for i in range(0, len(X), step):
                outs.append(model(to_tensor(X[i:i + step])).float().cpu())
        return torch.cat(outs)

    for _ in range(epochs):
        model.train()
        t0, t_data = time.perf_counter(), 0.0
        perm = torch.randperm(len(X_fit), generator=gen).numpy()
        for i in range(0, len(X_fit), batch_size):
            b = perm[i:i + batch_size]
            td = time.perf_counter()
            xb, yb = to_tensor(X_fit[b]), y_fit_t[b]
            if augment is not None:
                xb = augment(xb, gen)
            t_data += time.perf_counter() - td
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            float(loss.detach())
        sched.step()
        sec = time.perf_counter() - t0
        tv = time.perf_counter()
        logits = logits_of(X_val)
        acc = float((logits.argmax(1).numpy() == y_val).mean())
        vl = float(loss_fn(logits, torch.as_tensor(y_val)))
        if (acc, -vl) > (best[0], -best[1]):
            best, best_state = (acc, vl), copy.deepcopy(model.state_dict())
        hist.append({"seconds": sec, "data_seconds": t_data, "val_seconds": time.perf_counter() - tv})
    return hist


OLD_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


def old_baseline(name, seed=0, C=1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000, random_state=seed))
    if name == "svm":
        return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=C, gamma="scale", random_state=seed))
    return make_pipeline(StandardScaler(), LinearSVC(C=C, max_iter=5000, random_state=seed))


def _old_fit_one(name, seed, c, X_fit, y_fit, X_val, y_val, conn=None):
    """One pipeline of the old grid: (validation accuracy, fit seconds, pipeline); sent down ``conn`` (without the
    pipeline) when run in a child process."""
    pipe = old_baseline(name, seed, c)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(X_fit, y_fit)
    dt = time.perf_counter() - t0
    acc = float((pipe.predict(X_val) == y_val).mean())
    if conn is not None:
        conn.send((acc, dt))
        conn.close()
    return acc, dt, pipe


def old_fit_sklearn(name, X_fit, y_fit, X_val, y_val, seed=0, cap_seconds=None):
    """The old grid: a whole pipeline per C, every C. Returns (best (accuracy, C, pipeline), seconds spent, tried
    [(C, accuracy, seconds)]). With ``cap_seconds`` (this benchmark's bound, not the old code's) each fit runs in a
    forked child that is stopped once the cap is spent — its accuracy is then None and the grid ends there — and
    ``best`` carries no pipeline."""
    best, spent, tried = None, 0.0, []
    fork = cap_seconds is not None and "fork" in mp.get_all_start_methods()
    for c in OLD_C_GRID:
        left = None if cap_seconds is None else cap_seconds - spent
        if left is not None and left <= 0:
            break
        if not fork:  # no cap, or no fork here: in this process (a capped grid then stops between fits)
            acc, dt, pipe = _old_fit_one(name, seed, c, X_fit, y_fit, X_val, y_val)
        else:
            ctx = mp.get_context("fork")
            recv, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_old_fit_one, args=(name, seed, c, X_fit, y_fit, X_val, y_val, send),
                                daemon=True)
            t0 = time.perf_counter()
            child.start()
            send.close()
            if not recv.poll(left):
                child.terminate()
                child.join()
                tried.append((c, None, time.perf_counter() - t0))
                spent += tried[-1][2]
                break
            acc, dt = recv.recv()
            child.join()
            pipe = None
        spent += dt
        tried.append((c, acc, dt))
        if best is None or acc > best[0]:
            best = (acc, c, pipe)
    return best, spent, tried


# ------------------------------------------------------------------------------------------------------ data
def dev_tables():
    """(pictures uint8 (n, 48, 48, 3), HOG (n, 1764), expression codes, subjects, manifest (usable rows) or None,
    source)."""
    root = os.environ.get("FACELIB_KDEF")
    if root and Path(root).is_dir():
        from facelib.data.datasets import load_kdef

        man = load_kdef(root, progress=False)
        man = man[man["usable"]].reset_index(drop=True)
        H = I.picture_features(man, "hog")
        codes = {e: i for i, e in enumerate(sorted(set(man["expression"])))}
        y = man["expression"].map(codes).to_numpy()
        pics = I.load_images(man["path"].astype(str).tolist(), 48)
        return pics, H, y, man["subject"].to_numpy(), man, f"dev KDEF ({root}, {len(man)} pictures, whole frames)"
    rng = np.random.default_rng(0)
    n, subj = 700, np.repeat(np.arange(20), 35)
    y = np.tile(np.repeat(np.arange(7), 5), 20)
    centre = rng.normal(size=(7, 1764)).astype(np.float32)
    H = (0.4 * centre[y] + rng.normal(size=(n, 1764))).astype(np.float32)
    pics = rng.integers(0, 256, (n, 48, 48, 3), dtype=np.uint8)
    return pics, H, y, subj.astype(str), None, "synthetic arrays (no FACELIB_KDEF)"


def kdef_table(root):
    """(HOG, expression codes, subjects, description) of every usable picture under a KDEF-layout folder."""
    from facelib.data.datasets import load_kdef

    man = load_kdef(root, progress=False)
    man = man[man["usable"]].reset_index(drop=True)
    codes = {e: i for i, e in enumerate(sorted(set(man["expression"])))}
    return (I.picture_features(man, "hog"), man["expression"].map(codes).to_numpy(), man["subject"].to_numpy(),
            f"the HOG table of {root}, {man['subject'].nunique()} people")


def replicate(H, y, subj, reps, seed=0):
    """The table ``reps`` times (KDEF-shaped: more people), copies jittered by 0.3 × each feature's std; a copy
    keeps its person's id, so splits by person keep copies together."""
    rng = np.random.default_rng(seed)
    sd = H.std(0)
    X = np.concatenate([H if r == 0 else (H + 0.3 * sd * rng.normal(size=H.shape)).astype(np.float32)
                        for r in range(reps)])
    return X.astype(np.float32), np.tile(y, reps), np.tile(subj, reps)


def person_split(subj, seed, fractions=(0.7, 0.15)):
    people = np.array(sorted(set(subj)))
    np.random.default_rng(seed).shuffle(people)
    a, b = int(fractions[0] * len(people)), int((fractions[0] + fractions[1]) * len(people))
    parts = [set(people[:a]), set(people[a:b]), set(people[b:])]
    return [np.flatnonzero([s in p for s in subj]) for p in parts]


# ------------------------------------------------------------------------------------------------ measures
def step_ms(model, x, y, prec: Precision, fused: bool, steps: int) -> float:
    """ms per input of forward + backward + AdamW (after one warm-up step)."""
    model = model.to(memory_format=prec.memory_format(x.dim()))
    x = x.contiguous(memory_format=prec.memory_format(x.dim()))
    opt = (T.make_adamw(model.parameters(), 1e-3, 0.05, "cpu") if fused
           else torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05))
    model.train()
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with prec.autocast():
            out = model(x)
        F.cross_entropy(out.float(), y).backward()
        opt.step()
    return 1e3 * (time.perf_counter() - t0) / steps / len(x)


def identity_split(y, seed=0, fit_fraction=0.75):
    """Per class (person): its pictures shuffled with ``seed``, ``fit_fraction`` to fit, the rest to validation —
    disjoint pictures of the same people. Returns (fit indices, validation indices)."""
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for c in np.unique(y):
        i = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fit_fraction * len(i)))
        fit.extend(i[:k])
        val.extend(i[k:])
    return np.sort(fit), np.sort(val)


def precision_arm(pics, y, fit, val, prec: Precision, size, epochs, seeds, verbose=False):
    """The study's image training (``T._fit_torch`` with ``T.image_inputs`` and ``T.image_eval_batch``) in ``prec``,
    once per seed, no early stopping: (best validation accuracies, seconds per epoch)."""
    tin, ein = T.image_inputs(prec)
    accs, secs = [], []
    for sd in seeds:
        T.set_seed(sd)
        r = T._fit_torch(image_resnet34(int(y.max()) + 1), T.image_bank(pics[fit], "cpu"), y[fit],
                         T.image_bank(pics[val], "cpu"), y[val], None, epochs=epochs, batch_size=32, lr=1e-3,
                         weight_decay=0.05, patience=None, device="cpu", seed=sd, precision=prec,
                         train_input=tin, eval_input=ein, eval_batch=T.image_eval_batch(size), verbose=verbose,
                         desc=f"{prec.name} seed {sd}")
        accs.append(r["best_val_accuracy"])
        secs.append(r["seconds_per_epoch"])
    return accs, secs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes: < 3 min on 2 cores")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sections", default="1,2,3,4,5a,5b",
                    help="which blocks to run, comma-separated (default all): 1, 2, 3, 4, 5a, 5b")
    ap.add_argument("--kdef-full", default=None, metavar="ROOT",
                    help="section 4 on this KDEF-layout folder's HOG table (a full KDEF, or the synthetic "
                         "generator's 70 × 2 × 7 × 5 set) instead of the dev table replicated 7×")
    args = ap.parse_args(argv)
    q = args.quick
    chosen_sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    unknown = chosen_sections - {"1", "2", "3", "4", "5a", "5b"}
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from 1, 2, 3, 4, 5a, 5b")

    def want(section: str) -> bool:
        return section in chosen_sections

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    wall0 = time.perf_counter()
    fp32 = Precision("fp32", "cpu")
    print(f"torch {torch.__version__}, {args.threads} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_has_native_bf16()}, "
          f"{'quick' if q else 'full'} mode, load average {load()}")
    pics, H, yexp, subj, man, source = dev_tables()
    print(f"data: {source}; {time.perf_counter() - wall0:.0f} s to load")

    # 1. image step
    if want("1"):
        print("\n1. image ResNet-34 step (forward + backward + AdamW), ms per picture")
        for size, bs in ((48, 32), (224, 16)):
            x, y = torch.randn(bs, 3, size, size), torch.randint(0, 7, (bs,))
            chosen = choose_precision("cpu", "image", image_size=size)
            steps = 2 if (q or size == 224) else 4
            old = step_ms(image_resnet34(7), x, y, fp32, fused=False, steps=steps)
            new = step_ms(image_resnet34(7), x, y, chosen, fused=True, steps=steps)
            line = (f"   {size:3d} px, batch {bs}: old fp32 {old:.2f} ms, new {chosen.name}"
                    f"{' + channels_last' if chosen.channels_last else ''} + fused AdamW {new:.2f} ms → {old / new:.2f}×")
            if size == 224 and chosen.name == "fp32":
                bf = step_ms(image_resnet34(7), x, y, Precision("bf16", "cpu", True), fused=True, steps=steps)
                line += f" (bf16 + channels_last would be {bf:.2f} ms)"
            print(line + f"   [load {load()}]", flush=True)

    # 2. the study's epoch vs the bare step, 48 px
    if want("2"):
        n_fit, n_val, ep = (256, 64, 2) if q else (544, 136, 3)
        n_val = min(n_val, len(pics) - n_fit)  # the dev KDEF has 698 usable pictures
        idx = np.random.default_rng(0).permutation(len(pics))
        Xf, Xv = pics[idx[:n_fit]], pics[idx[n_fit:n_fit + n_val]]
        yf, yv = yexp[idx[:n_fit]], yexp[idx[n_fit:n_fit + n_val]]
        print(f"\n2. study epoch at 48 px, batch 32, {n_fit} fit / {n_val} validation pictures, {ep} epochs")
        torch.manual_seed(0)
        bare_old = step_ms(image_resnet34(7), torch.randn(32, 3, 48, 48), torch.randint(0, 7, (32,)), fp32, False,
                           3 if q else 6)
        bare_new = step_ms(image_resnet34(7), torch.randn(32, 3, 48, 48), torch.randint(0, 7, (32,)), fp32, True,
                           3 if q else 6)
        torch.manual_seed(0)
        h_old = old_fit_torch(image_resnet34(7), Xf, yf, Xv, yv, I.to_tensor, epochs=ep, batch_size=32, seed=0,
                              augment=old_augment_batch)
        torch.manual_seed(0)
        prec = choose_precision("cpu", "image", image_size=48)
        tin, ein = T.image_inputs(prec)
        r = T._fit_torch(image_resnet34(7), T.image_bank(Xf, "cpu"), yf, T.image_bank(Xv, "cpu"), yv, None,
                         epochs=ep, batch_size=32, lr=1e-3, weight_decay=0.05, patience=None, device="cpu", seed=0,
                         precision=prec, train_input=tin, eval_input=ein, eval_batch=T.image_eval_batch(48))
        for name, hist, bare in (("old loop", h_old, bare_old), ("new loop", r["history"], bare_new)):
            sec = np.mean([h["seconds"] for h in hist])
            data = np.mean([h["data_seconds"] for h in hist])
            val = np.mean([h["val_seconds"] for h in hist])
            per = 1e3 * sec / n_fit
            print(f"   {name}: {per:.2f} ms per picture-epoch = {per / bare:.2f}× its bare step ({bare:.2f} ms); "
                  f"one epoch {sec:.2f} s = data/augment {data:.2f} s + forward/backward/step {sec - data:.2f} s; "
                  f"validation {val:.2f} s ({1e3 * val / n_val:.2f} ms per picture)")
        old_per = 1e3 * np.mean([h["seconds"] for h in h_old]) / n_fit
        new_per = 1e3 * r["seconds_per_epoch"] / n_fit
        print(f"   old → new per picture-epoch: {old_per / new_per:.2f}×; overhead {new_per / bare_new:.2f}× the bare step "
              f"(target ≤ 1.3×)   [load {load()}]", flush=True)

    # 3. vector cell
    if want("3"):
        nv, epv = (512, 2) if q else (2048, 3)
        rng = np.random.default_rng(0)
        yv40 = rng.integers(0, 7, nv + 128)
        X40 = (rng.normal(size=(7, 40))[yv40] + rng.normal(size=(nv + 128, 40))).astype(np.float32)
        print(f"\n3. vector cell: 1-D ResNet-34 on a 40-d vector, batch 128, {nv} fit vectors, {epv} epochs")
        bare_v = step_ms(ResNet34Vector(40, 7), torch.randn(128, 40), torch.randint(0, 7, (128,)), fp32, True, 2)
        torch.manual_seed(0)
        hv = old_fit_torch(ResNet34Vector(40, 7), X40[:nv], yv40[:nv], X40[nv:], yv40[nv:], torch.from_numpy,
                           epochs=epv, batch_size=128, seed=0)
        torch.manual_seed(0)
        rv = T.train_vector_model(X40[:nv], yv40[:nv], X_val=X40[nv:], y_val=yv40[nv:], model="resnet34",
                                  epochs=epv, patience=None, batch_size=128, standardize=False)
        ov = 1e3 * np.mean([h["seconds"] for h in hv]) / nv
        nw = 1e3 * rv["seconds_per_epoch"] / nv
        print(f"   old {ov:.2f} ms per vector-epoch, new ({rv['precision']}) {nw:.2f} → {ov / nw:.2f}×; "
              f"bare step {bare_v:.2f} ms/vector (new = {nw / bare_v:.2f}× it)   [load {load()}]", flush=True)

    # 4. scikit-learn cell
    if want("4"):
        reps = 2 if q else 7
        if args.kdef_full:
            X, y, s, what = kdef_table(args.kdef_full)
        else:
            X, y, s = replicate(H, yexp, subj, reps)
            what = f"{reps}× the dev table, copies jittered"
        fit, val, test = person_split(s, 0)
        cap = 60 if q else 360
        print(f"\n4. scikit-learn cell: linsvm on HOG ({X.shape[1]} dims), 7 classes, {len(X)} rows "
              f"({what}; {len(fit)} fit / {len(val)} validation / {len(test)} test, split by person)")
        t0 = time.perf_counter()
        best, spent, tried = old_fit_sklearn("linsvm", X[fit], y[fit], X[val], y[val], cap_seconds=cap)
        done = len(tried) == len(OLD_C_GRID) and tried[-1][1] is not None
        print("   old grid: " + ", ".join(f"C={c:g} {a:.3f} ({t:.0f} s)" if a is not None else f"C={c:g} stopped after "
                                          f"{t:.0f} s" for c, a, t in tried)
              + ("" if done else f" — stopped by this benchmark's {cap} s cap, not finished"))
        t0 = time.perf_counter()
        rn = T.train_vector_model(X[fit], y[fit], X[test], y[test], X_val=X[val], y_val=y[val], model="linsvm")
        new_s = time.perf_counter() - t0
        print("   new grid: " + ", ".join(f"C={h['C']:g} {h['val_accuracy']:.3f} ({h['seconds']:.0f} s"
                                          f"{'' if h['converged'] else ', max_iter'})" for h in rn["history"])
              + f"; {rn['grid_stop']}")
        print(f"   old {'' if done else '≥ '}{spent:.0f} s (chose C={best[1]:g}, val {best[0]:.3f}) vs new {new_s:.0f} s "
              f"(chose C={rn['C']:g}, val {rn['best_val_accuracy']:.3f}) → {'' if done else '≥ '}{spent / new_s:.1f}×"
              f"   [load {load()}]", flush=True)

    # 5a. accuracy: stopped grid vs full grid on the dev table
    if want("5a"):
        n_rep = 2 if q else 5
        print(f"\n5. accuracy checks\n   a. scikit-learn, dev HOG table ({len(H)} rows), expression, {n_rep} person "
              f"splits: test accuracy old full grid vs new")
        for m in (("logreg", "linsvm") if q else ("logreg", "linsvm", "svm")):
            accs_old, accs_new, t_old, t_new = [], [], 0.0, 0.0
            for rep in range(n_rep):
                f_, v_, te = person_split(subj, rep)
                t0 = time.perf_counter()
                b, _, _ = old_fit_sklearn(m, H[f_], yexp[f_], H[v_], yexp[v_], seed=rep)
                t_old += time.perf_counter() - t0
                accs_old.append(float((b[2].predict(H[te]) == yexp[te]).mean()))
                t0 = time.perf_counter()
                rr = T.train_vector_model(H[f_], yexp[f_], H[te], yexp[te], X_val=H[v_], y_val=yexp[v_], model=m,
                                          seed=rep)
                t_new += time.perf_counter() - t0
                accs_new.append(rr["accuracy"])
            print(f"      {m}: old {np.mean(accs_old):.3f} ± {np.std(accs_old, ddof=1):.3f} ({t_old:.0f} s), new "
                  f"{np.mean(accs_new):.3f} ± {np.std(accs_new, ddof=1):.3f} ({t_new:.0f} s); difference "
                  f"{np.mean(accs_new) - np.mean(accs_old):+.3f}", flush=True)

    # 5b. fp32 vs bf16 at the size where the study picks bf16, image network, identity, same split
    if want("5b"):
        size = I_BF16_SIZE
        n_people, epi, seeds = (6, 2, (0, 1)) if q else (20, 10, (0, 1, 2))
        people = np.array(sorted(set(subj))[:n_people])
        keep = np.isin(subj, people)
        if man is not None:  # full profiles left out: 3 of KDEF's 5 angles keep the section within its time budget
            keep &= man["angle"].isin(ID_ANGLES).to_numpy()
        keep = np.flatnonzero(keep)
        yid = np.searchsorted(people, subj[keep])
        if man is not None:
            big = I.load_images(man["path"].astype(str).to_numpy()[keep].tolist(), size)
        else:
            big = np.random.default_rng(1).integers(0, 256, (len(keep), size, size, 3), dtype=np.uint8)
        f_, v_ = identity_split(yid, seed=0)
        chosen = choose_precision("cpu", "image", image_size=size)
        why = f"choose_precision's pick at {size} px: {chosen.reason}"
        if chosen.name == "fp32":  # a CPU without native bf16: compare the bf16 the study would not use, and say so
            chosen = choose_precision("cpu", "image", image_size=size, precision="bf16")
            why = f"forced: choose_precision keeps fp32 here ({why.split(': ', 1)[1]})"
        arms = (("fp32", choose_precision("cpu", "image", image_size=size, precision="fp32")),
                (f"{chosen.name}{' + channels_last' if chosen.channels_last else ''} ({why})", chosen))
        chance = np.bincount(yid[v_]).max() / len(v_)
        print(f"   b. image ResNet-34 at {size} px (CPU_BF16_MIN_IMAGE_SIZE), identity of {n_people} people, "
              f"{'angles ' + '/'.join(ID_ANGLES) + ', ' if man is not None else ''}whole frames, "
              f"{len(f_)} fit / {len(v_)} validation pictures (per person ~75/25, disjoint pictures, same people), "
              f"{epi} epochs, batch 32, no early stop, seeds {seeds} (a seed: same initial weights and batches in both "
              f"arms): best validation accuracy, chance {chance:.3f}")
        res = {}
        for label, pr in arms:
            res[pr.name] = accs, secs = precision_arm(big, yid, f_, v_, pr, size, epi, seeds)
            print(f"      {label}: {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f} (seeds: "
                  f"{', '.join(f'{a:.3f}' for a in accs)}), {np.mean(secs):.2f} s per epoch   [load {load()}]",
                  flush=True)
        (a32, s32), (a16, s16) = res["fp32"], res[chosen.name]
        sd = float(np.sqrt((np.var(a32, ddof=1) + np.var(a16, ddof=1)) / 2))
        diff = np.mean(a16) - np.mean(a32)
        print(f"      {chosen.name} − fp32: {diff:+.3f}; repeats' std (pooled over both) {sd:.3f} → "
              f"{'within' if abs(diff) <= sd else 'outside'} the std; epoch {np.mean(s32) / np.mean(s16):.2f}× faster"
              + (" (quick mode: a smoke test, too few epochs to learn)" if q else ""))
    print(f"\ntotal {time.perf_counter() - wall0:.0f} s, load average {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
