"""The app's entry point: `streamlit run app.py`. Declares the pages; each page is a thin script."""
import streamlit as st

st.set_page_config(page_title="selector - training data selection", page_icon=":material/filter_alt:", layout="wide")

PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon=":material/home:", url_path="home", default=True),
    st.Page("pages/1_Map.py", title="Map", icon=":material/scatter_plot:", url_path="map"),
    st.Page("pages/2_Scores.py", title="Scores", icon=":material/bar_chart:", url_path="scores"),
    st.Page("pages/3_Label_issues.py", title="Label issues", icon=":material/report:", url_path="label-issues"),
    st.Page("pages/4_Selection.py", title="Selection", icon=":material/tune:", url_path="selection"),
    st.Page("pages/5_Export.py", title="Export", icon=":material/download:", url_path="export"),
    st.Page("pages/6_Duplicates_and_outliers.py", title="Duplicates & outliers", icon=":material/content_copy:",
            url_path="duplicates-outliers"),
]
st.navigation(PAGES).run()
