"""Selection: ratio, objective weights and filters; every move re-runs only the millisecond selection step
and shows what the subset keeps per class and how it compares with a random subset of the same size."""
import pandas as pd
import streamlit as st

from selector.optimize import OBJECTIVES, STRATEGIES
from selector.selection import CONFIDENT, relabelled, selection_warnings
from selector.ui import backend, state, widgets
from selector.ui.subsets import COVERAGE_POOL, PROBE_MAX_TRAIN
from selector.ui.views import BAR_CLASSES, class_breakdown, kept_share_histogram

run = state.require_run()
table = run.table
current = state.settings()
weights = current.weights_dict
seeds = {"sel_ratio": current.ratio, "sel_strategy": current.strategy, "sel_exclude_flagged": current.exclude_flagged,
         "sel_exclude_duplicates": current.exclude_duplicates, "sel_class_balance": current.class_balance,
         "sel_correct_flagged": current.correct_flagged,
         **{f"sel_{c.name}": weights.get(c.name, 0.0) for c in OBJECTIVES}}
for key, value in seeds.items():
    state.seed_widget(key, value)

st.title("Selection")
controls, weight_col = st.columns(2)
with controls:
    ratio = st.slider("Selection ratio", 0.01, 1.0, step=0.01, key="sel_ratio",
                      help="Share of the dataset to keep; the subset has exactly round(ratio x n) samples.")
    strategy = st.radio("Strategy", STRATEGIES.names(), format_func=STRATEGIES.label, horizontal=True,
                        key="sel_strategy", help=" ".join(f"{c.label}: {c.help}" for c in STRATEGIES))
    exclude = st.toggle("Exclude flagged samples", key="sel_exclude_flagged",
                        help="Drop suspected label errors and images that match no class before choosing.")
    dedupe = st.toggle("Exclude near-duplicates", key="sel_exclude_duplicates",
                       help="Drop the later copy of each near-duplicate pair before choosing.")
    balance = st.toggle("Class balance", key="sel_class_balance",
                        help="Give every class the same share of the budget instead of choosing globally.")
    correct = st.toggle("Correct confident label errors", key="sel_correct_flagged",
                        help=f"Keep flagged samples whose given label the audit is at least {CONFIDENT:.0%} sure is "
                             f"wrong, and whose suggestion it is at least {CONFIDENT:.0%} sure of, with the "
                             "suggested label (corrected_label in the export) instead of dropping them.")
with weight_col:
    st.caption("Objective weights (each column is scaled to [0, 1]; higher is better)")
    chosen_weights = {c.name: float(st.slider(f"{c.label} weight", 0.0, 2.0, step=0.05, key=f"sel_{c.name}",
                                              help=c.help)) for c in OBJECTIVES}
if sum(chosen_weights.values()) <= 0:
    st.error("All objective weights are 0: raise at least one above 0.")
    st.stop()
state.set_settings(current.replace(ratio=float(ratio), weights=chosen_weights, strategy=strategy,
                                   exclude_flagged=bool(exclude), exclude_duplicates=bool(dedupe),
                                   class_balance=bool(balance), correct_flagged=bool(correct)))
widgets.sidebar(run)

mask, error = state.current_selection(run)
if error:
    st.error(error)
    st.stop()

decisions = state.decisions(run)
chosen = state.selection(run)
codes_after = backend.label_codes(run, chosen)
moved = relabelled(table, chosen)
truth = table["noise_injected"].to_numpy() if "noise_injected" in table else None
cols = st.columns(5)
cols[0].metric("Selected", f"{int(mask.sum()):,}", help=f"of {len(table):,} samples")
cols[1].metric("Flagged in subset", f"{int((table['flagged'].to_numpy() & mask).sum()):,}")
if truth is not None:
    cols[2].metric("Injected flips in subset", f"{int((truth & mask).sum()):,}", help=f"of {int(truth.sum()):,}")
cols[3].metric("Decisions applied", f"{len(decisions):,}")
cols[4].metric("Corrected in subset", f"{int((moved & mask).sum()):,}",
               help="samples that carry the suggested label instead of the given one (accepted or corrected)")
for warning in selection_warnings(table, chosen, mask):
    st.warning(warning)

st.subheader("Kept and dropped per class")
codes = run.result.dataset.labels
breakdown = class_breakdown(codes, mask, run.result.class_names, codes_after=codes_after)
chart_col, table_col = st.columns([1, 1])
if len(breakdown) <= BAR_CLASSES:
    chart_col.bar_chart(breakdown.set_index("class")[["kept", "dropped"]], stack=True,
                        color=["#2b6cb0", "#b0b8c4"], sort=False)            # class order, as in the table beside it
else:
    chart_col.bar_chart(kept_share_histogram(breakdown), color="#2b6cb0", sort=False, x_label="share of the class kept",
                        y_label="classes")
    chart_col.caption(f"{len(breakdown):,} classes: each bar counts the classes that keep that share of their "
                      "samples. The table beside it lists every class; sort it by kept_pct to find the thinned ones.")
table_col.dataframe(breakdown, hide_index=True, key="sel_breakdown")

st.subheader("Compared with a random subset of the same size")
comparison = backend.compare_with_random(run, mask)
probe_rows, probe_seconds = backend.probe_comparison(run, chosen, mask)
comparison = pd.concat([comparison, pd.DataFrame(probe_rows, columns=comparison.columns).round(4)], ignore_index=True)
st.dataframe(comparison, hide_index=True, key="sel_comparison")
st.caption("Embedding coverage is measured on a fixed sample of 500 points in a 32-d PCA copy of the adapted "
           "embeddings" + (f" (among a fixed sample of {COVERAGE_POOL:,} rows)" if len(table) > COVERAGE_POOL else "")
           + "; the random subset is seeded, so it only changes when the subset size does. "
           "The linear probe (ridge least squares on a 64-d PCA copy) trains on each subset's rows outside a fixed "
           f"held-out set (at most {PROBE_MAX_TRAIN:,} of them, a seeded sample), with the subset's labels "
           "(corrected ones included), and is scored on the held-out rows "
           "against their given labels, so label noise among them lowers both columns alike; "
           f"computed in {probe_seconds * 1000:.0f} ms, once per selection.")
