"""Home: pick a data source and an encoder, run the pipeline with live progress, summarise the dataset."""
import os

import streamlit as st

from selector.encoders import ENCODERS, encoders_for
from selector.errors import InputError, OfflineError
from selector.noise import NOISE_MODES
from selector.pipeline import Config
from selector.project import MAPS
from selector.sources import SOURCES, TORCHVISION_SETS, source_noise
from selector.sources.torchvision_sets import SPLITS
from selector.ui import backend, state, widgets
from selector.ui.views import also_found, audit_description, audit_quality

CLIP = ENCODERS.get("open_clip").options
FORM_KEYS = ("source", "path", "root", "tv_name", "tv_split", "clip_model", "clip_pretrained", "clip_checkpoint",
             "noise_mode", "noise_rate", "noise_seed", "map", "seed", "k", "verify_content", *[f"encoder_{s}" for s in SOURCES.names()])
DEFAULTS = {"clip_model": CLIP["model"], "clip_pretrained": CLIP["pretrained"], "seed": Config.seed, "k": 0,
            "verify_content": Config.verify_content}


def default_noise(source: str) -> dict:
    """The demo plants noise by default so the first screen shows the audit finding it; others start clean
    (the rate is where the slider starts when the user turns noise on)."""
    return source_noise(source) or {"noise_mode": "none", "noise_rate": 0.2, "noise_seed": 0}


state.restore_form("home")
for key, value in {**DEFAULTS, **default_noise("demo")}.items():
    state.seed_widget(key, value)


def _source_changed():
    for key, value in default_noise(st.session_state["source"]).items():
        st.session_state[key] = value


st.title("Training data selection")
st.caption("Embed a labelled image dataset with CLIP or any image encoder, audit its labels, and keep the subset "
           "that trains best.")
banner = st.container()        # a run's progress and a failed run's cause: at the top, visible at any viewport

data_col, enc_col = st.columns(2)
with data_col:
    st.subheader("Data")
    source = st.selectbox("Data source", SOURCES.names(), format_func=SOURCES.label, key="source",
                          on_change=_source_changed)
    help_text = SOURCES.get(source).help
    path, root, upload, tv_name, tv_split = "", "", None, "fashion-mnist", "train"
    if source == "demo":
        st.caption(help_text + " Read from a local copy, Debian's dataset-fashion-mnist files, or downloaded "
                   "when online.")
        root = st.text_input("Fashion-MNIST folder (optional)", key="root",
                             help="A folder with the four idx files; leave empty to search the usual places.")
    elif source == "image-folder":
        path = st.text_input("Image folder", key="path", placeholder="/data/pets",
                             help=help_text)
    elif source == "manifest":
        path = st.text_input("Manifest path (.csv or .parquet)", key="path", placeholder="/data/labels.csv",
                             help=help_text)
        upload = st.file_uploader("...or upload a manifest", type=["csv", "parquet"], key="upload_manifest")
        root = st.text_input("Image root (for relative paths)", key="root")
    elif source == "torchvision":
        tv_name = st.selectbox("torchvision dataset", TORCHVISION_SETS.names(), format_func=TORCHVISION_SETS.label,
                               key="tv_name")
        tv_split = st.selectbox("Split", SPLITS, key="tv_split")
        root = st.text_input("Data folder (optional)", key="root")
    else:
        path = st.text_input("Embeddings file (.npz)", key="path", placeholder="/data/embedded.npz",
                             help=help_text)
        upload = st.file_uploader("...or upload an embeddings file", type=["npz"], key="upload_npz")

with enc_col:
    st.subheader("Encoder")
    encoder = st.selectbox("Encoder", encoders_for(source, tv_name), format_func=ENCODERS.label,
                           key=f"encoder_{source}")
    model, pretrained, checkpoint = CLIP["model"], CLIP["pretrained"], ""
    if encoder == "open_clip":
        model = st.text_input("open_clip model", key="clip_model")
        pretrained = st.text_input("Pretrained tag", key="clip_pretrained")
        checkpoint = st.text_input("Local checkpoint file (optional, replaces the tag)", key="clip_checkpoint")
    st.caption(ENCODERS.get(encoder).help)

    st.subheader("Noise injection")
    st.caption("Flip a share of a copy of the labels, re-run the audit and measure how many flips it finds.")
    noise_mode = st.selectbox("Noise mode", NOISE_MODES.names(), format_func=NOISE_MODES.label, key="noise_mode",
                              help=" ".join(f"{c.label}: {c.help}" for c in NOISE_MODES))
    noise_rate = st.slider("Noise rate", 0.01, 0.5, step=0.01, key="noise_rate", disabled=noise_mode == "none")
    noise_seed = st.number_input("Noise seed", min_value=0, step=1, key="noise_seed", disabled=noise_mode == "none")

with st.expander("Advanced settings"):
    map_kind = st.selectbox("Map", MAPS.names(), format_func=MAPS.label, key="map",
                            help=" ".join(f"{c.label}: {c.help}" for c in MAPS))
    seed = st.number_input("Seed", min_value=0, step=1, key="seed")
    k = st.number_input("Diversity neighbours K (0 = about 10% of the class size)", min_value=0, step=1,
                        key="k")
    verify_content = st.checkbox("Verify image contents", key="verify_content",
                                 help="Re-read every image file, not only its size and modification time, so a "
                                      "file replaced by another of the same size is embedded again.")
