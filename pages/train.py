"""Train: configure an MMAE, train it as a background job with live loss curves, load a checkpoint, and
see the model registry.

The job belongs to the process-wide ``JobManager`` and its state is in the store, so it keeps running
(and this page finds it again) across page switches, refreshes and other tabs. The live panel is a
fragment that reruns itself every second while a job is active, and reruns the whole page once when
a job ends so the sidebar and the registry show the new model.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from mmae_core.config import DEFAULT_PRESET, INPUT_NOISE_HELP, PRESETS, TrainConfig, preset, sized_epochs
from mmae_core.errors import ConfigError
from studio.jobs import JobView
from store.common import check_name
from studio.pipeline import LARGE_BATCH, LARGE_SAMPLES, LARGE_TRAIN, budgeted, register_checkpoint, sized_note
from ui import state
from ui.widgets import dataset_summary, download_button, fmt_seconds, need_dataset, run_action

POLL_S = 1.0
SEEN = "_train_active_jobs"
PRESET_HELP = {
    "denoising": "The default: the reliability preset whose encoders see their inputs with noise added (less on a view "
                 "of few features), so they learn what the modalities share rather than every feature's noise, and "
                 "can train long on a small dataset; see docs/results.md for how it compares with the paper's method "
                 "and the baselines.",
    "reliability": "Reconstruction with modality dropout and weight decay, fusing modalities by how much each is worth.",
    "paper": "The paper's setup: Adam, lr 1e-3, batch 128, 100 epochs, seed 42, latent 128.",
    "aligned": "Cross-modal training (modality dropout) plus latent alignment and weight decay: for cross-modal search and for data with missing modalities.",
}

st.title("Train")
store = state.current_store()
dataset = need_dataset(store)
manager = state.job_manager()


# -- configuration ---------------------------------------------------------------------------------
def config_form(dataset: str) -> tuple[TrainConfig | None, str | None]:
    """The widgets; returns the checked config and model name, or (None, None) after showing the problem."""
    names = list(PRESETS)
    name = st.selectbox("Preset", names, index=names.index(DEFAULT_PRESET), key="train_preset",
                        help=" ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))
    base = PRESETS[name]
    st.caption(PRESET_HELP.get(name, ""))
    k = f"train_{name}_"  # a preset's own defaults when the preset changes
    n_train = store.split_sizes(dataset).get("train", 0)
    large = n_train >= LARGE_TRAIN
    c = st.columns(4)
    if large:  # a budget in items drawn: the preset's epochs of a large archive would take hours
        samples = c[0].number_input("Budget (items drawn)", 1, 10**10, LARGE_SAMPLES, step=100_000, key=k + "samples",
                                    help=f"Rounded up to whole passes over the {n_train:,} train items.")
        epochs = budgeted(base, n_train, int(samples)).epochs
    else:
        note = sized_note(base, n_train)
        epochs = c[0].number_input("Epochs", 1, 10_000, help=note and note + ".",  # per dataset: another's size is not kept
                                   key=state.keep(k + "epochs", sized_epochs(base, n_train), dataset))
    batch = c[1].number_input("Batch size", 2, 65_536, max(base.batch_size, LARGE_BATCH) if large else base.batch_size,
                              key=k + "batch")
    lr = c[2].number_input("Learning rate", 1e-6, 1.0, base.lr, format="%.0e", step=1e-4, key=k + "lr")
    seed = c[3].number_input("Seed", 0, 2**31 - 1, base.seed, key=k + "seed")
    c = st.columns(4)
    latent = c[0].number_input("Latent size", 2, 4096, base.latent, key=k + "latent")
    device = c[1].selectbox("Device", ["auto", "cpu", "cuda", "mps"], key=k + "device",
                            help="auto: CUDA, then Apple MPS, then CPU.")
    model_name = c[2].text_input("Model name (optional)", key=k + "name",
                                 placeholder=f"{name}-e{int(epochs)}-s{int(seed)}")
    with st.expander("Advanced: modality dropout, alignment, weight decay, input noise, early stopping"):
        a = st.columns(5)
        dropout = a[0].number_input("Modality dropout", 0.0, 0.95, base.modality_dropout, step=0.05, key=k + "dropout",
                                    help="Probability that an item's encoders lose a random proper subset of its modalities.")
        align = a[1].number_input("Alignment weight λ", 0.0, 100.0, base.align_weight, step=0.1, key=k + "align")
        decay = a[2].number_input("Weight decay", 0.0, 9.99, base.weight_decay, step=0.05, key=k + "decay",
                                  help="AdamW's decoupled weight decay; 0 = the paper's plain Adam.")
        noise = a[3].number_input("Input noise σ", 0.0, 9.99, base.input_noise, step=0.1, key=k + "noise",
                                  help=INPUT_NOISE_HELP[0].upper() + INPUT_NOISE_HELP[1:] + ". 0 = off.")
        patience = a[4].number_input("Early stopping patience (0 = off)", 0, 1000, base.early_stopping, key=k + "patience")
    if large:
        st.caption(f"A large train split ({n_train:,} items): {int(epochs)} epoch{'s' if epochs > 1 else ''} "
                   f"({int(epochs) * n_train:,} items drawn) at batch {int(batch):,}, instead of the preset's "
                   f"{base.epochs} epochs at batch {base.batch_size}.")
    try:
        cfg = preset(name, epochs=int(epochs), batch_size=int(batch), lr=float(lr), seed=int(seed), latent=int(latent),
                     device=device, modality_dropout=float(dropout), align_weight=float(align),
                     weight_decay=float(decay), input_noise=float(noise), early_stopping=int(patience))
        chosen = check_name(model_name, "model name") if model_name.strip() else None
    except ConfigError as err:
        st.error(str(err))
        return None, None
    taken = list(store.list_models(dataset)["name"]) if len(store.list_models(dataset)) else []
    if chosen is not None and chosen in taken:
        st.error(f"A model named '{chosen}' already exists for {dataset}; choose another name or leave it empty.")
        return None, None
    return cfg, chosen


def start_job(manager, dataset: str, cfg: TrainConfig | None, model_name: str | None) -> None:
    """``on_click``: runs before the page, so the rerun that follows already draws the button disabled
    (a second click of a double click lands on a disabled button; the manager refuses a duplicate too)."""
    if cfg is None:
        return
    started = run_action(lambda: manager.start_training(dataset, cfg, model_name), where=_Flash())
    if started:
        running = [j for j in manager.active() if j.id != started.value]
        wait = " It waits for the running job to finish first." if running else ""
        state.flash(f"Training job {started.value} started; it keeps running if you switch pages or close the tab.{wait}")


class _Flash:
    """A ``run_action`` target that keeps its error for the next run (a callback cannot draw)."""

    @staticmethod
    def error(message: str) -> None:
        state.flash(message, "error")


with st.container(border=True):
    st.markdown(f"**New model on {dataset}**")
    cfg, model_name = config_form(dataset)
    missing_slot = st.container()  # filled last: the dataset summary may need a full read once per start
    busy = manager.active(dataset)
    if busy:
        st.caption(f"Training job {busy[0].id} on {dataset} is {busy[0].status}; Start is available again when it ends "
                   "(or cancel it below).")
    st.button("Start training", type="primary", disabled=cfg is None or bool(busy), icon=":material/play_arrow:",
              key="train_start", on_click=start_job, args=(manager, dataset, cfg, model_name))


# -- live progress ---------------------------------------------------------------------------------
def loss_chart(job: JobView) -> alt.Chart | None:
    rows = [
        {"epoch": h["epoch"], "loss": v, "curve": m}
        for h in job.history
        for m, v in h.get("losses", {}).items()
        if m != "total" and v is not None
    ]
    if not rows:
        return None
    df = pd.DataFrame(rows)
    return (
        alt.Chart(df, title="Reconstruction loss per modality (MSE, standardized units)")
        .mark_line(point=len(job.history) <= 30)
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
            color=alt.Color("curve:N", title="modality"),
            tooltip=["curve", "epoch", alt.Tooltip("loss:Q", format=".4f")],
        )
        .properties(height=280)
    )


def job_panel(job: JobView) -> None:
    p = job.progress or {}
    epoch, epochs = int(p.get("epoch") or 0), int(p.get("epochs") or job.config.get("train", {}).get("epochs") or 0)
    title = f"Job {job.id}: {job.kind} on {job.dataset}"
    if job.status == "running":
        phase = p.get("phase") or "training"
        st.markdown(f"**{title}** · running · {phase}")
        frac = min(1.0, epoch / epochs) if epochs else 0.0
        st.progress(frac, text=f"epoch {epoch} of {epochs} · elapsed {fmt_seconds(p.get('elapsed_s'))} · "
                                f"ETA {fmt_seconds(p.get('eta_s'))}")
        if st.button("Cancel this job", key=f"train_cancel_{job.id}", icon=":material/stop:"):
            if manager.cancel(job.id):
                st.info("Cancelling: the job stops at its next batch and keeps nothing.")
            else:
                st.warning("This job runs in another dashboard process; cancel it there.")
    elif job.status == "queued":
        st.markdown(f"**{title}** · queued behind the running job")
        if st.button("Cancel this job", key=f"train_cancel_{job.id}", icon=":material/stop:"):
            manager.cancel(job.id)
    elif job.status == "done":
        st.success(f"{title} finished in {fmt_seconds(p.get('elapsed_s'))}: {job.message}")
    elif job.status == "cancelled":
        st.info(f"{title} was cancelled: {job.message}")
    else:  # failed, interrupted
        st.error(f"{title} {job.status}: {job.message}")
    for note in p.get("notes", []):
        st.caption(f"Note: {note}")
    chart = loss_chart(job)
    if chart is not None:
        st.altair_chart(chart, width="stretch")


def live_jobs() -> None:
    jobs = manager.list(dataset, limit=10)
    if not jobs:
        st.caption("No training job for this dataset yet.")
        return
    active_now = {j.id for j in jobs if j.active}
    seen = st.session_state.get(SEEN, set())
    st.session_state[SEEN] = active_now
    if seen - active_now:  # a job this session watched has ended: refresh the whole page (sidebar, registry)
        st.rerun(scope="app")
    focus = [j for j in jobs if j.active] or jobs[:1]
    for job in focus:
        with st.container(border=True):
            job_panel(job)
    older = [j for j in jobs if j not in focus]
    if older:
        with st.expander(f"Earlier jobs ({len(older)})"):
            st.dataframe(
                pd.DataFrame([
                    {"job": j.id, "status": j.status, "model": j.model, "epochs done": (j.progress or {}).get("epoch"),
                     "started (UTC)": j.created_at, "finished (UTC)": j.finished_at, "message": j.message}
                    for j in older
                ]),
                hide_index=True,
            )


st.subheader("Training jobs")
if any(j.active for j in manager.list(dataset, limit=10)):
    st.fragment(run_every=POLL_S)(live_jobs)()
else:
    live_jobs()


# -- load a checkpoint -----------------------------------------------------------------------------
st.subheader("Load a checkpoint")
up = st.file_uploader("Checkpoint file (from this tool or `python -m mmae_core train --out`)", key="train_ckpt",
                      help="Loaded without running any code in it; refused if it does not fit this dataset.")
ck_name = st.text_input("Name for the loaded model", value=Path(up.name).stem if up is not None else "",
                        key=f"train_ckpt_name_{up.name if up is not None else ''}")
if st.button("Register the checkpoint", disabled=up is None, icon=":material/upload_file:"):
    with st.status("Loading the checkpoint and encoding every split…", expanded=True) as status:
        done = run_action(lambda: register_checkpoint(store, dataset, up.getvalue(), ck_name))
        status.update(label="Registered." if done else "Not registered.", state="complete" if done else "error")
    if done:
        state.choose_model(done.value)
        state.flash(f"Registered model '{done.value}' from the checkpoint. Next: compare it on the Compare page.")
        st.rerun()


# -- the registry ----------------------------------------------------------------------------------
st.subheader(f"Models of {dataset}")
models = store.list_models(dataset)
if not len(models):
    st.info("No model yet: start a training above (a few epochs are enough for a first look), or load a checkpoint.")
rows = []
cfg_fields = [f.name for f in fields(TrainConfig) if f.name != "hidden"]
for _, m in models.iterrows():
    info = store.model_info(dataset, m["name"])
    row = {"model": m["name"], "created (UTC)": m["created_at"], "source": info.get("source", "")}
    row.update({f: m.get(f) for f in cfg_fields if f in models.columns})
    row["train time"] = fmt_seconds(info.get("train_seconds"))
    row["train items"] = info.get("train_items")
    row["completion fitted on"] = info.get("completion_items")  # complete train items; partial items' fused latent
    row["step"] = info.get("plan")  # how training ran (train.TrainedModel.plan)
    for k, v in (info.get("final_losses") or {}).items():
        row[f"final loss {k}"] = v
    rows.append(row)
if rows:
    st.dataframe(pd.DataFrame(rows), hide_index=True)
current = state.current_model()
if len(models) and current in set(models["name"]):
    download_button(
        f"Download the checkpoint of {current}",
        lambda: store.model_checkpoint(dataset, current),
        file_name=f"{dataset}-{current}.pt".replace("/", "_"),
        mime="application/octet-stream",
        icon=":material/download:",
    )

with missing_slot:
    summary = run_action(lambda: dataset_summary(store, dataset))
    missing = {m: c for m, c in summary.value.missing.items() if c} if summary else {}
    if missing and cfg is not None and cfg.modality_dropout == 0:
        st.warning(
            "This dataset has items with missing modalities ("
            + ", ".join(f"{m}: {c:,}" for m, c in missing.items())
            + "); the 'aligned' preset is trained for that and is recommended."
        )
