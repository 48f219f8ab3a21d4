"""Helpers shared by the dashboard's pages: the sidebar and cached accessors (common), rendering helpers
(views, forensics_views).

They live outside pages/ on purpose: Streamlit treats every .py file in pages/ as a page (its
automatic navigation on a fresh server lists them, and a URL such as /common would run them), and
these modules are not pages.
"""
