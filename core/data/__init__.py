"""Data and images: decoding untrusted image files (images, archive), the one label convention (labels), the one
preprocessing function (preprocess), the dataset adapters every format goes through (datasets) and the named
distribution shifts (shifts). Nothing is imported here eagerly: import the module you need, e.g.
`from core.data.datasets import open_dataset`.
"""