state.remember_form("home", FORM_KEYS)

# A fresh session on the built-in demo starts it at once, so the first screen shows the product at work.
autorun = (source == "demo" and state.current_run() is None and not st.session_state.get("demo_autorun_done")
           and os.environ.get("SELECTOR_AUTORUN", "1") != "0")
if st.button("Run", type="primary", key="run") or autorun:
    st.session_state["demo_autorun_done"] = True
    with banner, st.status("Running the pipeline...", expanded=True) as status:
        reporter = widgets.ProgressReporter(status)
        try:
            if upload is not None:
                path = backend.save_upload(upload.name, upload.getvalue())
            config = Config(k=int(k) or None, seed=int(seed), map=map_kind, noise_mode=noise_mode,
                            noise_rate=float(noise_rate) if noise_mode != "none" else 0.0, noise_seed=int(noise_seed),
                            verify_content=bool(verify_content))
            spec = backend.RunSpec(source=source, path=path.strip(), name=tv_name, split=tv_split,
                                   root=root.strip(), encoder=encoder, model=model.strip(),
                                   pretrained=pretrained.strip(), checkpoint=checkpoint.strip(), config=config)
            run = backend.run_pipeline(spec, progress=reporter)
        except (InputError, OfflineError) as exc:
            failure = str(exc)
            status.update(label="The run failed", state="error", expanded=False)
        else:
            failure = None
            reporter.finish(f"Done: {len(run.table):,} samples in {run.seconds:.1f} s")
            state.set_run(run)
    if failure:                  # the cause on top; no summary of an earlier run that would look current
        state.clear_run()
        banner.error(f"The run failed: {failure}")
        st.stop()

run = state.current_run()
if run is None:
    st.info("Choose a data source and an encoder, then press Run.")
    st.stop()

widgets.sidebar(run)
result, table = run.result, run.table
for warning in run.cache_warnings:
    st.warning(warning)
mask, selection_error = state.current_selection(run)

st.divider()
st.header("Dataset summary")
st.info(f"Scores produced by: **{result.encoder_name}**. Data: {result.dataset.name} "
        f"({run.spec.describe()}).")
flagged = int(table["flagged"].sum())
summary = result.class_summary
est_rate = float((summary["n"] * summary["estimated_noise_rate"]).sum() / max(summary["n"].sum(), 1))
cols = st.columns(5)
cols[0].metric("Samples", f"{len(table):,}")
cols[1].metric("Classes", len(result.class_names))
cols[2].metric("Flagged", f"{flagged:,}", help="suspected label errors, with reasons on the Label issues page")
cols[3].metric("Estimated noise rate", f"{est_rate:.1%}")
cols[4].metric("Selected now", f"{int(mask.sum()):,}", help="at the settings on the Selection page")
st.dataframe(summary, hide_index=True, key="class_summary",
             column_config={"estimated_noise_rate": st.column_config.ProgressColumn(
                 "estimated noise rate", format="percent", min_value=0.0, max_value=1.0)})
counts = result.manifest.get("counts", {})
if any(counts.get(k) for k in ("ood", "missing_class", "near_duplicates", "leaked_across_splits")):
    st.caption(also_found(counts))
if audit_description(result.manifest):
    st.caption(audit_description(result.manifest))
problems = list(result.dataset.problems) + [f"unreadable image skipped: {i}"
                                            for i in result.manifest.get("inputs", {}).get("skipped_unreadable", [])]
if problems:
    st.warning(f"{len(problems):,} problem(s) while loading: " + "; ".join(problems[:5])
               + (" ..." if len(problems) > 5 else ""))

quality = audit_quality(table, mask)
if quality is not None:
    st.subheader("Audit check against the injected noise")
    cfg = result.config
    st.caption(f"{quality['n_true']:,} labels were flipped on purpose ({cfg.noise_mode}, rate {cfg.noise_rate:.0%}, "
               f"seed {cfg.noise_seed}); the audit flagged {quality['n_flagged']:,} samples.")
    cols = st.columns(5)
    cols[0].metric("Precision", f"{quality['precision']:.3f}")
    cols[1].metric("Recall", f"{quality['recall']:.3f}")
    cols[2].metric("F1", f"{quality['f1']:.3f}",
                   help=f"Flagging the top samples by noise score at the best threshold would reach F1 "
                        f"{quality['best_f1']:.3f} with {quality['best_n_flagged']:,} flags: a gap means the "
                        "ranking is right and the flagged count is not.")
    cols[3].metric("AUROC", f"{quality['auroc']:.3f}")
    cols[4].metric("Injected flips in subset", f"{quality['injected_in_subset']:,}",
                   help=f"of {quality['n_true']:,} flips; subset of {quality['subset_size']:,} samples")
if selection_error:
    st.warning(f"Current selection settings cannot be met: {selection_error}")
timings = result.manifest.get("timings_s") or {}
if timings:
    st.caption("Run time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in timings.items()))
