"""Selection: ratio, objective weights and filters; every move re-runs only the millisecond selection step
and shows what the subset keeps per class and how it compares with a random subset of the same size."""
import streamlit as st

from selector.ui import backend, state, widgets
from selector.ui.selection_view import (STRATEGIES, STRATEGY_LABELS, Settings, class_breakdown,
                                        corrected_codes)

run = state.require_run()
table = run.table
current = state.settings()
for key, value in {"sel_ratio": current.ratio, "sel_alignment": current.alignment, "sel_diversity": current.diversity,
                   "sel_cleanliness": current.cleanliness, "sel_exclude_flagged": current.exclude_flagged,
                   "sel_exclude_duplicates": current.exclude_duplicates,
                   "sel_class_balance": current.class_balance, "sel_strategy": current.strategy}.items():
    state.seed_widget(key, value)

st.title("Selection")
controls, weights = st.columns(2)
with controls:
    ratio = st.slider("Selection ratio", 0.01, 1.0, step=0.01, key="sel_ratio",
                      help="Share of the dataset to keep; the subset has exactly round(ratio x n) samples.")
    strategy = st.radio("Strategy", STRATEGIES, format_func=STRATEGY_LABELS.get, horizontal=True, key="sel_strategy",
                        help="top-k keeps the highest objective values (what the paper's optimiser converges to); "
                             "stratified spreads the budget over the objective's range within each class.")
    exclude = st.toggle("Exclude flagged samples", key="sel_exclude_flagged",
                        help="Drop suspected label errors and images that match no class before choosing.")
    dedupe = st.toggle("Exclude near-duplicates", key="sel_exclude_duplicates",
                       help="Drop the later copy of each near-duplicate pair before choosing.")
    balance = st.toggle("Class balance", key="sel_class_balance",
                        help="Give every class the same share of the budget instead of choosing globally.")
with weights:
    st.caption("Objective weights (each column is scaled to [0, 1]; higher is better)")
    w_align = st.slider("Alignment weight", 0.0, 2.0, step=0.05, key="sel_alignment",
                        help="How well the image matches its label's text (the paper's SAS).")
    w_div = st.slider("Diversity weight", 0.0, 2.0, step=0.05, key="sel_diversity",
                      help="How sparse the sample's neighbourhood in its class is (the paper's SDS).")
    w_clean = st.slider("Cleanliness weight", 0.0, 2.0, step=0.05, key="sel_cleanliness",
                        help="1 - noise score: how sure the audit is that the label is right.")
settings = Settings(ratio=float(ratio), alignment=float(w_align), diversity=float(w_div), cleanliness=float(w_clean),
                    exclude_flagged=bool(exclude), exclude_duplicates=bool(dedupe), class_balance=bool(balance), strategy=strategy)
state.set_settings(settings)
widgets.sidebar(run)

mask, error = state.current_selection(run)
if error:
    st.error(error)
    st.stop()

decisions = state.decisions(run)
truth = table["noise_injected"].to_numpy() if "noise_injected" in table else None
cols = st.columns(4)
cols[0].metric("Selected", f"{int(mask.sum()):,}", help=f"of {len(table):,} samples")
cols[1].metric("Flagged in subset", f"{int((table['flagged'].to_numpy() & mask).sum()):,}")
if truth is not None:
    cols[2].metric("Injected flips in subset", f"{int((truth & mask).sum()):,}", help=f"of {int(truth.sum()):,}")
cols[3].metric("Decisions applied", f"{len(decisions):,}")

st.subheader("Kept and dropped per class")
codes = run.result.dataset.labels
breakdown = class_breakdown(codes, mask, run.result.class_names,
                            codes_after=corrected_codes(codes, table, decisions, run.result.class_names))
chart_col, table_col = st.columns([1, 1])
chart_col.bar_chart(breakdown.set_index("class")[["kept", "dropped"]], stack=True, color=["#2b6cb0", "#b0b8c4"])
table_col.dataframe(breakdown, hide_index=True, key="sel_breakdown")

st.subheader("Compared with a random subset of the same size")
comparison = backend.compare_with_random(run, mask)
st.dataframe(comparison, hide_index=True, key="sel_comparison")
st.caption("Embedding coverage is measured on a fixed sample of 500 points in a 32-d PCA copy of the adapted "
           "embeddings; the random subset is seeded, so it only changes when the subset size does.")
