"""The audit dashboard for AI-generated-image detectors (Streamlit entrypoint).

    streamlit run dashboard.py

Starts on the shipped default model (weights/default.pt) and the embedded sample's test split
(data/sample/test) with no configuration. Pages live in pages/; the shared sidebar and helpers in pages_support/.

Navigation: .streamlit/config.toml sets client.showSidebarNavigation = false, so a fresh server's
first paint (Streamlit's automatic list of pages/, drawn before this script has run) shows no page
list at all; the menu is drawn here, from PAGES, with st.page_link (navigation_ui).
"""
import streamlit as st

from pages_support.common import navigation_ui, sidebar_ui

st.set_page_config(page_title="AI-image detector audit", page_icon=":material/search:", layout="wide")

PAGES = [
    st.Page("pages/1_predict.py", title="Predict", icon=":material/image_search:", default=True),
    st.Page("pages/2_confusion.py", title="Confusion matrix", icon=":material/grid_on:"),
    st.Page("pages/3_calibration.py", title="Calibration", icon=":material/straighten:"),
    st.Page("pages/4_misclassifications.py", title="Misclassifications", icon=":material/report:"),
    st.Page("pages/5_limitations.py", title="Limitations", icon=":material/warning:"),
    st.Page("pages/7_generalization.py", title="Generalization", icon=":material/hub:"),
    st.Page("pages/6_model_data.py", title="Model & data", icon=":material/description:"),
    st.Page("pages/8_forensics.py", title="Forensics", icon=":material/query_stats:"),
    st.Page("pages/9_compare.py", title="Compare models", icon=":material/compare_arrows:"),
    st.Page("pages/10_slices.py", title="Error slices", icon=":material/pie_chart:"),
    st.Page("pages/12_map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page("pages/13_data_issues.py", title="Data issues", icon=":material/rule:"),
    st.Page("pages/11_report.py", title="Audit report", icon=":material/download:"),
]

# Hidden: client.showSidebarNavigation = false hides any sidebar navigation; navigation_ui draws this one.
page = st.navigation(PAGES, position="hidden")
navigation_ui(PAGES)
sidebar_ui()
page.run()
