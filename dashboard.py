"""The audit dashboard for AI-generated-image detectors (Streamlit entrypoint).

    streamlit run dashboard.py

Starts on the shipped default model (weights/default.pt) and the embedded sample's test split
(data/sample/test) with no configuration. Pages live in pages/; the shared sidebar in pages/_common.py.
"""
import streamlit as st

from pages._common import sidebar_ui

st.set_page_config(page_title="AI-image detector audit", page_icon=":material/search:", layout="wide")

PAGES = [
    st.Page("pages/1_predict.py", title="Predict", icon=":material/image_search:", default=True),
    st.Page("pages/2_confusion.py", title="Confusion matrix", icon=":material/grid_on:"),
    st.Page("pages/3_calibration.py", title="Calibration", icon=":material/straighten:"),
    st.Page("pages/4_misclassifications.py", title="Misclassifications", icon=":material/report:"),
    st.Page("pages/5_limitations.py", title="Limitations", icon=":material/warning:"),
    st.Page("pages/6_model_data.py", title="Model & data", icon=":material/description:"),
    st.Page("pages/8_forensics.py", title="Forensics", icon=":material/query_stats:"),
    st.Page("pages/9_compare.py", title="Compare models", icon=":material/compare_arrows:"),
    st.Page("pages/10_slices.py", title="Error slices", icon=":material/pie_chart:"),
    st.Page("pages/11_report.py", title="Audit report", icon=":material/download:"),
]

page = st.navigation(PAGES)
sidebar_ui()
page.run()
