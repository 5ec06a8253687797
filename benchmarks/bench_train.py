"""Training cost, old path vs new path (issue 19): what the lean loop, the device's precision and the scikit-learn
grid changes buy, as ratios, plus the accuracy checks that they change nothing that matters.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--threads 2]

Prints, one block each:
1. image ResNet-34 step (forward + backward + AdamW) at 48 px (batch 32) and 224 px (batch 16): fp32 with the old
   optimizer vs the precision ``choose_precision`` picks for this CPU (fused AdamW, channels_last where chosen);
2. the study's cost per 48-px picture-epoch vs the bare network step (the overhead figure, target ≤ 1.3×), with the
   split of one epoch (data/augment, forward/backward/step, validation), old loop vs new;
3. one vector cell: 1-D ResNet-34 on a 40-d vector, batch 128, per epoch, old loop vs new;
4. one scikit-learn cell (linsvm on HOG, 7 expression classes) on a KDEF-shaped table: the old grid code (kept
   here, capped in time) vs ``train_vector_model``; ``--quick`` uses a 2× dev-sized table, the full mode ~4,900 rows;
5. accuracy: scikit-learn stopped grid vs the old full grid on the dev HOG table (test accuracy over repeats), and
   the validation accuracy of the image network in fp32 vs bf16 on the same split (repeats' std).

Data: the dev KDEF under ``FACELIB_KDEF`` (manifest read with ``facelib.data``) when set, else synthetic arrays of
the same shapes (said in the output). Timings on a shared machine are noisy; the load average is printed.
"""
from __future__ import annotations

import argparse
import copy
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
from facelib.classify.precision import Precision, choose_precision, cpu_has_native_bf16  # noqa: E402


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
    """The loop before issue 19 (numpy fancy-indexing + conversion per batch, default AdamW, deepcopy), timed the
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


def old_fit_sklearn(name, X_fit, y_fit, X_val, y_val, seed=0, cap_seconds=None):
    """The old grid: a whole pipeline per C, every C. Stops (and says so) once ``cap_seconds`` are spent."""
    best, spent, tried = None, 0.0, []
    for c in OLD_C_GRID:
        if cap_seconds is not None and spent > cap_seconds:
            break
        pipe = old_baseline(name, seed, c)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe.fit(X_fit, y_fit)
        spent += time.perf_counter() - t0
        acc = float((pipe.predict(X_val) == y_val).mean())
        tried.append((c, acc, time.perf_counter() - t0))
        if best is None or acc > best[0]:
            best = (acc, c, pipe)
    return best, spent, tried


# ------------------------------------------------------------------------------------------------------ data
def dev_tables(quick: bool):
    """(pictures uint8 (n, 48, 48, 3), HOG (n, 1764), expression codes, subjects, source)."""
    root = os.environ.get("FACELIB_KDEF")
    if root and Path(root).is_dir():
        from facelib.data.datasets import load_kdef

        man = load_kdef(root, progress=False)
        man = man[man["usable"]].reset_index(drop=True)
        H = I.picture_features(man, "hog")
        codes = {e: i for i, e in enumerate(sorted(set(man["expression"])))}
        y = man["expression"].map(codes).to_numpy()
        pics = I.load_images(man["path"].astype(str).tolist(), 48)
        return pics, H, y, man["subject"].to_numpy(), f"dev KDEF ({root}, {len(man)} pictures, whole frames)"
    rng = np.random.default_rng(0)
    n, subj = 700, np.repeat(np.arange(20), 35)
    y = np.tile(np.repeat(np.arange(7), 5), 20)
    centre = rng.normal(size=(7, 1764)).astype(np.float32)
    H = (0.4 * centre[y] + rng.normal(size=(n, 1764))).astype(np.float32)
    pics = rng.integers(0, 256, (n, 48, 48, 3), dtype=np.uint8)
    return pics, H, y, subj.astype(str), "synthetic arrays (no FACELIB_KDEF)"


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes: < 3 min on 2 cores")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    q = args.quick
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    wall0 = time.perf_counter()
    fp32 = Precision("fp32", "cpu")
    print(f"torch {torch.__version__}, {args.threads} threads, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_has_native_bf16()}, "
          f"{'quick' if q else 'full'} mode, load average {load()}")
    pics, H, yexp, subj, source = dev_tables(q)
    print(f"data: {source}; {time.perf_counter() - wall0:.0f} s to load")

    # 1. image step
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
    n_fit, n_val, ep = (256, 64, 2) if q else (640, 160, 3)
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
    reps = 2 if q else 7
    X, y, s = replicate(H, yexp, subj, reps)
    fit, val, test = person_split(s, 0)
    cap = 60 if q else 900
    print(f"\n4. scikit-learn cell: linsvm on HOG ({X.shape[1]} dims), 7 classes, {len(X)} rows "
          f"({reps}× the table, copies jittered; {len(fit)} fit / {len(val)} validation, split by person)")
    t0 = time.perf_counter()
    best, spent, tried = old_fit_sklearn("linsvm", X[fit], y[fit], X[val], y[val], cap_seconds=cap)
    done = len(tried) == len(OLD_C_GRID)
    print("   old grid: " + ", ".join(f"C={c:g} {a:.3f} ({t:.0f} s)" for c, a, t in tried)
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
    n_rep = 3 if q else 5
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

    # 5b. fp32 vs bf16, image network, same split
    size, nfit, nval, epi, seeds = (32, 192, 96, 3, (0, 1)) if q else (64, 480, 160, 8, (0, 1, 2))
    small = torch.nn.functional.interpolate(torch.from_numpy(pics).permute(0, 3, 1, 2).float(), size=(size, size),
                                            mode="area").round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    small = small.numpy()
    f_, v_, _ = person_split(subj, 0, (0.75, 0.25))
    f_, v_ = f_[:nfit], v_[:nval]
    print(f"   b. image ResNet-34 at {size} px, expression, {len(f_)} fit / {len(v_)} validation pictures (by "
          f"person), {epi} epochs, seeds {seeds}: best validation accuracy")
    for pname in ("fp32", "bf16"):
        pr = Precision(pname, "cpu", channels_last=False)
        tin, ein = T.image_inputs(pr)
        accs, secs = [], []
        for sd in seeds:
            T.set_seed(sd)
            rr = T._fit_torch(image_resnet34(7), T.image_bank(small[f_], "cpu"), yexp[f_],
                              T.image_bank(small[v_], "cpu"), yexp[v_], None, epochs=epi, batch_size=32, lr=1e-3,
                              weight_decay=0.05, patience=None, device="cpu", seed=sd, precision=pr,
                              train_input=tin, eval_input=ein)
            accs.append(rr["best_val_accuracy"])
            secs.append(rr["seconds_per_epoch"])
        print(f"      {pname}: {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f} ({np.mean(secs):.2f} s/epoch)",
              flush=True)
    print(f"      (chance {np.bincount(yexp[v_]).max() / len(v_):.3f}: at chance both runs say nothing — the quick "
          "mode's few epochs are a smoke test; the full mode trains longer)")
    print(f"\ntotal {time.perf_counter() - wall0:.0f} s, load average {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
